/** AI providers: `/api/providers`. Thin: parse, seal the key, call the repository, shape. */
import type { z } from 'zod';
import { createProvider, deleteProvider, getProvider, listProviders, updateProvider, type ProviderFields } from '../db/providers.js';
import { sealInput } from '../secrets.js';
import { publicProcedure, router } from '../trpc.js';
import {
  createProviderInput,
  listProvidersInput,
  provider,
  providerDeleted,
  providerIdParam,
  providerPage,
  toProvider,
  updateProviderInput,
} from './providers.schemas.js';

const BASE = '/api/providers';
const tags = ['providers'];

const errors = {
  list: { 400: 'Invalid filter, sort or page', 500: 'Unexpected error' },
  one: { 400: 'Invalid provider id', 404: 'Provider not found', 500: 'Unexpected error' },
  change: {
    400: 'Invalid input',
    404: 'Provider not found',
    409: 'Name taken, used by unfinished jobs, or defined in the providers file',
    500: 'Unexpected error',
  },
};

type RateLimits = z.infer<typeof createProviderInput>['rateLimits'];

/** The repository's rate-limit fields from the API's `rateLimits` (only those given). */
function rateLimitFields(limits: RateLimits): Partial<ProviderFields> {
  if (!limits) return {};
  const fields: Partial<ProviderFields> = {};
  if (limits.requestsPerMinute !== undefined) fields.requestsPerMinute = limits.requestsPerMinute;
  if (limits.tokensPerMinute !== undefined) fields.tokensPerMinute = limits.tokensPerMinute;
  return fields;
}

export const providersRouter = router({
  list: publicProcedure
    .meta({
      openapi: {
        method: 'GET',
        path: BASE,
        tags,
        summary: 'List providers',
        description: 'Filtered by kind, enabled and part of the name; sorted by name (default), createdAt or updatedAt. API keys are never returned.',
        errorResponses: errors.list,
      },
    })
    .input(listProvidersInput)
    .output(providerPage)
    .query(async ({ ctx, input }) => {
      const { items, total } = await listProviders(ctx.db, input);
      return { items: items.map(toProvider), total, page: input.page, limit: input.limit };
    }),

  get: publicProcedure
    .meta({
      openapi: {
        method: 'GET',
        path: `${BASE}/{providerId}`,
        tags,
        summary: 'Get a provider',
        description: 'Its settings, whether it has an API key (never the key), and whether it is marked misconfigured.',
        errorResponses: errors.one,
      },
    })
    .input(providerIdParam)
    .output(provider)
    .query(async ({ ctx, input }) => toProvider(await getProvider(ctx.db, input.providerId))),

  create: publicProcedure
    .meta({
      openapi: {
        method: 'POST',
        path: BASE,
        tags,
        summary: 'Create a provider',
        description:
          'Its API key is stored encrypted with SECRETS_KEY and never returned (a 400 when the service has no key). ' +
          'Jobs name the provider in config.provider. 409 when the name is taken.',
        errorResponses: { 400: 'Invalid input', 409: 'Name taken', 500: 'Unexpected error' },
      },
    })
    .input(createProviderInput)
    .output(provider)
    .mutation(async ({ ctx, input }) => {
      const { apiKey, rateLimits, ...rest } = input;
      const row = await createProvider(ctx.db, {
        ...rest,
        apiKey: apiKey === undefined ? null : sealInput(apiKey, ctx.config.SECRETS_KEY, 'apiKey'),
        defaultModel: input.defaultModel ?? null,
        requestsPerMinute: rateLimits?.requestsPerMinute ?? null,
        tokensPerMinute: rateLimits?.tokensPerMinute ?? null,
      });
      return toProvider(row);
    }),

  update: publicProcedure
    .meta({
      openapi: {
        method: 'PATCH',
        path: `${BASE}/{providerId}`,
        tags,
        summary: 'Change a provider',
        description:
          'Only the fields given change. apiKey: a string replaces the key, null clears it. A change clears the ' +
          'misconfigured mark (paused jobs can then be resumed). Renaming a provider that unfinished jobs use, or ' +
          'changing one defined in the providers file, is a 409.',
        errorResponses: errors.change,
      },
    })
    .input(updateProviderInput)
    .output(provider)
    .mutation(async ({ ctx, input }) => {
      const { providerId, apiKey, rateLimits, ...rest } = input;
      const changes: Partial<ProviderFields> = { ...rest, ...rateLimitFields(rateLimits) };
      if (apiKey !== undefined) changes.apiKey = apiKey === null ? null : sealInput(apiKey, ctx.config.SECRETS_KEY, 'apiKey');
      return toProvider(await updateProvider(ctx.db, providerId, changes));
    }),

  delete: publicProcedure
    .meta({
      openapi: {
        method: 'DELETE',
        path: `${BASE}/{providerId}`,
        tags,
        summary: 'Delete a provider',
        description: '409 while unfinished jobs name it, or when the providers file defines it.',
        errorResponses: errors.change,
      },
    })
    .input(providerIdParam)
    .output(providerDeleted)
    .mutation(async ({ ctx, input }) => {
      await deleteProvider(ctx.db, input.providerId);
      return { deleted: true as const, providerId: input.providerId };
    }),
});
