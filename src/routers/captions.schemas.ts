/** Input and output schemas of the captions API (`/api/captions`). */
import { z } from 'zod';
import { CAPTION_SORT_KEYS, type CaptionRow } from '../db/captions.js';
import { bodyNumber, iso, limit, order, page, paginated, queryInt, queryList, timeFilter, timestamp, uuid } from './common.js';

export const perspectiveName = z
  .string()
  .regex(/^[\w.-]{1,128}$/, 'must be a perspective name (1-128 letters, digits, _ . -)')
  .describe('Perspective name, e.g. art_critic.');

export const caption = z
  .object({
    captionId: z.uuid(),
    imageId: z.uuid(),
    imagePath: z.string().describe('The image’s path relative to the workspace.'),
    perspectiveId: z.uuid(),
    perspective: z.string().describe('The perspective’s name.'),
    perspectiveVersion: z.string().describe('The perspective’s `version` when the caption was made.'),
    perspectiveRevision: z
      .int()
      .nullable()
      .describe('The perspective revision (see /api/perspectives/{perspectiveId}/versions) it was made with.'),
    model: z.string().nullable(),
    provider: z.string().nullable(),
    result: z.record(z.string(), z.unknown()).describe('The structured caption.'),
    rawText: z.string().nullable().describe('The model’s raw answer, when kept.'),
    jobId: z.uuid().nullable().describe('The job that made it; null for captions stored through the API or whose job was deleted.'),
    itemId: z.uuid().nullable().describe('The job item that made it.'),
    createdAt: timestamp,
  })
  .meta({ id: 'Caption', description: 'The structured result of one perspective on one image.' });

export function toCaption(row: CaptionRow): z.infer<typeof caption> {
  const { id, ...rest } = row;
  return { captionId: id, ...rest, createdAt: iso(row.createdAt) };
}

export const captionPage = paginated(caption).meta({ id: 'CaptionPage', description: 'A page of captions.' });

/** Caption filters, sort and paging; `perspective` filters are left out where the path names one. */
export const captionListFields = {
  imageId: uuid('image').describe('Only captions of this image.').optional(),
  perspectiveRevision: queryInt(1, 1_000_000).describe('Only captions made with this perspective revision.').optional(),
  jobId: uuid('job').describe('Only captions made by this job.').optional(),
  model: z.string().min(1).max(256).describe('Only captions by this model.').optional(),
  provider: z.string().min(1).max(128).describe('Only captions by this provider.').optional(),
  createdFrom: timeFilter.describe('Created at or after.').optional(),
  createdTo: timeFilter.describe('Created before.').optional(),
  sort: z.enum(CAPTION_SORT_KEYS).default('createdAt').describe('Ties are broken by creation time, then id.'),
  order,
  page,
  limit,
};

const createdRange = (i: { createdFrom?: string; createdTo?: string }) =>
  !i.createdFrom || !i.createdTo || Date.parse(i.createdFrom) <= Date.parse(i.createdTo);
const createdRangeError = { message: 'createdFrom must not be after createdTo', path: ['createdFrom'] };

export const listCaptionsInput = z
  .object({
    ...captionListFields,
    perspectiveId: uuid('perspective').describe('Only captions of this perspective.').optional(),
    perspective: queryList(perspectiveName).describe('Only captions of these perspectives (by name; repeat for several).').optional(),
  })
  .refine(createdRange, createdRangeError)
  .prefault({});

export const captionIdParam = z.object({ captionId: uuid('caption').describe('The caption id.') });

export const createCaptionInput = z
  .strictObject({
    imageId: uuid('image'),
    perspectiveId: uuid('perspective').optional(),
    perspective: perspectiveName.optional(),
    result: z.record(z.string().max(256), z.unknown()).describe('The structured caption.'),
    rawText: z.string().max(1_000_000).nullish(),
    model: z.string().min(1).max(256).nullish(),
    provider: z.string().min(1).max(128).nullish(),
  })
  .refine((i) => (i.perspectiveId === undefined) !== (i.perspective === undefined), {
    message: 'give exactly one of perspectiveId or perspective',
    path: ['perspectiveId'],
  })
  .meta({
    description: 'A caption made outside the queue; it gets the perspective’s current version and revision.',
    examples: [{ imageId: '0d5c7a4e-8f1e-4f7a-9a59-3b0f3f1c2a11', perspective: 'art_critic', result: { formal_analysis: '…' }, model: 'gpt-4o', provider: 'openai' }],
  });

export const updateCaptionInput = z
  .strictObject({
    captionId: uuid('caption').describe('The caption id.'),
    result: z.record(z.string().max(256), z.unknown()).optional(),
    rawText: z.string().max(1_000_000).nullable().optional(),
    model: z.string().min(1).max(256).nullable().optional(),
    provider: z.string().min(1).max(128).nullable().optional(),
  })
  .refine((i) => [i.result, i.rawText, i.model, i.provider].some((v) => v !== undefined), {
    message: 'give at least one of result, rawText, model, provider',
    path: ['result'],
  });

export const captionDeleted = z.object({ deleted: z.literal(true), captionId: z.uuid() });

/** A caption made now for one image and perspective through a stored provider (graphcap studio's interactive view). */
export const generateCaptionInput = z
  .strictObject({
    imageId: uuid('image').optional(),
    imagePath: z.string().min(1).max(1024).describe('A workspace path (datasets/..., /datasets/..., /workspace/...) instead of imageId.').optional(),
    perspective: perspectiveName,
    provider: z.string().min(1).max(128).describe('A stored provider’s name (/api/providers).'),
    model: z.string().min(1).max(256).describe('Default: the provider’s default model.').optional(),
    options: z
      .strictObject({
        maxTokens: bodyNumber(z.int().min(1).max(1_000_000)).optional(),
        temperature: bodyNumber(z.number().min(0).max(2)).optional(),
        topP: bodyNumber(z.number().min(0).max(1)).optional(),
        repetitionPenalty: bodyNumber(z.number().min(0).max(10)).optional(),
        globalContext: z.string().max(100_000).optional(),
        context: z.array(z.string().max(100_000)).max(100).optional(),
        resizeResolution: z.string().min(1).max(64).optional(),
      })
      .optional(),
  })
  .refine((i) => (i.imageId === undefined) !== (i.imagePath === undefined), { message: 'give exactly one of imageId or imagePath', path: ['imageId'] })
  .meta({ examples: [{ imagePath: 'datasets/os_img/ural-owl-6676441_640.jpg', perspective: 'graph_caption', provider: 'gemini' }] });
