/** Input and output schemas of the batch queue (`/api/perspectives/batch`). */
import { z } from 'zod';
import type { ItemRow } from '../db/items.js';
import type { JobConfig, JobRow } from '../db/jobs.js';
import { JOB_SORT_KEYS } from '../db/jobs.js';
import { ITEM_STATUSES, JOB_STATUSES, JOB_TYPES, PROVIDER_ENVIRONMENTS } from '../db/schema.js';
import {
  analyzeInputExample,
  analyzeOutputExample,
  itemExample,
  itemPageExample,
  itemUpdateExample,
  jobExample,
  jobPageExample,
  jobStatusExample,
  reorderInputExample,
  reorderOutputExample,
  retryFailedExample,
  statisticsExample,
} from './batch.examples.js';
import { bodyBoolean, bodyNumber, iso, isoOrNull, limit, order, page, paginated, queryBoolean, queryList, timeFilter, timestamp, uuid } from './common.js';

export const jobType = z.enum(JOB_TYPES).meta({
  id: 'JobType',
  description:
    'MULTI_PERSPECTIVE: every image × every perspective. DATASET_PERSPECTIVE: every image of a dataset × every perspective. ' +
    'BACKFILL: only pairs without a caption. DEPENDENCY_CHAIN: like MULTI_PERSPECTIVE, started after its dependsOn jobs complete.',
});
export const jobStatus = z.enum(JOB_STATUSES).meta({
  id: 'JobStatus',
  description:
    'pending → running → completed (all items done) | partial (some failed) | failed (all failed) | cancelled. ' +
    'paused: a pending or running job paused by request; nothing new is dispatched until it is resumed (back to pending).',
});
export const itemStatus = z.enum(ITEM_STATUSES).meta({
  id: 'ItemStatus',
  description: 'pending → running → completed | failed | cancelled; a retried attempt goes back to pending.',
});

const perspectiveName = z.string().min(1).max(128);
const IMAGE_PATH_LENGTH = { minLength: 1, maxLength: 1024 };

/**
 * Up to 100,000 paths. Their lengths are checked in one pass over the array, with zod's own issues
 * and messages: zod runs a string's min/max checks element by element at ~3 µs a path, ~35 ms of
 * a 10,000-path create. The element's JSON Schema still states the lengths.
 */
const imagePaths = z
  .array(z.string().meta({ ...IMAGE_PATH_LENGTH, description: 'Path relative to the workspace, e.g. datasets/os_img/cow.jpg' }))
  .min(1)
  .max(100_000)
  .superRefine(
    (paths, ctx) => {
      paths.forEach((p, i) => {
        if (typeof p !== 'string') return; // refused as the wrong type already
        if (p.length < IMAGE_PATH_LENGTH.minLength) {
          ctx.addIssue({ code: 'too_small', origin: 'string', minimum: IMAGE_PATH_LENGTH.minLength, inclusive: true, path: [i], input: p });
        } else if (p.length > IMAGE_PATH_LENGTH.maxLength) {
          ctx.addIssue({ code: 'too_big', origin: 'string', maximum: IMAGE_PATH_LENGTH.maxLength, inclusive: true, path: [i], input: p });
        }
      });
    },
    // Also beside other elements' type errors, so that every failing path is named, as before.
    { when: (payload) => Array.isArray(payload.value) },
  );

/** The config's fields; `number` wraps numbers (bodyNumber for input, as-is for output). */
const configFields = (number: (schema: z.ZodNumber) => z.ZodType<number, number>) => ({
  provider: z.string().min(1).max(128).describe('A stored provider’s name (/api/providers), e.g. gemini, openai, ollama; or any name with a providerConfig.'),
  model: z.string().min(1).max(256),
  maxTokens: number(z.int().min(1).max(1_000_000)).optional(),
  temperature: number(z.number().min(0).max(2)).optional(),
  topP: number(z.number().min(0).max(1)).optional(),
  repetitionPenalty: number(z.number().min(0).max(10)).optional(),
  globalContext: z.string().max(100_000).optional(),
  context: z.array(z.string().max(100_000)).max(100).optional(),
  resizeResolution: z.string().min(1).max(64).optional(),
});

/**
 * A job's own provider settings, in the shape graphcap's Inference Bridge validates (its
 * ProviderConfig, snake_case); the camelCase spellings graphcap studio uses are taken too and sent
 * as snake_case. `name` defaults to config.provider, `environment` to cloud, `models` to config.model.
 */
const perMinute = bodyNumber(z.int().min(1).max(100_000_000)).nullable().optional();
export const inlineProviderConfig = z
  .strictObject({
    name: z.string().min(1).max(128).optional(),
    kind: z.string().regex(/^[\w.-]{1,64}$/, 'must be 1-64 letters, digits, _ . -').optional(),
    environment: z.enum(PROVIDER_ENVIRONMENTS).optional(),
    base_url: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).max(2048).optional(),
    baseUrl: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).max(2048).optional(),
    api_key: z.string().max(8192).optional(),
    apiKey: z.string().max(8192).optional(),
    models: z.array(z.string().min(1).max(256)).max(500).optional(),
    fetch_models: bodyBoolean.optional(),
    fetchModels: bodyBoolean.optional(),
    rate_limits: z
      .strictObject({ requests_per_minute: perMinute, tokens_per_minute: perMinute })
      .meta({ id: 'InlineProviderRateLimits', description: 'Calls and tokens per minute (the bridge’s spelling).' })
      .optional(),
    rateLimits: z
      .strictObject({ requestsPerMinute: perMinute, tokensPerMinute: perMinute })
      .meta({ id: 'InlineProviderRateLimitsCamel', description: 'Calls and tokens per minute (graphcap studio’s spelling).' })
      .optional(),
  })
  .superRefine((c, ctx) => {
    const pairs = [['base_url', 'baseUrl'], ['api_key', 'apiKey'], ['fetch_models', 'fetchModels'], ['rate_limits', 'rateLimits']] as const;
    for (const [snake, camel] of pairs) {
      if (c[snake] !== undefined && c[camel] !== undefined) ctx.addIssue({ code: 'custom', path: [camel], message: `give ${snake} or ${camel}, not both` });
    }
    if (c.kind === undefined) ctx.addIssue({ code: 'custom', path: ['kind'], message: 'required (openai, gemini, ollama, vllm ...)' });
    if (c.base_url === undefined && c.baseUrl === undefined) ctx.addIssue({ code: 'custom', path: ['base_url'], message: 'required' });
    if (c.api_key === undefined && c.apiKey === undefined) ctx.addIssue({ code: 'custom', path: ['api_key'], message: 'required (an empty string for a server without keys)' });
  })
  .meta({
    id: 'InlineProviderConfig',
    description:
      "The Inference Bridge's provider_config for this job alone (may hold credentials; sealed at rest, never returned). " +
      'Usually a stored provider is named in config.provider instead.',
  });

export const jobConfigInput = z
  .strictObject({
    ...configFields(bodyNumber),
    providerConfig: inlineProviderConfig.optional(),
  })
  .meta({ example: { provider: 'gemini', model: 'gemini-2.0-flash-exp', maxTokens: 4096, temperature: 0.8 } });

/** The config as returned: everything but providerConfig, which may hold credentials. */
export const jobConfigOutput = z.object({
  ...configFields((schema) => schema),
  hasProviderConfig: z.boolean().describe('Whether a providerConfig was given (its values are never returned).'),
});

export const createJobInput = z
  .strictObject({
    type: jobType,
    perspectives: z.array(perspectiveName).min(1).max(100).describe('Perspective names.'),
    imagePaths: imagePaths.optional(),
    datasetId: uuid('dataset').optional(),
    datasetName: z.string().min(1).max(128).optional(),
    priority: bodyNumber(z.int().min(-1_000_000).max(1_000_000)).default(100).describe('Lower runs first.'),
    config: jobConfigInput,
    userId: z.string().min(1).max(256).optional(),
    dependsOn: z.array(uuid('job')).min(1).max(100).optional().describe('Jobs that must complete first.'),
    idempotencyKey: z
      .string()
      .min(1)
      .max(256)
      .optional()
      .describe('A repeated create with the same key returns the first job instead of making a second.'),
  })
  .superRefine((input, ctx) => {
    const sources = [input.imagePaths, input.datasetId, input.datasetName].filter((s) => s !== undefined).length;
    if (sources !== 1) {
      ctx.addIssue({ code: 'custom', path: ['imagePaths'], message: 'give exactly one of imagePaths, datasetId or datasetName' });
    }
    if (input.type === 'DATASET_PERSPECTIVE' && input.imagePaths) {
      ctx.addIssue({ code: 'custom', path: ['imagePaths'], message: 'DATASET_PERSPECTIVE takes a datasetId or datasetName' });
    }
    if (input.type === 'DEPENDENCY_CHAIN' && !input.dependsOn) {
      ctx.addIssue({ code: 'custom', path: ['dependsOn'], message: 'DEPENDENCY_CHAIN needs dependsOn' });
    }
  })
  .meta({
    description: 'A new caption job: its type, perspectives, images (exactly one of imagePaths, datasetId, datasetName) and config.',
    examples: [
      {
        type: 'MULTI_PERSPECTIVE',
        perspectives: ['art_critic', 'storytelling'],
        imagePaths: ['datasets/os_img/highland-cow-8972000_640.jpg'],
        priority: 100,
        config: { provider: 'gemini', model: 'gemini-2.0-flash-exp' },
      },
    ],
  });

export const job = z
  .object({
    jobId: z.uuid(),
    type: jobType,
    status: jobStatus,
    priority: z.int(),
    queuePosition: z.int().min(1).nullable().describe('Place in the queue of jobs with work left; null once finished.'),
    perspectives: z.array(z.string()),
    datasetId: z.uuid().nullable(),
    config: jobConfigOutput,
    userId: z.string().nullable(),
    idempotencyKey: z.string().nullable(),
    totalImages: z.int().describe('Items in the job ((image, perspective) pairs).'),
    processedImages: z.int().describe('Items completed.'),
    failedImages: z.int().describe('Items failed.'),
    cancelledImages: z.int().describe('Items cancelled.'),
    progress: z.number().min(0).max(100).describe('Percent of items finished (completed or failed).'),
    error: z.string().nullable().describe('Why the job ended as it did, or why it was paused for its provider (misconfigured, disabled, unreachable), when there is a reason.'),
    archived: z.boolean(),
    archiveDate: timestamp.nullable(),
    dependsOn: z.array(z.uuid()),
    createdAt: timestamp,
    updatedAt: timestamp,
    startedAt: timestamp.nullable(),
    completedAt: timestamp.nullable(),
    etaSeconds: z
      .int()
      .min(0)
      .nullable()
      .describe('Seconds until a running job is estimated to finish, from its recent throughput; null when unknown or not running.'),
    estimatedCompletionAt: timestamp.nullable().describe('When a running job is estimated to finish (now + etaSeconds); null when unknown.'),
    itemsPerSecond: z
      .number()
      .min(0)
      .nullable()
      .describe('A running job’s recent throughput in items per second (the rate its ETA uses); null when unknown or not running.'),
  })
  .meta({ id: 'Job', description: 'A caption job with its counters, progress and timings.', examples: [jobExample] });

/** The config keys a Job shows (jobConfigOutput's, but hasProviderConfig). */
const CONFIG_OUTPUT_KEYS = Object.keys(jobConfigOutput.shape).filter((k) => k !== 'hasProviderConfig') as (keyof JobConfig)[];

/**
 * A Job from its row, field by field: exactly the schema's keys whatever else the row or its stored
 * config carries (what output validation would strip), so the reads that production does not
 * re-validate (unvalidatedInProduction) answer the same.
 */
export function toJob(row: JobRow): z.infer<typeof job> {
  const config: Record<string, unknown> = {};
  for (const key of CONFIG_OUTPUT_KEYS) if (row.config[key] !== undefined) config[key] = row.config[key];
  config.hasProviderConfig = row.config.providerConfig !== undefined;
  return {
    jobId: row.jobId,
    type: row.type,
    status: row.status,
    priority: row.priority,
    queuePosition: row.queuePosition,
    perspectives: row.perspectives,
    datasetId: row.datasetId,
    config: config as z.infer<typeof jobConfigOutput>,
    userId: row.userId,
    idempotencyKey: row.idempotencyKey,
    totalImages: row.totalImages,
    processedImages: row.processedImages,
    failedImages: row.failedImages,
    cancelledImages: row.cancelledImages,
    progress: row.progress,
    error: row.error,
    archived: row.archived,
    archiveDate: isoOrNull(row.archiveDate),
    dependsOn: row.dependsOn,
    createdAt: iso(row.createdAt),
    updatedAt: iso(row.updatedAt),
    startedAt: isoOrNull(row.startedAt),
    completedAt: isoOrNull(row.completedAt),
    etaSeconds: row.etaSeconds,
    estimatedCompletionAt: row.etaSeconds === null ? null : new Date(Date.now() + row.etaSeconds * 1000).toISOString(),
    itemsPerSecond: row.itemsPerSecond === null ? null : Math.round(row.itemsPerSecond * 1000) / 1000,
  };
}

export const item = z
  .object({
    itemId: z.uuid(),
    jobId: z.uuid(),
    imageId: z.uuid().nullable().describe('Null once the image was deleted; imagePath stays.'),
    imagePath: z.string(),
    perspective: z.string(),
    status: itemStatus,
    attempts: z.int(),
    nextAttemptAt: timestamp.nullable().describe('When a retried item runs again.'),
    error: z.string().nullable(),
    processingTime: z.int().nullable().describe('Milliseconds the work took.'),
    captionId: z.uuid().nullable(),
    result: z.record(z.string(), z.unknown()).nullable().describe('The structured caption, once completed.'),
    createdAt: timestamp,
    updatedAt: timestamp,
    startedAt: timestamp.nullable(),
    completedAt: timestamp.nullable(),
  })
  .meta({ id: 'JobItem', description: 'One (image, perspective) item of a job, with its caption once completed.', examples: [itemExample] });

/** A JobItem from its row, field by field (see toJob). */
export function toItem(row: ItemRow): z.infer<typeof item> {
  return {
    itemId: row.itemId,
    jobId: row.jobId,
    imageId: row.imageId,
    imagePath: row.imagePath,
    perspective: row.perspective,
    status: row.status,
    attempts: row.attempts,
    nextAttemptAt: isoOrNull(row.nextAttemptAt),
    error: row.error,
    processingTime: row.processingTime,
    captionId: row.captionId,
    result: row.result,
    createdAt: iso(row.createdAt),
    updatedAt: iso(row.updatedAt),
    startedAt: isoOrNull(row.startedAt),
    completedAt: isoOrNull(row.completedAt),
  };
}

export const jobIdParam = z.object({ jobId: uuid('job').describe('The job id.') });

/**
 * The two reads every client polls, the job list and a job's status, are not validated again on
 * their way out in production: tRPC's output parse was the largest cost of the service's own
 * (~350 of ~1,300 µs of CPU per list of 20 jobs, measured in-process over canned rows; GET /list
 * ran at ~0.6× the bare express + pg handler). Their values are built field by field by toJob and
 * toItem, typed as the schemas, from rows the database's constraints keep in range; tests and
 * development (NODE_ENV other than production) validate them as every other output, and
 * test/batch/outputs.test.ts checks that validation returns them unchanged.
 */
function unvalidatedInProduction<T extends z.ZodType>(schema: T): T {
  // tRPC validates outputs with schema.parse, taken when the procedure is defined; the OpenAPI
  // document reads the schema's definition, which stays as it is.
  if (process.env.NODE_ENV === 'production') Object.assign(schema, { parse: (value: unknown) => value });
  return schema;
}

export const jobPage = unvalidatedInProduction(
  paginated(job).meta({ id: 'JobPage', description: 'A page of jobs.', examples: [jobPageExample] }),
);
export const itemPage = paginated(item).meta({ id: 'JobItemPage', description: 'A page of a job’s items.', examples: [itemPageExample] });

export const listJobsInput = z.object({
  status: queryList(jobStatus).describe('Only jobs in these statuses (repeat the parameter for several).').optional(),
  type: queryList(jobType).describe('Only jobs of these types (repeat the parameter for several).').optional(),
  userId: z.string().min(1).max(256).describe('Only jobs of this user.').optional(),
  archived: queryBoolean.default(false).describe('Archived jobs instead of live ones.'),
  createdFrom: timeFilter.optional().describe('Created at or after.'),
  createdTo: timeFilter.optional().describe('Created before.'),
  sort: z.enum(JOB_SORT_KEYS).default('queue').describe('queue = priority, then queue position, then age.'),
  order,
  page,
  limit,
}).prefault({});

export const itemsPageInput = {
  page,
  limit,
  itemStatus: queryList(itemStatus).describe('Only items in these statuses (repeat the parameter for several).').optional(),
};

export const jobStatusInput = jobIdParam.extend(itemsPageInput);
export const jobStatusOutput = unvalidatedInProduction(
  z.object({ job, items: itemPage }).meta({ id: 'JobDetail', description: 'The job and a page of its items.', examples: [jobStatusExample] }),
);

export const listItemsInput = jobIdParam.extend({
  page,
  limit,
  status: queryList(itemStatus).describe('Only items in these statuses (repeat the parameter for several).').optional(),
  perspective: z.string().min(1).max(128).describe('Only items of this perspective.').optional(),
});

export const failedItemsInput = jobIdParam.extend({ page, limit });

export const reorderInput = z
  .strictObject({
    moves: z
      .array(z.strictObject({ jobId: uuid('job'), position: bodyNumber(z.int().min(1).max(1_000_000)) }))
      .max(1000)
      .optional()
      .describe('Move jobs to 1-based places in the queue; a moved job takes the priority of the job it lands beside.'),
    priorities: z
      .array(z.strictObject({ jobId: uuid('job'), priority: bodyNumber(z.int().min(-1_000_000).max(1_000_000)) }))
      .max(1000)
      .optional()
      .describe('Set priorities (lower runs first); applied before moves.'),
  })
  .refine((i) => (i.moves?.length ?? 0) + (i.priorities?.length ?? 0) > 0, {
    message: 'give at least one move or priority',
    path: ['moves'],
  })
  .meta({ description: 'Moves and priority changes; at least one of either.', examples: [reorderInputExample] });

export const queueEntry = z.object({ jobId: z.uuid(), position: z.int(), priority: z.int(), status: jobStatus });
export const reorderOutput = z
  .object({ queue: z.array(queueEntry).describe('Jobs with work left, in queue order.') })
  .meta({ description: 'The queue after the change.', examples: [reorderOutputExample] });

export const retryFailedOutput = z
  .object({ retried: z.int().describe('Items put back in the queue.'), job })
  .meta({ description: 'How many items were retried, and the job.', examples: [retryFailedExample] });

export const analyzeInput = z
  .strictObject({
    imagePaths: imagePaths.optional(),
    datasetId: uuid('dataset').optional(),
    datasetName: z.string().min(1).max(128).optional(),
    perspectives: z.array(perspectiveName).min(1).max(100).optional().describe('Default: every enabled perspective.'),
    missingLimit: bodyNumber(z.int().min(0).max(10_000)).default(100).describe('How many missing pairs to list.'),
  })
  .refine((i) => [i.imagePaths, i.datasetId, i.datasetName].filter((s) => s !== undefined).length === 1, {
    message: 'give exactly one of imagePaths, datasetId or datasetName',
    path: ['imagePaths'],
  })
  .meta({ description: 'Images (exactly one of imagePaths, datasetId, datasetName) and perspectives.', examples: [analyzeInputExample] });

export const analyzeOutput = z.object({
  imageCount: z.int(),
  perspectives: z.array(z.string()),
  totalPairs: z.int(),
  captioned: z.int(),
  missing: z.int(),
  byPerspective: z.array(z.object({ perspective: z.string(), captioned: z.int(), missing: z.int() })),
  missingPairs: z
    .array(z.object({ imageId: z.uuid(), imagePath: z.string(), perspective: z.string() }))
    .describe('Up to missingLimit of the (image, perspective) pairs without a caption.'),
}).meta({ description: 'Caption coverage of the images by the perspectives.', examples: [analyzeOutputExample] });

const statusCounts = <T extends readonly string[]>(statuses: T) =>
  z.object({ ...Object.fromEntries(statuses.map((s) => [s, z.int()])), total: z.int() } as Record<T[number] | 'total', z.ZodInt>);

export const statisticsInput = z
  .object({
    windowMinutes: z.coerce.number<number>().int().min(1).max(10_080).default(60).describe('Window for throughput and timings.'),
  })
  .prefault({});

export const statisticsOutput = z.object({
  jobs: statusCounts(JOB_STATUSES),
  items: statusCounts(ITEM_STATUSES),
  throughput: z.object({ windowMinutes: z.int(), finishedItems: z.int(), itemsPerMinute: z.number() }),
  processingTime: z.object({ meanMs: z.number().nullable(), p95Ms: z.number().nullable() }),
  failureRate: z.number().min(0).max(1).nullable(),
  oldestPendingJobAgeSeconds: z.number().nullable(),
  providers: z
    .array(
      z.object({
        provider: z.string(),
        model: z.string(),
        concurrencyLimit: z.number().describe('Calls in flight allowed across replicas (adaptive; at most MAX_CONCURRENT_JOBS × MAX_CONCURRENT_ITEMS).'),
        inFlight: z.int().describe('Calls in flight now, all replicas.'),
        breaker: z.enum(['closed', 'open', 'half-open']).describe('open: no calls; half-open: one probe at a time.'),
        consecutiveFailures: z.int(),
        blockedUntil: timestamp.nullable().describe('No call before this (the provider’s Retry-After).'),
        openUntil: timestamp.nullable().describe('An open breaker’s next probe.'),
        latencyMs: z.number().nullable().describe('Moving average of successful calls.'),
        baselineLatencyMs: z.number().nullable(),
      }),
    )
    .describe('Adaptive dispatch per (provider, model): what each replica’s dispatcher goes by.'),
  misconfiguredProviders: z
    .array(z.object({ provider: z.string(), since: timestamp, reason: z.string() }))
    .describe('Stored providers that refused their credentials: their jobs are paused until the provider is changed.'),
  bridge: z
    .object({
      state: z.enum(['unknown', 'ok', 'unreachable', 'incompatible']),
      unknownPerspectives: z.array(z.string()).describe('Enabled perspectives the bridge does not list (it loads them at its start).'),
    })
    .nullable()
    .describe('The Inference Bridge as this replica’s last check saw it; null without INFERENCE_BRIDGE_URL.'),
  generatedAt: timestamp,
}).meta({ description: 'Queue figures; archived jobs are left out.', examples: [statisticsExample] });

export const itemUpdateInput = z
  .strictObject({
    itemId: uuid('item').describe('The item id.'),
    status: itemStatus.describe('pending→running|cancelled; running→completed|failed|pending|cancelled.'),
    result: z.record(z.string(), z.unknown()).optional().describe('The structured caption; required for completed.'),
    error: z.string().max(10_000).optional(),
    processingTime: bodyNumber(z.int().min(0).max(86_400_000)).optional().describe('Milliseconds.'),
    model: z.string().min(1).max(256).optional(),
    provider: z.string().min(1).max(128).optional(),
  })
  .meta({ description: 'The item’s new state, as an executor reports it.', examples: [itemUpdateExample] });
