/** Captions: `/api/captions`. Thin: parse, call the repository, shape. */
import { createCaption, deleteCaption, getCaption, listCaptions, updateCaption } from '../db/captions.js';
import { generateCaption } from '../jobs/one-off-caption.js';
import { workspaceRoots } from '../workspace/paths.js';
import { publicProcedure, router } from '../trpc.js';
import {
  caption,
  captionDeleted,
  captionIdParam,
  captionPage,
  createCaptionInput,
  generateCaptionInput,
  listCaptionsInput,
  toCaption,
  updateCaptionInput,
} from './captions.schemas.js';

const BASE = '/api/captions';
const tags = ['captions'];

const errors = {
  list: { 400: 'Invalid filter, sort or page', 500: 'Unexpected error' },
  one: { 400: 'Invalid caption id', 404: 'Caption not found', 500: 'Unexpected error' },
  write: { 400: 'Invalid input, or an unknown image or perspective', 404: 'Caption not found', 500: 'Unexpected error' },
};

export const captionsRouter = router({
  generate: publicProcedure
    .meta({
      openapi: {
        method: 'POST',
        path: `${BASE}/generate`,
        tags,
        summary: 'Make a caption now, through a stored provider',
        description:
          'One image and perspective, answered when the Inference Bridge has the caption (it may take minutes): stored ' +
          'like any caption (no job) and returned. The stored provider’s key is sent from here, so the caller never holds ' +
          'it. The provider must be enabled and list the model; its rate limit applies (429), and while it is failing ' +
          '(circuit breaker open) or without a bridge the answer is 503. The bridge refusing the call is a 502 with its reason.',
        errorResponses: {
          400: 'Invalid input, or an unknown image, perspective, provider or model',
          409: 'The provider refused its credentials earlier: change it first',
          429: 'The provider is at its rate limit',
          500: 'Unexpected error',
          502: 'The Inference Bridge or the provider refused the call',
          503: 'No bridge, the bridge is incompatible or down, or the provider is failing',
        },
      },
    })
    .input(generateCaptionInput)
    .output(caption)
    .mutation(async ({ ctx, input, signal }) =>
      toCaption(await generateCaption({ db: ctx.db, bridge: ctx.bridge, requestId: ctx.requestId, retryTimeouts: ctx.config.BRIDGE_RETRY_TIMEOUTS, workspaceRoots: workspaceRoots(ctx.config), signal }, input)),
    ),

  list: publicProcedure
    .meta({
      openapi: {
        method: 'GET',
        path: BASE,
        tags,
        summary: 'List captions',
        description:
          'Filtered by image, perspective (id or names), perspective revision, job, model, provider and creation time; ' +
          'sorted by createdAt (default), perspective, imagePath, model or provider.',
        errorResponses: errors.list,
      },
    })
    .input(listCaptionsInput)
    .output(captionPage)
    .query(async ({ ctx, input }) => {
      const { items, total } = await listCaptions(ctx.db, input);
      return { items: items.map(toCaption), total, page: input.page, limit: input.limit };
    }),

  get: publicProcedure
    .meta({ openapi: { method: 'GET', path: `${BASE}/{captionId}`, tags, summary: 'Get a caption', description: 'With its image path and perspective name.', errorResponses: errors.one } })
    .input(captionIdParam)
    .output(caption)
    .query(async ({ ctx, input }) => toCaption(await getCaption(ctx.db, input.captionId))),

  create: publicProcedure
    .meta({
      openapi: {
        method: 'POST',
        path: BASE,
        tags,
        summary: 'Store a caption made outside the queue',
        description: 'It gets the perspective’s current version and revision, and no job or item. Unknown images or perspectives are a 400.',
        errorResponses: { 400: 'Invalid input, or an unknown image or perspective', 500: 'Unexpected error' },
      },
    })
    .input(createCaptionInput)
    .output(caption)
    .mutation(async ({ ctx, input }) => toCaption(await createCaption(ctx.db, input))),

  update: publicProcedure
    .meta({
      openapi: {
        method: 'PATCH',
        path: `${BASE}/{captionId}`,
        tags,
        summary: 'Correct a caption',
        description: 'Its result, raw text, model or provider. The image, perspective, revision, job, item and time stay.',
        errorResponses: errors.write,
      },
    })
    .input(updateCaptionInput)
    .output(caption)
    .mutation(async ({ ctx, input }) => {
      const { captionId, ...changes } = input;
      return toCaption(await updateCaption(ctx.db, captionId, changes));
    }),

  delete: publicProcedure
    .meta({
      openapi: {
        method: 'DELETE',
        path: `${BASE}/{captionId}`,
        tags,
        summary: 'Delete a caption',
        description: 'A job item that made it shows no result afterwards; the item itself stays completed.',
        errorResponses: errors.one,
      },
    })
    .input(captionIdParam)
    .output(captionDeleted)
    .mutation(async ({ ctx, input }) => {
      await deleteCaption(ctx.db, input.captionId);
      return { deleted: true as const, captionId: input.captionId };
    }),
});
