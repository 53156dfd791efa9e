/** Input and output schemas of the images API (`/api/images`). */
import { z } from 'zod';
import { IMAGE_SORT_KEYS, type ImageRow } from '../db/images.js';
import { caption, perspectiveName } from './captions.schemas.js';
import { iso, isoOrNull, limit, order, page, paginated, queryList, timestamp, uuid } from './common.js';

export const imagePath = z
  .string()
  .min(1)
  .max(1024)
  .describe('Path relative to the workspace, e.g. datasets/os_img/highland-cow-8972000_640.jpg');

export const image = z
  .object({
    imageId: z.uuid(),
    path: imagePath,
    format: z.string().nullable().describe('File format from its header (jpg, png, webp ...); null when unreadable.'),
    sizeBytes: z.int().nullable(),
    width: z.int().nullable().describe('Pixels.'),
    height: z.int().nullable().describe('Pixels.'),
    contentHash: z.string().nullable().describe('sha256 of the file’s bytes, hex.'),
    fileModifiedAt: timestamp.nullable().describe('The file’s modification time at the last scan.'),
    datasetIds: z.array(z.uuid()).describe('Datasets it belongs to.'),
    createdAt: timestamp,
    updatedAt: timestamp.describe('Last change of the file’s metadata.'),
  })
  .meta({ id: 'Image', description: 'An image file of the workspace and its metadata.' });

export function toImage(row: ImageRow): z.infer<typeof image> {
  const { id, fileMtime, ...rest } = row;
  return {
    imageId: id,
    ...rest,
    fileModifiedAt: isoOrNull(fileMtime),
    createdAt: iso(row.createdAt),
    updatedAt: iso(row.updatedAt),
  };
}

export const imagePage = paginated(image).meta({ id: 'ImagePage', description: 'A page of images.' });

/** Image filters, sort and paging (the dataset filter is the path's in /api/datasets/{datasetId}/images). */
export const imageListFields = {
  format: queryList(z.string().regex(/^[a-z0-9]{1,16}$/, 'must be a lower-case format name such as jpg'))
    .describe('Only images of these formats (repeat for several).').optional(),
  pathContains: z.string().min(1).max(1024).describe('Only images whose path contains this (any case).').optional(),
  withCaption: perspectiveName.describe('Only images that have a caption of this perspective.').optional(),
  withoutCaption: perspectiveName.describe('Only images that have no caption of this perspective.').optional(),
  sort: z.enum(IMAGE_SORT_KEYS).default('path').describe('Nulls come last; ties are broken by path.'),
  order,
  page,
  limit,
};

export const listImagesInput = z
  .object({ datasetId: uuid('dataset').describe('Only images of this dataset.').optional(), ...imageListFields })
  .prefault({});

export const imageIdParam = z.object({ imageId: uuid('image').describe('The image id.') });

export const createImageInput = z
  .strictObject({
    path: imagePath,
    datasetIds: z.array(uuid('dataset')).max(100).describe('Datasets to add it to.').optional(),
  })
  .meta({
    description: 'Registers a file of the workspace; its format, size, dimensions and hash are read from the file.',
    examples: [{ path: 'datasets/os_img/highland-cow-8972000_640.jpg' }],
  });

export const updateImageInput = z.strictObject({
  imageId: uuid('image').describe('The image id.'),
  path: imagePath.describe('Move the record to this file (e.g. after a rename); without it, re-read the current file.').optional(),
});

export const latestCaptionsInput = imageIdParam.extend({
  perspective: queryList(perspectiveName, 100).describe('Only these perspectives (repeat for several).').optional(),
});

export const imageWithCaptions = z
  .object({
    image,
    captions: z.array(caption).describe('The newest caption of each perspective that has one, by perspective name.'),
  })
  .meta({ id: 'ImageWithLatestCaptions' });

export const imageDeleted = z.object({ deleted: z.literal(true), imageId: z.uuid() });
