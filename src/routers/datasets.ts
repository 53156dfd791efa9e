/** Datasets and their images: `/api/datasets`. Thin: parse, call the repository, shape. */
import {
  addImagesToDataset,
  createDataset,
  deleteDataset,
  getDataset,
  listDatasets,
  removeImageFromDataset,
  updateDataset,
} from '../db/datasets.js';
import { listImages } from '../db/images.js';
import { queueDatasetExport } from '../db/caption-exports.js';
import { ConflictError } from '../errors.js';
import { publicProcedure, router } from '../trpc.js';
import { datasetFolderExists } from '../workspace/layout.js';
import {
  addImagesInput,
  addImagesOutput,
  createDatasetInput,
  dataset,
  datasetDeleted,
  datasetIdParam,
  datasetImagesInput,
  datasetPage,
  deleteDatasetInput,
  exportCaptionsInput,
  exportCaptionsOutput,
  listDatasetsInput,
  removeImageInput,
  toDataset,
  updateDatasetInput,
} from './datasets.schemas.js';
import { imageListQuery } from './images.js';
import { imagePage, toImage } from './images.schemas.js';

const BASE = '/api/datasets';
const tags = ['datasets'];

const errors = {
  list: { 400: 'Invalid filter, sort or page', 500: 'Unexpected error' },
  one: { 400: 'Invalid dataset id', 404: 'Dataset not found', 500: 'Unexpected error' },
};

export const datasetsRouter = router({
  list: publicProcedure
    .meta({
      openapi: {
        method: 'GET',
        path: BASE,
        tags,
        summary: 'List datasets',
        description: 'Filtered by exact name or part of it; sorted by name (default), createdAt, updatedAt or imageCount.',
        errorResponses: errors.list,
      },
    })
    .input(listDatasetsInput)
    .output(datasetPage)
    .query(async ({ ctx, input }) => {
      const { items, total } = await listDatasets(ctx.db, input);
      return { items: items.map(toDataset), total, page: input.page, limit: input.limit };
    }),

  get: publicProcedure
    .meta({ openapi: { method: 'GET', path: `${BASE}/{datasetId}`, tags, summary: 'Get a dataset', description: 'With its image count.', errorResponses: errors.one } })
    .input(datasetIdParam)
    .output(dataset)
    .query(async ({ ctx, input }) => toDataset(await getDataset(ctx.db, input.datasetId))),

  images: publicProcedure
    .meta({
      openapi: {
        method: 'GET',
        path: `${BASE}/{datasetId}/images`,
        tags,
        summary: 'List a dataset’s images',
        description: 'The images list (same filters and sorts) of one dataset.',
        errorResponses: { ...errors.one, 400: 'Invalid dataset id, filter, sort or page' },
      },
    })
    .input(datasetImagesInput)
    .output(imagePage)
    .query(async ({ ctx, input }) => {
      await getDataset(ctx.db, input.datasetId);
      const { items, total } = await listImages(ctx.db, await imageListQuery(ctx.db, input));
      return { items: items.map(toImage), total, page: input.page, limit: input.limit };
    }),

  create: publicProcedure
    .meta({
      openapi: {
        method: 'POST',
        path: BASE,
        tags,
        summary: 'Create a dataset',
        description: 'Optionally with images already registered. 409 when the name is taken.',
        errorResponses: { 400: 'Invalid input or an unknown image', 409: 'Name taken', 500: 'Unexpected error' },
      },
    })
    .input(createDatasetInput)
    .output(dataset)
    .mutation(async ({ ctx, input }) => toDataset(await createDataset(ctx.db, input))),

  update: publicProcedure
    .meta({
      openapi: {
        method: 'PATCH',
        path: `${BASE}/{datasetId}`,
        tags,
        summary: 'Rename a dataset or change its description',
        description:
          'A dataset fed by a folder (datasets/<name>/ exists) cannot be renamed here (409): the import matches folders ' +
          'to datasets by name, so rename the folder and import again. 409 also when the name is taken.',
        errorResponses: { 400: 'Invalid input', 404: 'Dataset not found', 409: 'Name taken, or the dataset follows a folder', 500: 'Unexpected error' },
      },
    })
    .input(updateDatasetInput)
    .output(dataset)
    .mutation(async ({ ctx, input }) => {
      const { datasetId, ...changes } = input;
      if (changes.name !== undefined) {
        const current = await getDataset(ctx.db, datasetId);
        if (current.name !== changes.name && (await datasetFolderExists(ctx.config.WORKSPACE_PATH, current.name))) {
          throw new ConflictError(`dataset ${current.name} follows the folder datasets/${current.name}/: rename the folder and import the workspace`);
        }
      }
      return toDataset(await updateDataset(ctx.db, datasetId, changes));
    }),

  delete: publicProcedure
    .meta({
      openapi: {
        method: 'DELETE',
        path: `${BASE}/{datasetId}`,
        tags,
        summary: 'Delete a dataset',
        description:
          'Deletes the dataset and its memberships in one transaction; its images stay (with their captions and other ' +
          'datasets). With deleteImages=true, the images in no other dataset are deleted too, under the image rules: ' +
          '409, and nothing deleted, while pending or running job items use one. A folder that still exists brings the ' +
          'dataset back at the next workspace import.',
        errorResponses: { 400: 'Invalid input', 404: 'Dataset not found', 409: 'An image to delete is in use', 500: 'Unexpected error' },
      },
    })
    .input(deleteDatasetInput)
    .output(datasetDeleted)
    .mutation(async ({ ctx, input }) => {
      const result = await deleteDataset(ctx.db, input.datasetId, { deleteImages: input.deleteImages });
      return { deleted: true as const, datasetId: input.datasetId, ...result };
    }),

  addImages: publicProcedure
    .meta({
      openapi: {
        method: 'POST',
        path: `${BASE}/{datasetId}/images`,
        tags,
        summary: 'Add images to a dataset',
        description: 'Images already members are left as they are. Unknown images are a 400 and nothing is added.',
        errorResponses: { 400: 'Invalid input or an unknown image', 404: 'Dataset not found', 500: 'Unexpected error' },
      },
    })
    .input(addImagesInput)
    .output(addImagesOutput)
    .mutation(async ({ ctx, input }) => {
      const added = await addImagesToDataset(ctx.db, input.datasetId, input.imageIds);
      return { added, dataset: toDataset(await getDataset(ctx.db, input.datasetId)) };
    }),

  removeImage: publicProcedure
    .meta({
      openapi: {
        method: 'DELETE',
        path: `${BASE}/{datasetId}/images/{imageId}`,
        tags,
        summary: 'Take an image out of a dataset',
        description: 'The image itself stays. 404 when it is not a member.',
        errorResponses: { 400: 'Invalid id', 404: 'Dataset not found, or the image is not in it', 500: 'Unexpected error' },
      },
    })
    .input(removeImageInput)
    .output(dataset)
    .mutation(async ({ ctx, input }) => {
      await removeImageFromDataset(ctx.db, input.datasetId, input.imageId);
      return toDataset(await getDataset(ctx.db, input.datasetId));
    }),

  exportCaptions: publicProcedure
    .meta({
      openapi: {
        method: 'POST',
        path: `${BASE}/{datasetId}/export-captions`,
        tags,
        summary: "Write a dataset's captions to graphcap's captions.jsonl files",
        description:
          'Queues the newest caption of each (image, perspective) of the dataset, for the perspectives given, to be ' +
          'written beside its image in graphcap’s layout (analysis/batch_<perspective>/captions.jsonl); an image’s line ' +
          'is replaced, a line already there is not written twice. Written in the background, as the captions jobs ' +
          'make are; 409 when this service does not write to the workspace (WORKSPACE_WRITE_CAPTIONS, or read-only).',
        errorResponses: { ...errors.one, 409: 'Captions are not written back here' },
      },
    })
    .input(exportCaptionsInput)
    .output(exportCaptionsOutput)
    .mutation(async ({ ctx, input }) => {
      if (!ctx.captionExporter.writing) {
        throw new ConflictError(
          "captions are not written back to this workspace (WORKSPACE_WRITE_CAPTIONS=false, it is read-only, or it is the repository's example workspace)",
        );
      }
      await getDataset(ctx.db, input.datasetId);
      const queued = await queueDatasetExport(ctx.db, input.datasetId, input.perspectives);
      return { queued };
    }),
});
