/** Input and output schemas of the providers API (`/api/providers`). */
import { z } from 'zod';
import { PROVIDER_SORT_KEYS, type ProviderRow } from '../db/providers.js';
import { PROVIDER_ENVIRONMENTS, PROVIDER_SOURCES } from '../db/schema.js';
import { bodyBoolean, bodyNumber, iso, limit, order, page, paginated, queryBoolean, timestamp, uuid } from './common.js';

/** Names jobs use in `config.provider`: plain, so they read the same in URLs, logs and TOML. */
export const providerName = z.string().regex(/^[\w][\w.@+-]{0,127}$/, 'must be 1-128 letters, digits, _ . @ + -, not starting with . @ + -');
const kind = z
  .string()
  .regex(/^[\w.-]{1,64}$/, 'must be 1-64 letters, digits, _ . -')
  .describe('The client the Inference Bridge uses: openai, gemini, ollama, vllm ...');
const baseUrl = z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).max(2048);
const apiKey = z.string().min(1).max(8192);
const modelName = z.string().min(1).max(256);
const model = z.strictObject({ name: modelName, isEnabled: bodyBoolean.default(true) });
const rateLimit = (what: string) =>
  bodyNumber(z.int().min(1).max(100_000_000)).nullable().optional().describe(`${what} per minute, across replicas; null = no limit.`);
const rateLimitsInput = z.strictObject({
  requestsPerMinute: rateLimit('Calls'),
  tokensPerMinute: rateLimit('Tokens (stored and shown; the bridge reports no token counts, so it is not enforced)'),
});

const models = z
  .array(model)
  .max(500)
  .refine((list) => new Set(list.map((m) => m.name)).size === list.length, 'model names must be unique')
  .describe('Models jobs may name; empty: any model (a local server whose models are not listed).');

function defaultModelListed(input: { models?: { name: string }[]; defaultModel?: string | null }, ctx: z.RefinementCtx) {
  if (input.defaultModel && input.models && input.models.length > 0 && !input.models.some((m) => m.name === input.defaultModel)) {
    ctx.addIssue({ code: 'custom', path: ['defaultModel'], message: `must be one of the models (${input.models.map((m) => m.name).join(', ')})` });
  }
}

export const createProviderInput = z
  .strictObject({
    name: providerName,
    kind,
    environment: z.enum(PROVIDER_ENVIRONMENTS),
    baseUrl,
    apiKey: apiKey.optional().describe('Stored encrypted, never returned (hasApiKey says whether there is one).'),
    isEnabled: bodyBoolean.default(true),
    models: models.default([]),
    defaultModel: modelName.nullable().optional(),
    rateLimits: rateLimitsInput.optional(),
  })
  .superRefine(defaultModelListed)
  .meta({
    examples: [
      {
        name: 'openai',
        kind: 'openai',
        environment: 'cloud',
        baseUrl: 'https://api.openai.com/v1',
        apiKey: 'sk-...',
        models: [{ name: 'gpt-4o-mini', isEnabled: true }],
        defaultModel: 'gpt-4o-mini',
        rateLimits: { requestsPerMinute: 60 },
      },
    ],
  });

export const updateProviderInput = z
  .strictObject({
    providerId: uuid('provider').describe('The provider id.'),
    name: providerName.optional(),
    kind: kind.optional(),
    environment: z.enum(PROVIDER_ENVIRONMENTS).optional(),
    baseUrl: baseUrl.optional(),
    apiKey: apiKey.nullable().optional().describe('A new key replaces the stored one; null clears it; absent keeps it.'),
    isEnabled: bodyBoolean.optional(),
    models: models.optional(),
    defaultModel: modelName.nullable().optional(),
    rateLimits: rateLimitsInput.optional(),
  })
  .superRefine(defaultModelListed)
  .refine((i) => Object.keys(i).length > 1, { message: 'give at least one field to change', path: ['name'] });

export const providerIdParam = z.object({ providerId: uuid('provider').describe('The provider id.') });

export const listProvidersInput = z
  .object({
    kind: z.string().min(1).max(64).describe('Only providers of this kind.').optional(),
    isEnabled: queryBoolean.describe('Only enabled (true) or disabled (false) providers.').optional(),
    nameContains: z.string().min(1).max(128).describe('Only providers whose name contains this (any case).').optional(),
    sort: z.enum(PROVIDER_SORT_KEYS).default('name').describe('Ties are broken by name.'),
    order,
    page,
    limit,
  })
  .prefault({});

export const provider = z
  .object({
    providerId: z.uuid(),
    name: z.string(),
    kind: z.string(),
    environment: z.enum(PROVIDER_ENVIRONMENTS),
    baseUrl: z.string(),
    hasApiKey: z.boolean().describe('Whether an API key is stored (the key itself is never returned).'),
    isEnabled: z.boolean(),
    models: z.array(z.object({ name: z.string(), isEnabled: z.boolean() })),
    defaultModel: z.string().nullable(),
    rateLimits: z.object({ requestsPerMinute: z.int().nullable(), tokensPerMinute: z.int().nullable() }),
    source: z.enum(PROVIDER_SOURCES).describe('api: made through the API; config: defined in the providers file (read-only here).'),
    misconfigured: z
      .object({ since: timestamp, reason: z.string() })
      .nullable()
      .describe('Set when the provider refused its credentials: its jobs are paused until the provider is changed.'),
    createdAt: timestamp,
    updatedAt: timestamp,
  })
  .meta({ id: 'Provider', description: 'An AI provider the Inference Bridge calls for jobs that name it.' });

export function toProvider(row: ProviderRow): z.infer<typeof provider> {
  return {
    providerId: row.id,
    name: row.name,
    kind: row.kind,
    environment: row.environment,
    baseUrl: row.baseUrl,
    hasApiKey: row.apiKey !== null,
    isEnabled: row.isEnabled,
    models: row.models.map((m) => ({ name: m.name, isEnabled: m.isEnabled })),
    defaultModel: row.defaultModel,
    rateLimits: { requestsPerMinute: row.requestsPerMinute, tokensPerMinute: row.tokensPerMinute },
    source: row.source,
    misconfigured: row.misconfiguredAt ? { since: iso(row.misconfiguredAt), reason: row.misconfiguredReason ?? '' } : null,
    createdAt: iso(row.createdAt),
    updatedAt: iso(row.updatedAt),
  };
}

export const providerPage = paginated(provider).meta({ id: 'ProviderPage', description: 'A page of providers.' });

export const providerDeleted = z.object({ deleted: z.literal(true), providerId: z.uuid() });
