/** Images: `/api/images`. Thin: parse, call the repository, shape. */
import type { z } from 'zod';
import { latestCaptionsOfImage } from '../db/captions.js';
import type { Db } from '../db/client.js';
import { createImage, deleteImage, getImage, listImages, updateImageFile, type ListImagesInput } from '../db/images.js';
import { findPerspectivesByName } from '../db/perspectives.js';
import { InvalidInputError, type FieldError } from '../errors.js';
import { publicProcedure, router } from '../trpc.js';
import { readWorkspaceImage } from '../workspace/files.js';
import { fromClientPath, workspaceRoots } from '../workspace/paths.js';
import { toCaption } from './captions.schemas.js';
import {
  createImageInput,
  image,
  imageDeleted,
  imageIdParam,
  imageListFields,
  imagePage,
  imageWithCaptions,
  latestCaptionsInput,
  listImagesInput,
  toImage,
  updateImageInput,
} from './images.schemas.js';

const BASE = '/api/images';
const tags = ['images'];

const errors = {
  list: { 400: 'Invalid filter, sort or page, or an unknown perspective in withCaption / withoutCaption', 500: 'Unexpected error' },
  one: { 400: 'Invalid image id', 404: 'Image not found', 500: 'Unexpected error' },
};

type ImageListQuery = z.infer<z.ZodObject<typeof imageListFields>> & { datasetId?: string };

/**
 * The list input for the repository: the caption filters name perspectives, which must exist (an
 * unknown one is a 400: "without a caption of a typo" would otherwise list every image).
 */
export async function imageListQuery(db: Db, input: ImageListQuery): Promise<ListImagesInput> {
  const names = [input.withCaption, input.withoutCaption].filter((n): n is string => n !== undefined);
  const found = new Map((await findPerspectivesByName(db, names)).map((p) => [p.name, p.id]));
  const fieldErrors: FieldError[] = [];
  for (const field of ['withCaption', 'withoutCaption'] as const) {
    const name = input[field];
    if (name !== undefined && !found.has(name)) fieldErrors.push({ path: field, message: `unknown perspective ${JSON.stringify(name)}` });
  }
  if (fieldErrors.length > 0) throw new InvalidInputError(fieldErrors.map((e) => `${e.path}: ${e.message}`).join('; '), fieldErrors);
  return {
    ...input,
    withCaption: input.withCaption && found.get(input.withCaption),
    withoutCaption: input.withoutCaption && found.get(input.withoutCaption),
  };
}

export const imagesRouter = router({
  list: publicProcedure
    .meta({
      openapi: {
        method: 'GET',
        path: BASE,
        tags,
        summary: 'List images',
        description:
          'Filtered by dataset, format, path, and with or without a caption of a perspective; sorted by path (default), ' +
          'createdAt, updatedAt, sizeBytes, width, height or format.',
        errorResponses: errors.list,
      },
    })
    .input(listImagesInput)
    .output(imagePage)
    .query(async ({ ctx, input }) => {
      const { items, total } = await listImages(ctx.db, await imageListQuery(ctx.db, input));
      return { items: items.map(toImage), total, page: input.page, limit: input.limit };
    }),

  get: publicProcedure
    .meta({ openapi: { method: 'GET', path: `${BASE}/{imageId}`, tags, summary: 'Get an image', description: 'Its metadata and the datasets it belongs to.', errorResponses: errors.one } })
    .input(imageIdParam)
    .output(image)
    .query(async ({ ctx, input }) => toImage(await getImage(ctx.db, input.imageId))),

  latestCaptions: publicProcedure
    .meta({
      openapi: {
        method: 'GET',
        path: `${BASE}/{imageId}/latest-captions`,
        tags,
        summary: 'An image with its latest caption per perspective',
        description: 'The newest caption of each perspective (or of the perspectives named) that has one. Every caption: GET /api/captions?imageId=…',
        errorResponses: errors.one,
      },
    })
    .input(latestCaptionsInput)
    .output(imageWithCaptions)
    .query(async ({ ctx, input }) => {
      const row = await getImage(ctx.db, input.imageId);
      const captions = await latestCaptionsOfImage(ctx.db, input.imageId, input.perspective);
      return { image: toImage(row), captions: captions.map(toCaption) };
    }),

  create: publicProcedure
    .meta({
      openapi: {
        method: 'POST',
        path: BASE,
        tags,
        summary: 'Register a workspace file as an image',
        description:
          'The file must exist inside the workspace and have an image extension; format, size, dimensions and sha256 are ' +
          'read from it. 409 when the path is registered already. Dataset folders are registered by the workspace import.',
        errorResponses: { 400: 'Invalid input, no such file, or an unknown dataset', 409: 'Path registered already', 500: 'Unexpected error' },
      },
    })
    .input(createImageInput)
    .output(image)
    .mutation(async ({ ctx, input }) => {
      const file = await readWorkspaceImage(ctx.config.WORKSPACE_PATH, fromClientPath(input.path, workspaceRoots(ctx.config)), 'path', ctx.config.WORKSPACE_IMAGE_MAX_BYTES);
      return toImage(await createImage(ctx.db, { ...file, fileMtime: file.mtime }, input.datasetIds));
    }),

  update: publicProcedure
    .meta({
      openapi: {
        method: 'PATCH',
        path: `${BASE}/{imageId}`,
        tags,
        summary: 'Move an image to another file, or re-read its file',
        description:
          'With `path`, the record (and its captions) follows a renamed file; 409 when the path is taken or pending or ' +
          'running job items use the image. Without it, the current file’s metadata is read again.',
        errorResponses: { 400: 'Invalid input or no such file', 404: 'Image not found', 409: 'Path taken, or the image is in use', 500: 'Unexpected error' },
      },
    })
    .input(updateImageInput)
    .output(image)
    .mutation(async ({ ctx, input }) => {
      const target = input.path ?? (await getImage(ctx.db, input.imageId)).path;
      const file = await readWorkspaceImage(ctx.config.WORKSPACE_PATH, fromClientPath(target, workspaceRoots(ctx.config)), 'path', ctx.config.WORKSPACE_IMAGE_MAX_BYTES);
      return toImage(await updateImageFile(ctx.db, input.imageId, { ...file, fileMtime: file.mtime }));
    }),

  delete: publicProcedure
    .meta({
      openapi: {
        method: 'DELETE',
        path: `${BASE}/{imageId}`,
        tags,
        summary: 'Delete an image',
        description:
          'Deletes the record with its captions and dataset memberships, in one transaction (the file stays on disk; a ' +
          'dataset scan that still finds it registers it again). 409, and nothing deleted, while pending or running ' +
          'job items use it. Finished job items (live or archived) keep their imagePath; their imageId becomes null.',
        errorResponses: { 400: 'Invalid image id', 404: 'Image not found', 409: 'Used by pending or running job items', 500: 'Unexpected error' },
      },
    })
    .input(imageIdParam)
    .output(imageDeleted)
    .mutation(async ({ ctx, input }) => {
      await deleteImage(ctx.db, input.imageId);
      return { deleted: true as const, imageId: input.imageId };
    }),
});
