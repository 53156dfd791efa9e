/**
 * The data model. Two PostgreSQL schemas, as in the design: `core_schema` holds graphcap's content,
 * `job_queue` the batch queue. Column names follow the design's tables (snake_case in SQL,
 * camelCase in TypeScript).
 */
import { sql } from 'drizzle-orm';
import {
  bigint,
  boolean,
  check,
  customType,
  doublePrecision,
  index,
  integer,
  jsonb,
  pgSchema,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core';

export const JOB_TYPES = ['MULTI_PERSPECTIVE', 'DATASET_PERSPECTIVE', 'BACKFILL', 'DEPENDENCY_CHAIN'] as const;
export type JobType = (typeof JOB_TYPES)[number];

/**
 * Job states. `pending` waits for a slot (and its dependencies); `paused` dispatches nothing and
 * holds no slot until resumed; the last four are final.
 */
export const JOB_STATUSES = ['pending', 'running', 'paused', 'completed', 'partial', 'failed', 'cancelled'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const FINISHED_JOB_STATUSES = ['completed', 'partial', 'failed', 'cancelled'] as const satisfies JobStatus[];
export const ACTIVE_JOB_STATUSES = ['pending', 'running', 'paused'] as const satisfies JobStatus[];

/** Item states. A failed attempt that will be retried goes back to `pending`. */
export const ITEM_STATUSES = ['pending', 'running', 'completed', 'failed', 'cancelled'] as const;
export type ItemStatus = (typeof ITEM_STATUSES)[number];

const createdAt = () => timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow();
const updatedAt = () => timestamp('updated_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow();
const tstz = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

/** PostgreSQL's 64-bit transaction id, read as text. */
const xid8 = customType<{ data: string }>({ dataType: () => 'xid8' });

const inList = (column: string, values: readonly string[]) =>
  sql.raw(`${column} in (${values.map((v) => `'${v}'`).join(', ')})`);

export const core = pgSchema('core_schema');
export const queue = pgSchema('job_queue');

/** Hands out queue positions: a new job goes to the back of its priority. */
export const queuePositionSeq = queue.sequence('caption_jobs_queue_position_seq');

// ---------------------------------------------------------------------------------------------
// core_schema

export const images = core.table(
  'images',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    /** Path relative to WORKSPACE_PATH, with forward slashes; never absolute, never `..`. */
    path: text('path').notNull(),
    format: text('format'),
    sizeBytes: bigint('size_bytes', { mode: 'number' }),
    width: integer('width'),
    height: integer('height'),
    /** sha256 of the file's bytes, hex. */
    contentHash: text('content_hash'),
    /** File modification time at the last scan; a re-scan re-hashes only when it or the size moved. */
    fileMtime: tstz('file_mtime'),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [uniqueIndex('images_path_key').on(t.path)],
);

export const datasets = core.table(
  'datasets',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    name: text('name').notNull(),
    description: text('description'),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [uniqueIndex('datasets_name_key').on(t.name)],
);

/** Membership: an image may belong to several datasets. */
export const datasetImages = core.table(
  'dataset_images',
  {
    datasetId: uuid('dataset_id')
      .notNull()
      .references(() => datasets.id, { onDelete: 'cascade' }),
    imageId: uuid('image_id')
      .notNull()
      .references(() => images.id, { onDelete: 'cascade' }),
    addedAt: timestamp('added_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.datasetId, t.imageId] }), index('dataset_images_image_idx').on(t.imageId)],
);

export const perspectives = core.table(
  'perspectives',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    name: text('name').notNull(),
    displayName: text('display_name').notNull(),
    version: text('version').notNull(),
    module: text('module').notNull(),
    description: text('description'),
    prompt: text('prompt').notNull(),
    schemaFields: jsonb('schema_fields').notNull().default(sql`'[]'::jsonb`),
    tags: text('tags').array().notNull().default(sql`'{}'::text[]`),
    priority: integer('priority').notNull().default(50),
    deprecated: boolean('deprecated').notNull().default(false),
    replacement: text('replacement'),
    /** False when its module is disabled in config/perspective_settings.json. */
    enabled: boolean('enabled').notNull().default(true),
    /**
     * The service's version counter of the definition: 1 at creation, +1 whenever the definition
     * changes (even when the file's own `version` does not). perspective_versions keeps each one.
     */
    revision: integer('revision').notNull().default(1),
    /** The whole definition as read from the library, for fields this table does not model. */
    definition: jsonb('definition').notNull(),
    /** sha256 of the definition: a re-import changes the row only when this moves. */
    definitionHash: text('definition_hash').notNull(),
    /** Library file it came from, relative to the workspace; null when created through the API. */
    sourcePath: text('source_path'),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [uniqueIndex('perspectives_name_key').on(t.name), index('perspectives_module_idx').on(t.module)],
);

/** Every definition a perspective has had, by revision; captions name the revision they were made with. */
export const perspectiveVersions = core.table(
  'perspective_versions',
  {
    perspectiveId: uuid('perspective_id')
      .notNull()
      .references(() => perspectives.id, { onDelete: 'cascade' }),
    revision: integer('revision').notNull(),
    /** The definition's own `version` field at that revision. */
    version: text('version').notNull(),
    definition: jsonb('definition').notNull(),
    definitionHash: text('definition_hash').notNull(),
    sourcePath: text('source_path'),
    createdAt: createdAt(),
  },
  (t) => [primaryKey({ columns: [t.perspectiveId, t.revision] })],
);

export const captions = core.table(
  'captions',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    imageId: uuid('image_id')
      .notNull()
      .references(() => images.id, { onDelete: 'cascade' }),
    perspectiveId: uuid('perspective_id')
      .notNull()
      .references(() => perspectives.id, { onDelete: 'cascade' }),
    /** Perspective version the caption was made with. */
    perspectiveVersion: text('perspective_version').notNull(),
    /** The perspective's revision (perspective_versions) it was made with; null when written outside the service. */
    perspectiveRevision: integer('perspective_revision'),
    model: text('model'),
    provider: text('provider'),
    /** The structured caption (the bridge's `result`). */
    result: jsonb('result').notNull(),
    rawText: text('raw_text'),
    /** The job and item that made it; no foreign key on the item, since items move to job_archives. */
    jobId: uuid('job_id').references(() => captionJobs.jobId, { onDelete: 'set null' }),
    itemId: uuid('item_id'),
    /**
     * For a caption that is (or was written as) a line of graphcap's captions.jsonl: a hash of its
     * image, perspective and content (src/workspace/caption-files.ts), so a line is imported once.
     */
    importKey: text('import_key'),
    /** Waiting to be written to graphcap's captions.jsonl beside its image (src/jobs/caption-exporter.ts). */
    exportPending: boolean('export_pending').notNull().default(false),
    createdAt: createdAt(),
  },
  (t) => [
    uniqueIndex('captions_import_key_key').on(t.importKey).where(sql`import_key is not null`),
    index('captions_export_pending_idx').on(t.createdAt, t.id).where(sql`export_pending`),
    // Exactly-once recording: an item makes at most one caption, however often its result arrives.
    uniqueIndex('captions_item_id_key').on(t.itemId),
    // "Latest caption per (image, perspective)" and "missing pairs".
    index('captions_image_perspective_created_idx').on(t.imageId, t.perspectiveId, t.createdAt.desc()),
    index('captions_perspective_idx').on(t.perspectiveId),
    index('captions_job_idx').on(t.jobId),
    // The caption list's default order (and its pages) without sorting the whole table.
    index('captions_created_idx').on(t.createdAt, t.id),
  ],
);

export const PROVIDER_ENVIRONMENTS = ['cloud', 'local'] as const;
export type ProviderEnvironment = (typeof PROVIDER_ENVIRONMENTS)[number];
/** Where a provider is defined: through the API, or in the providers file (read-only through the API). */
export const PROVIDER_SOURCES = ['api', 'config'] as const;
export type ProviderSource = (typeof PROVIDER_SOURCES)[number];

/** A model of a provider, as graphcap lists them. */
export interface ProviderModel {
  name: string;
  isEnabled: boolean;
}

/**
 * The AI providers jobs call through the Inference Bridge (graphcap's providers: name, kind,
 * environment, base URL, API key, models, rate limits). Jobs name one in `config.provider`; the
 * dispatcher builds the bridge's provider_config from this row at call time.
 */
export const providers = core.table(
  'providers',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    name: text('name').notNull(),
    /** openai, gemini, ollama, vllm ...: what the bridge's client factory expects. */
    kind: text('kind').notNull(),
    environment: text('environment').$type<ProviderEnvironment>().notNull(),
    baseUrl: text('base_url').notNull(),
    /** The API key sealed with SECRETS_KEY (src/secrets.ts); never returned. */
    apiKey: jsonb('api_key'),
    isEnabled: boolean('is_enabled').notNull().default(true),
    models: jsonb('models').$type<ProviderModel[]>().notNull().default(sql`'[]'::jsonb`),
    defaultModel: text('default_model'),
    requestsPerMinute: integer('requests_per_minute'),
    tokensPerMinute: integer('tokens_per_minute'),
    source: text('source').$type<ProviderSource>().notNull().default('api'),
    /** Set when the provider refused its credentials (401/403): its jobs pause until it is changed. */
    misconfiguredAt: tstz('misconfigured_at'),
    misconfiguredReason: text('misconfigured_reason'),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [
    uniqueIndex('providers_name_key').on(t.name),
    check('providers_environment_check', inList('environment', PROVIDER_ENVIRONMENTS)),
    check('providers_source_check', inList('source', PROVIDER_SOURCES)),
    check('providers_rate_limits_check', sql`coalesce(requests_per_minute, 1) >= 1 and coalesce(tokens_per_minute, 1) >= 1`),
  ],
);

/**
 * graphcap's captions.jsonl files the workspace import has read, as they were then: a file whose
 * size and modification time are unchanged is not read again.
 */
export const captionFiles = core.table('caption_files', {
  /** Workspace-relative. */
  path: text('path').primaryKey(),
  sizeBytes: bigint('size_bytes', { mode: 'number' }).notNull(),
  fileMtime: tstz('file_mtime').notNull(),
  importedAt: tstz('imported_at').notNull().defaultNow(),
});

// ---------------------------------------------------------------------------------------------
// job_queue

export const captionJobs = queue.table(
  'caption_jobs',
  {
    jobId: uuid('job_id').primaryKey().defaultRandom(),
    type: text('type').$type<JobType>().notNull(),
    status: text('status').$type<JobStatus>().notNull().default('pending'),
    /** Lower runs first. */
    priority: integer('priority').notNull().default(100),
    /** Tie-breaker within a priority; rewritten by reorder. */
    queuePosition: bigint('queue_position', { mode: 'number' })
      .notNull()
      .default(sql`nextval('job_queue.caption_jobs_queue_position_seq')`),
    perspectives: text('perspectives').array().notNull(),
    datasetId: uuid('dataset_id').references(() => datasets.id, { onDelete: 'set null' }),
    config: jsonb('config').notNull(),
    userId: text('user_id'),
    idempotencyKey: text('idempotency_key'),
    totalImages: integer('total_images').notNull().default(0),
    processedImages: integer('processed_images').notNull().default(0),
    failedImages: integer('failed_images').notNull().default(0),
    cancelledImages: integer('cancelled_images').notNull().default(0),
    progress: doublePrecision('progress').notNull().default(0),
    /** Items claimed since the job last got its job slot: its turn in fair share (src/db/dispatch.ts). */
    sliceItems: integer('slice_items').notNull().default(0),
    /**
     * Throughput for the ETA, kept by rollUpJob without scanning items: items finished (completed or
     * failed) since `rate_window_started_at`, and the items per second of the last full window
     * (about a minute). The window restarts whenever the job (re)starts.
     */
    rateWindowStartedAt: tstz('rate_window_started_at'),
    rateWindowItems: integer('rate_window_items').notNull().default(0),
    recentItemsPerSecond: doublePrecision('recent_items_per_second'),
    /** Why the job ended the way it did (a failed dependency, a cancel ...). */
    error: text('error'),
    /** X-Request-Id of the create call; its bridge calls and events carry it. */
    requestId: text('request_id'),
    archived: boolean('archived').notNull().default(false),
    archiveDate: tstz('archive_date'),
    /** The last resume: a provider outage pauses a job again only once it has lasted that long since. */
    resumedAt: tstz('resumed_at'),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
    startedAt: tstz('started_at'),
    completedAt: tstz('completed_at'),
  },
  (t) => [
    check('caption_jobs_status_check', inList('status', JOB_STATUSES)),
    check('caption_jobs_type_check', inList('type', JOB_TYPES)),
    check('caption_jobs_counters_check', sql`processed_images >= 0 and failed_images >= 0 and cancelled_images >= 0 and total_images >= 0`),
    check('caption_jobs_progress_check', sql`progress >= 0 and progress <= 100`),
    uniqueIndex('caption_jobs_idempotency_key_key').on(t.idempotencyKey),
    // Queue order of the jobs that still have work.
    index('caption_jobs_queue_idx')
      .on(t.priority, t.queuePosition, t.createdAt)
      .where(sql`status in ('pending', 'running', 'paused') and not archived`),
    index('caption_jobs_status_idx').on(t.status, t.archived),
    index('caption_jobs_created_idx').on(t.createdAt),
    index('caption_jobs_user_idx').on(t.userId),
  ],
);

export const jobItems = queue.table(
  'job_items',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    /** Insertion order within a job: items run roughly in the order they were listed. */
    seq: bigint('seq', { mode: 'number' }).generatedAlwaysAsIdentity(),
    /**
     * References caption_jobs (ON DELETE CASCADE) and images (ON DELETE SET NULL) like foreign keys,
     * but checked by statement-level triggers (migration 0006): a foreign key checks and locks its
     * row once per inserted item, which was half of a 10,000-item create (~300 of ~650 ms).
     */
    jobId: uuid('job_id').notNull(),
    /**
     * Null once the image is deleted: an image with pending or running items cannot be deleted
     * (409), finished items keep `image_path` as their record.
     */
    imageId: uuid('image_id'),
    imagePath: text('image_path').notNull(),
    perspective: text('perspective').notNull(),
    status: text('status').$type<ItemStatus>().notNull().default('pending'),
    attempts: integer('attempts').notNull().default(0),
    /** A retried item waits until this time. */
    nextAttemptAt: tstz('next_attempt_at'),
    /** Replica holding the item while it runs, and until when; an expired lease is claimed again. */
    leaseOwner: text('lease_owner'),
    leaseExpiresAt: tstz('lease_expires_at'),
    error: text('error'),
    /** Milliseconds the work took. */
    processingTime: integer('processing_time'),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
    startedAt: tstz('started_at'),
    completedAt: tstz('completed_at'),
  },
  (t) => [
    check('job_items_status_check', inList('status', ITEM_STATUSES)),
    check('job_items_attempts_check', sql`attempts >= 0`),
    index('job_items_job_status_idx').on(t.jobId, t.status, t.seq),
    // The claim: the next pending items of a job.
    index('job_items_claim_idx').on(t.jobId, t.seq).where(sql`status = 'pending'`),
    // Rescue of expired leases.
    index('job_items_lease_idx').on(t.leaseExpiresAt).where(sql`status = 'running'`),
    index('job_items_completed_idx').on(t.completedAt).where(sql`completed_at is not null`),
    index('job_items_image_idx').on(t.imageId),
  ],
);

/**
 * Items of a job still to be written, a chunk of them per row: a create writes its first
 * JOB_ITEM_CHUNK items and leaves the rest here, and the item writer (src/jobs/item-writer.ts) turns
 * each row into its items, in order, one transaction each. A 10,000-item create wrote ~5 MB of
 * WAL (a heap row and four index entries per item) inside the request; a chunk row is three arrays.
 * Parallel arrays, one entry per item, in the job's order.
 */
export const jobItemChunks = queue.table(
  'job_item_chunks',
  {
    jobId: uuid('job_id')
      .notNull()
      .references(() => captionJobs.jobId, { onDelete: 'cascade' }),
    /** The 0-based place in the job of the chunk's first item. */
    firstItem: integer('first_item').notNull(),
    imageIds: uuid('image_ids').array().notNull(),
    imagePaths: text('image_paths').array().notNull(),
    perspectives: text('perspectives').array().notNull(),
    createdAt: createdAt(),
  },
  (t) => [primaryKey({ columns: [t.jobId, t.firstItem] })],
);

/** Items of archived jobs, moved out of the hot table. Same columns, plus when they moved. */
export const jobArchives = queue.table(
  'job_archives',
  {
    id: uuid('id').primaryKey(),
    seq: bigint('seq', { mode: 'number' }).notNull(),
    jobId: uuid('job_id')
      .notNull()
      .references(() => captionJobs.jobId, { onDelete: 'cascade' }),
    /** Null once the image is deleted; `image_path` stays as the record. */
    imageId: uuid('image_id').references(() => images.id, { onDelete: 'set null' }),
    imagePath: text('image_path').notNull(),
    perspective: text('perspective').notNull(),
    status: text('status').$type<ItemStatus>().notNull(),
    attempts: integer('attempts').notNull(),
    nextAttemptAt: tstz('next_attempt_at'),
    leaseOwner: text('lease_owner'),
    leaseExpiresAt: tstz('lease_expires_at'),
    error: text('error'),
    processingTime: integer('processing_time'),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull(),
    updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' }).notNull(),
    startedAt: tstz('started_at'),
    completedAt: tstz('completed_at'),
    archivedAt: timestamp('archived_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [
    check('job_archives_status_check', inList('status', ITEM_STATUSES)),
    index('job_archives_job_idx').on(t.jobId, t.seq),
  ],
);

/** `job_id` starts only when every `depends_on_job_id` has completed. */
export const jobDependencies = queue.table(
  'job_dependencies',
  {
    jobId: uuid('job_id')
      .notNull()
      .references(() => captionJobs.jobId, { onDelete: 'cascade' }),
    dependsOnJobId: uuid('depends_on_job_id')
      .notNull()
      .references(() => captionJobs.jobId, { onDelete: 'restrict' }),
  },
  (t) => [
    primaryKey({ columns: [t.jobId, t.dependsOnJobId] }),
    index('job_dependencies_depends_on_idx').on(t.dependsOnJobId),
    check('job_dependencies_not_self_check', sql`job_id <> depends_on_job_id`),
  ],
);

/**
 * Events to publish, written in the same transaction as the change they report (the outbox). The
 * notifier delivers them to the message broker in `seq` order per `stream`; live subscribers read
 * them by `seq`. A job's undelivered JOB_PROGRESS row is rewritten in place (new seq, new event id)
 * instead of piling up, so a fast job sends few progress events and the last one is exact.
 */
export const outboxSeq = queue.sequence('outbox_seq');

export const outbox = queue.table(
  'outbox',
  {
    id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
    /** Delivery and stream order; taken again when a coalesced row is rewritten. */
    seq: bigint('seq', { mode: 'number' }).notNull().default(sql`nextval('job_queue.outbox_seq')`),
    /** The event's id as receivers see it (they de-duplicate with it). */
    eventId: uuid('event_id').notNull().defaultRandom(),
    type: text('type').notNull(),
    /** Order is kept within a stream: `job:<id>`, `image:<id>` ... */
    stream: text('stream').notNull(),
    jobId: uuid('job_id'),
    data: jsonb('data').notNull(),
    requestId: text('request_id'),
    occurredAt: timestamp('occurred_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    deliveredAt: tstz('delivered_at'),
    attempts: integer('attempts').notNull().default(0),
    nextAttemptAt: tstz('next_attempt_at'),
    lastError: text('last_error'),
    /** Replica delivering it, and until when: a second replica leaves it alone meanwhile. */
    leaseOwner: text('lease_owner'),
    leaseExpiresAt: tstz('lease_expires_at'),
    /**
     * Set when the broker kept refusing the event (a 4xx other than 408/429) or it stayed undelivered
     * too long: it was moved aside (delivered_at is set too, so its stream's later events go out).
     */
    deadAt: tstz('dead_at'),
    /**
     * The writing transaction. Live readers take events only from transactions older than every
     * running one (pg_snapshot_xmin), so an event that commits late is never skipped.
     */
    xid: xid8('xid').notNull().default(sql`pg_current_xact_id()`),
  },
  (t) => [
    uniqueIndex('outbox_seq_key').on(t.seq),
    index('outbox_xid_idx').on(t.xid),
    index('outbox_undelivered_idx').on(t.stream, t.seq).where(sql`delivered_at is null`),
    index('outbox_delivered_idx').on(t.deliveredAt).where(sql`delivered_at is not null`),
    // At most one undelivered progress event per job: the coalescing target.
    uniqueIndex('outbox_pending_progress_key').on(t.jobId).where(sql`type = 'JOB_PROGRESS' and delivered_at is null`),
    index('outbox_job_seq_idx').on(t.jobId, t.seq),
    index('outbox_dead_idx').on(t.deadAt).where(sql`dead_at is not null`),
  ],
);

/**
 * Captions a job stored and no event has announced yet: one row per dispatcher commit, written in
 * its statement. The notifier rolls them up into CAPTION_CREATED events of up to a thousand ids
 * (src/db/data-events.ts), so a big job writes a bounded number of events, not one per caption.
 */
export const captionChanges = queue.table('caption_changes', {
  id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
  jobId: uuid('job_id').notNull(),
  captionIds: uuid('caption_ids').array().notNull(),
  createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
});

export const BREAKER_STATES = ['closed', 'open'] as const;
export type BreakerState = (typeof BREAKER_STATES)[number];

/**
 * What the dispatchers of every replica know about each (provider, model) the Inference Bridge
 * calls (src/db/provider-states.ts): an adaptive in-flight limit (AIMD: halved on throttling and
 * failures, grown by one per limit's worth of successes, never above the configured caps), a
 * Retry-After block, a circuit breaker (open: no calls until `open_until`, then one probe at a
 * time), and the latency figures that count as "slowing down". Shared here so three replicas do
 * not each hammer a provider that is already saying 429.
 */
export const providerStates = queue.table(
  'provider_states',
  {
    provider: text('provider').notNull(),
    model: text('model').notNull(),
    /** Calls in flight allowed, across replicas; fractional so additive increase can be gradual. */
    concurrencyLimit: doublePrecision('concurrency_limit').notNull(),
    /** No call before this (the provider's Retry-After). */
    blockedUntil: tstz('blocked_until'),
    breaker: text('breaker').$type<BreakerState>().notNull().default('closed'),
    /** Provider failures since the last success. */
    consecutiveFailures: integer('consecutive_failures').notNull().default(0),
    /** An open breaker lets one probe through after this. */
    openUntil: tstz('open_until'),
    /** Times the breaker opened since it last closed: the cool-down doubles with each. */
    openedCount: integer('opened_count').notNull().default(0),
    /** When the breaker first opened in the current outage (null while closed): long outages pause jobs. */
    outageSince: tstz('outage_since'),
    /** The last decrease: at most one per second, so one burst of 429s halves the limit once. */
    decreasedAt: tstz('decreased_at'),
    /** Fast and slow moving averages of successful calls' latency: the fast one well ahead = rising. */
    latencyMs: doublePrecision('latency_ms'),
    baselineLatencyMs: doublePrecision('baseline_latency_ms'),
    /** When the averages last took a sample: they weigh the next one by the time since. */
    latencyAt: tstz('latency_at'),
    updatedAt: updatedAt(),
  },
  (t) => [
    primaryKey({ columns: [t.provider, t.model] }),
    check('provider_states_breaker_check', inList('breaker', BREAKER_STATES)),
    check('provider_states_limit_check', sql`concurrency_limit >= 1`),
  ],
);
