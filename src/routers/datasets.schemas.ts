/** Input and output schemas of the datasets API (`/api/datasets`). */
import { z } from 'zod';
import { DATASET_SORT_KEYS, type DatasetRow } from '../db/datasets.js';
import { iso, limit, order, page, paginated, queryBoolean, timestamp, uuid } from './common.js';
import { imageListFields } from './images.schemas.js';

/** The names dataset folders may have, so any dataset could also be a folder. */
export const datasetName = z
  .string()
  .regex(/^[\w][\w .@+-]{0,127}$/, 'must be 1-128 characters: letters, digits, _ . @ + - and spaces, not starting with one of . @ + - or a space')
  .refine((n) => n !== '.' && n !== '..', 'must not be . or ..');

export const dataset = z
  .object({
    datasetId: z.uuid(),
    name: z.string(),
    description: z.string().nullable(),
    imageCount: z.int().min(0),
    createdAt: timestamp,
    updatedAt: timestamp.describe('Last change of the dataset or its membership.'),
  })
  .meta({ id: 'Dataset', description: 'A named set of images (a folder under datasets/, or made through the API).' });

export function toDataset(row: DatasetRow): z.infer<typeof dataset> {
  const { id, ...rest } = row;
  return { datasetId: id, ...rest, createdAt: iso(row.createdAt), updatedAt: iso(row.updatedAt) };
}

export const datasetPage = paginated(dataset).meta({ id: 'DatasetPage', description: 'A page of datasets.' });

export const listDatasetsInput = z
  .object({
    name: z.string().min(1).max(128).describe('Only the dataset of this exact name.').optional(),
    nameContains: z.string().min(1).max(128).describe('Only datasets whose name contains this (any case).').optional(),
    sort: z.enum(DATASET_SORT_KEYS).default('name').describe('Ties are broken by name.'),
    order,
    page,
    limit,
  })
  .prefault({});

export const datasetIdParam = z.object({ datasetId: uuid('dataset').describe('The dataset id.') });

export const datasetImagesInput = datasetIdParam.extend(imageListFields);

export const createDatasetInput = z
  .strictObject({
    name: datasetName,
    description: z.string().max(10_000).nullish(),
    imageIds: z.array(uuid('image')).max(100_000).describe('Images to put in it.').optional(),
  })
  .meta({ examples: [{ name: 'favourites', description: 'Images for the next review' }] });

export const updateDatasetInput = z
  .strictObject({
    datasetId: uuid('dataset').describe('The dataset id.'),
    name: datasetName.optional(),
    description: z.string().max(10_000).nullable().optional(),
  })
  .refine((i) => i.name !== undefined || i.description !== undefined, { message: 'give name or description', path: ['name'] });

export const deleteDatasetInput = datasetIdParam.extend({
  deleteImages: queryBoolean
    .default(false)
    .describe('Also delete the images that belong to no other dataset (with their captions); by default every image stays.'),
});

export const datasetDeleted = z.object({
  deleted: z.literal(true),
  datasetId: z.uuid(),
  deletedImages: z.int().describe('Images deleted with it (deleteImages=true only).'),
  keptImages: z.int().describe('Its images that stay (in other datasets, or all of them by default).'),
});

export const addImagesInput = z.strictObject({
  datasetId: uuid('dataset').describe('The dataset id.'),
  imageIds: z.array(uuid('image')).min(1).max(100_000),
});

export const addImagesOutput = z.object({ added: z.int().describe('Images that were not members yet.'), dataset });

export const removeImageInput = datasetIdParam.extend({ imageId: uuid('image').describe('The image id.') });


export const exportCaptionsInput = z.strictObject({
  datasetId: uuid('dataset').describe('The dataset id.'),
  perspectives: z
    .array(z.string().regex(/^[\w.-]{1,128}$/, 'must be a perspective name'))
    .min(1)
    .max(100)
    .describe('Only these perspectives (default: every perspective with a caption).')
    .optional(),
});

export const exportCaptionsOutput = z.object({
  queued: z.int().min(0).describe('Captions queued for writing: the newest of each (image, perspective).'),
});
