/** Captions: `/api/captions`. Thin: parse, call the repository, shape. */
import { createCaption, deleteCaption, getCaption, listCaptions, updateCaption } from '../db/captions.js';
import { publicProcedure, router } from '../trpc.js';
import {
  caption,
  captionDeleted,
  captionIdParam,
  captionPage,
  createCaptionInput,
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
