/**
 * The events as subscribers and the message broker receive them: job events and data change
 * events, in one envelope. The OpenAPI document carries them as JobEvent and DataEvent
 * (src/openapi.ts); the tRPC subscriptions are typed by them.
 */
import { z } from 'zod';
import { CHANGE_SOURCES, DATA_ENTITIES, IDS_PER_EVENT } from '../db/data-events.js';
import { JOB_EVENT_TYPES } from '../db/outbox.js';
import { JOB_STATUSES } from '../db/schema.js';
import { limit, page, paginated, timestamp } from './common.js';

const envelope = {
  id: z.uuid().describe('Unique per event: receivers de-duplicate with it (delivery is at least once).'),
  seq: z.number().int().describe('Order of events; the SSE `id:` and what `Last-Event-ID` resumes after.'),
  occurredAt: z.iso.datetime(),
  jobId: z.uuid().nullable().describe('The job the event is about, or that caused the change.'),
  requestId: z.string().nullable().describe('The X-Request-Id of the request that caused it, if one did.'),
};

const ids = z.array(z.uuid()).min(1).max(IDS_PER_EVENT).describe(`The ids of the entities changed (at most ${IDS_PER_EVENT} per event).`);
const imageIds = z.array(z.uuid()).max(IDS_PER_EVENT);
const changes = z.array(z.string()).describe('The names of the fields that changed (never their values).');

const common = {
  entity: z.enum(DATA_ENTITIES),
  source: z.enum(CHANGE_SOURCES).describe('What made the change: a request, a job, a workspace sync, a caption import, the library, the providers file.'),
  ids,
};

/** One kind of data event, a named component (`id`) of the OpenAPI document. */
const dataVariant = <const T extends readonly [string, ...string[]], S extends z.ZodRawShape>(id: string, types: T, data: S) =>
  z.object({ ...envelope, type: z.enum(types), data: z.object({ ...common, ...data }).meta({ id: `${id}Data` }) }).meta({ id });

export const dataEvent = z
  .discriminatedUnion('type', [
    dataVariant('ImageEvent', ['IMAGE_CREATED', 'IMAGE_UPDATED', 'IMAGE_DELETED'], { path: z.string().optional(), changes: changes.optional() }),
    dataVariant('DatasetEvent', ['DATASET_CREATED', 'DATASET_UPDATED', 'DATASET_DELETED'], {
      datasetId: z.uuid(),
      name: z.string().optional(),
      changes: changes.optional(),
    }),
    dataVariant('DatasetMembersEvent', ['DATASET_MEMBERS_CHANGED'], {
      datasetId: z.uuid(),
      added: imageIds.describe('Images that joined the dataset.'),
      removed: imageIds.describe('Images that left it.'),
    }),
    dataVariant('PerspectiveEvent', ['PERSPECTIVE_CREATED', 'PERSPECTIVE_UPDATED', 'PERSPECTIVE_DELETED'], {
      name: z.string(),
      revision: z.number().int().optional(),
      newRevision: z.boolean().optional().describe('This change made a new revision of the definition.'),
      changes: changes.optional(),
    }),
    dataVariant('CaptionEvent', ['CAPTION_CREATED', 'CAPTION_UPDATED', 'CAPTION_DELETED'], { changes: changes.optional() }),
    dataVariant('ProviderEvent', ['PROVIDER_CREATED', 'PROVIDER_UPDATED', 'PROVIDER_DELETED'], { name: z.string(), changes: changes.optional() }),
  ])
  .meta({ id: 'DataEvent', description: 'A data change event (README, "Data change events").' });

export const jobEvent = z
  .object({
    ...envelope,
    type: z.enum(JOB_EVENT_TYPES),
    data: z.object({
      jobId: z.uuid(),
      status: z.enum(JOB_STATUSES),
      totalImages: z.number().int(),
      processedImages: z.number().int(),
      failedImages: z.number().int(),
      cancelledImages: z.number().int(),
      progress: z.number(),
      oldStatus: z.enum(JOB_STATUSES).optional().describe('JOB_STATUS_CHANGED'),
      newStatus: z.enum(JOB_STATUSES).optional().describe('JOB_STATUS_CHANGED'),
      reason: z.string().nullable().optional().describe('JOB_STATUS_CHANGED'),
      type: z.string().optional().describe('JOB_CREATED'),
      priority: z.number().int().optional().describe('JOB_CREATED'),
      perspectives: z.array(z.string()).optional().describe('JOB_CREATED'),
      userId: z.string().nullable().optional().describe('JOB_CREATED'),
      datasetId: z.uuid().nullable().optional().describe('JOB_CREATED'),
    }),
  })
  .meta({ id: 'JobEvent', description: 'A job event (README, "Following jobs live").' });

export type DataEventMessage = z.infer<typeof dataEvent>;
export type JobEventMessage = z.infer<typeof jobEvent>;

/** `entity` of the data subscription: which entity types to follow (all when absent). */
export const dataEventsInput = z
  .object({
    entity: z.array(z.enum(DATA_ENTITIES)).max(DATA_ENTITIES.length).optional(),
    datasetId: z.uuid().optional(),
    jobId: z.uuid().optional(),
    lastEventId: z.string().regex(/^\d+$/).nullish(),
  })
  .optional();

export const deadLettersInput = z.object({ page, limit }).prefault({});

export const deadLetter = z
  .object({
    eventId: z.uuid(),
    seq: z.int(),
    type: z.string(),
    stream: z.string().describe('The stream it was in: job:<id>, data:<entity>.'),
    jobId: z.uuid().nullable(),
    occurredAt: timestamp,
    deadAt: timestamp.describe('When it was moved aside.'),
    attempts: z.int().describe('Delivery attempts made.'),
    lastError: z.string().nullable().describe('What the broker last answered, or why it was moved aside.'),
  })
  .meta({ id: 'DeadLetter', description: 'An event the message broker refused for good, or that waited too long, moved aside.' });

export const deadLetterPage = paginated(deadLetter).meta({ id: 'DeadLetterPage', description: 'A page of dead letters, newest first.' });
