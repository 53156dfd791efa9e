/**
 * Caption jobs: create, read, list, and the queue actions (cancel, reorder, archive, restore,
 * retry-failed). Every action that changes state locks the job row first, so state rules hold
 * under concurrent requests and replicas.
 */
import { sql, type SQL } from 'drizzle-orm';
import { currentRequestId } from '../logger.js';
import type { Sealed } from '../secrets.js';
import { recordJobCreated, recordJobProgress, recordJobStatusChange } from './outbox.js';
import { ConflictError, InvalidInputError, NotFoundError, type FieldError } from '../errors.js';
import { toWorkspaceRelative, workspacePathProblem } from '../workspace/paths.js';
import { CANCEL_CHANNEL, notifyWork } from './channels.js';
import type { Db, DbTime } from './client.js';
import { pgArray } from './sql.js';
import { findDataset } from './datasets.js';
import { IMAGE_DELETE_LOCK } from './images.js';
import { CHUNKED_ITEMS, ITEM_ID_PARTS, itemId, writeRemainingChunks } from './item-chunks.js';
import { findPerspectivesByName } from './perspectives.js';
import { providerProblems } from './providers.js';
import { FINISHED_JOB_STATUSES, type JobStatus, type JobType } from './schema.js';

export interface JobConfig {
  provider: string;
  model: string;
  /** Sealed at rest (src/secrets.ts); opened only to build a bridge call. */
  providerConfig?: Sealed;
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  repetitionPenalty?: number;
  globalContext?: string;
  context?: string[];
  resizeResolution?: string;
}

export interface JobRow {
  jobId: string;
  type: JobType;
  status: JobStatus;
  priority: number;
  /** 1-based place among the jobs that still have work; null once finished or archived. */
  queuePosition: number | null;
  perspectives: string[];
  datasetId: string | null;
  config: JobConfig;
  userId: string | null;
  idempotencyKey: string | null;
  totalImages: number;
  processedImages: number;
  failedImages: number;
  cancelledImages: number;
  progress: number;
  error: string | null;
  archived: boolean;
  archiveDate: DbTime | null;
  dependsOn: string[];
  createdAt: DbTime;
  updatedAt: DbTime;
  startedAt: DbTime | null;
  completedAt: DbTime | null;
  /** Seconds until a running job is estimated to finish, from its recent throughput; null when unknown or not running. */
  etaSeconds: number | null;
  /** A running job's recent throughput (the rate its ETA uses); null when unknown or not running. */
  itemsPerSecond: number | null;
}

/** Jobs that still have work: they hold a queue position (a paused one keeps its own). */
const ACTIVE = sql.raw(`('pending', 'running', 'paused')`);

/** Progress in percent from a row's counters, rounded to 2 places. */
export const PROGRESS_SQL = sql.raw(
  `case when total_images = 0 then 0 else round(((processed_images + failed_images) * 100.0 / total_images)::numeric, 2)::float8 end`,
);

/**
 * A running job's recent items per second, from the row alone (no item scan): the current window's
 * rate blended with the last full window's, moving to the current one as the window fills (a
 * minute); before any full window, the current one alone. Null unless running with an item finished.
 */
const ITEMS_PER_SECOND = `(
  select case when j.recent_items_per_second is null
                then case when j.rate_window_items > 0 then j.rate_window_items / w.secs end
              else least(w.secs / 60, 1) * (j.rate_window_items / w.secs)
                   + (1 - least(w.secs / 60, 1)) * j.recent_items_per_second end
  from (select greatest(extract(epoch from now() - coalesce(j.rate_window_started_at, j.started_at))::float8, 0.001) as secs) w
  where j.status = 'running')`;

/** The ETA of a running job: the items it has left over its recent rate (ITEMS_PER_SECOND). */
const ETA_SECONDS = sql.raw(`(
  select case when r.rate > 0 then ceil(greatest(r.remaining, 0) / r.rate)::int end
  from (select j.total_images - j.processed_images - j.failed_images - j.cancelled_images as remaining,
               ${ITEMS_PER_SECOND} as rate) r
  where j.status = 'running')`);

const JOB_COLUMNS = sql`
  j.job_id as "jobId", j.type, j.status, j.priority, j.perspectives, j.dataset_id as "datasetId",
  j.config, j.user_id as "userId", j.idempotency_key as "idempotencyKey",
  j.total_images as "totalImages", j.processed_images as "processedImages",
  j.failed_images as "failedImages", j.cancelled_images as "cancelledImages", j.progress, j.error,
  j.archived, j.archive_date as "archiveDate", j.created_at as "createdAt", j.updated_at as "updatedAt",
  j.started_at as "startedAt", j.completed_at as "completedAt", ${ETA_SECONDS} as "etaSeconds",
  ${sql.raw(ITEMS_PER_SECOND)} as "itemsPerSecond",
  case when j.status in ${ACTIVE} and not j.archived then (
    select count(*) + 1 from job_queue.caption_jobs q
    where q.status in ${ACTIVE} and not q.archived
      and (q.priority, q.queue_position, q.created_at, q.job_id) < (j.priority, j.queue_position, j.created_at, j.job_id)
  ) end as "queuePosition",
  coalesce((select array_agg(d.depends_on_job_id::text order by d.depends_on_job_id)
            from job_queue.job_dependencies d where d.job_id = j.job_id), '{}') as "dependsOn"`;

export async function getJob(db: Db, jobId: string): Promise<JobRow> {
  const { rows } = await db.execute<Record<string, unknown>>(
    sql`select ${JOB_COLUMNS} from job_queue.caption_jobs j where j.job_id = ${jobId}`,
  );
  if (!rows[0]) throw new NotFoundError(`job ${jobId} not found`);
  return rows[0] as unknown as JobRow;
}

// ---------------------------------------------------------------------------------------------
// Create

export interface CreateJobInput {
  type: JobType;
  perspectives: string[];
  imagePaths?: string[];
  datasetId?: string;
  datasetName?: string;
  priority: number;
  config: JobConfig;
  userId?: string;
  dependsOn?: string[];
  idempotencyKey?: string;
}

export interface CreateJobLimits {
  maxItems: number;
  /** Items written in the create; the rest go to job_item_chunks for the item writer (JOB_ITEM_CHUNK). */
  chunkItems: number;
}

type ImageSource = { kind: 'paths'; paths: string[] } | { kind: 'dataset'; datasetId: string };

/**
 * Creates the job in one transaction: one INSERT ... SELECT writes its first `chunkItems` items and
 * the rest as chunk rows (src/db/item-chunks.ts), however many. Unknown images, perspectives,
 * datasets or dependencies, or a job that would have no items, are refused with an
 * InvalidInputError naming them, and nothing is written.
 */
export async function createJob(db: Db, input: CreateJobInput, limits: CreateJobLimits): Promise<JobRow> {
  if (input.idempotencyKey) {
    const existing = await findJobByIdempotencyKey(db, input.idempotencyKey);
    if (existing) return existing;
  }
  const errors: FieldError[] = await providerProblems(db, input.config);

  const perspectiveNames = [...new Set(input.perspectives)];
  const found = new Map((await findPerspectivesByName(db, perspectiveNames)).map((p) => [p.name, p]));
  input.perspectives.forEach((name, i) => {
    const p = found.get(name);
    if (!p) errors.push({ path: `perspectives.${i}`, message: `unknown perspective ${JSON.stringify(name)}` });
    else if (!p.enabled) errors.push({ path: `perspectives.${i}`, message: `perspective ${JSON.stringify(name)} is disabled` });
  });

  let source: ImageSource | undefined;
  let imageCount = 0;
  // The stored form of each given path (undefined when it is refused), computed once.
  let normalised: (string | undefined)[] = [];
  if (input.imagePaths) {
    normalised = input.imagePaths.map((p, i) => {
      const problem = workspacePathProblem(p);
      if (!problem) return toWorkspaceRelative(p);
      errors.push({ path: `imagePaths.${i}`, message: problem });
      return undefined;
    });
    const unique = [...new Set(normalised.filter((p) => p !== undefined))];
    source = { kind: 'paths', paths: unique };
    // Whether every path is a registered image is checked by the item insert itself, which looks
    // them all up anyway (a 10,000-path create spent ~40 ms fetching and mapping 10,000 rows here
    // first); so this is the count when all are known, and the create is refused otherwise.
    imageCount = unique.length;
  } else {
    const dataset = await findDataset(db, { id: input.datasetId, name: input.datasetName });
    if (!dataset) {
      const field = input.datasetId ? 'datasetId' : 'datasetName';
      errors.push({ path: field, message: `unknown dataset ${JSON.stringify(input.datasetId ?? input.datasetName)}` });
    } else {
      source = { kind: 'dataset', datasetId: dataset.id };
      const { rows } = await db.execute<{ n: number }>(
        sql`select count(*) as n from core_schema.dataset_images where dataset_id = ${dataset.id}`,
      );
      imageCount = rows[0]?.n ?? 0;
    }
  }

  const dependsOn = [...new Set(input.dependsOn ?? [])];
  if (dependsOn.length > 0) {
    const { rows } = await db.execute<{ id: string }>(
      sql`select job_id as id from job_queue.caption_jobs where job_id = any(${pgArray(dependsOn)}::uuid[])`,
    );
    const known = new Set(rows.map((r) => r.id));
    (input.dependsOn ?? []).forEach((id, i) => {
      if (!known.has(id)) errors.push({ path: `dependsOn.${i}`, message: `unknown job ${id}` });
    });
  }

  const unknownImages = async (tx: Db) => {
    if (source?.kind !== 'paths') return;
    const unknown = new Set(await findUnknownImagePaths(tx, source.paths));
    normalised.forEach((p, i) => {
      if (p !== undefined && unknown.has(p)) {
        errors.push({ path: `imagePaths.${i}`, message: `unknown image ${JSON.stringify(input.imagePaths![i])} (not registered; sync its dataset first)` });
      }
    });
  };
  // A refused create names every failing field, unknown images too; so does one over the limit
  // that has unknown images (they, not the size, are what is wrong with it).
  if (errors.length > 0 || imageCount * perspectiveNames.length > limits.maxItems) await unknownImages(db);
  if (errors.length > 0) throw new InvalidInputError(summarise(errors), errors);
  if (imageCount * perspectiveNames.length > limits.maxItems) {
    throw new InvalidInputError(
      `the job would have ${imageCount * perspectiveNames.length} items, more than the limit of ${limits.maxItems}`,
    );
  }

  const ids = perspectiveNames.map((n) => found.get(n)!.id);
  const chunk = limits.chunkItems;
  return db.transaction(async (tx) => {
    // Before the images are read: an image deleted after this waits for the commit and then sees
    // the job's items and chunks (chunk rows have no reference check of their own).
    await tx.execute(sql`select pg_advisory_xact_lock_shared(${IMAGE_DELETE_LOCK})`);
    const { rows: inserted } = await tx.execute<{ jobId: string }>(sql`
      insert into job_queue.caption_jobs
        (type, priority, perspectives, dataset_id, config, user_id, idempotency_key, request_id)
      values (${input.type}, ${input.priority}, ${pgArray(perspectiveNames)}::text[],
              ${source?.kind === 'dataset' ? source.datasetId : null}, ${JSON.stringify(input.config)}::jsonb,
              ${input.userId ?? null}, ${input.idempotencyKey ?? null}, ${currentRequestId() ?? null})
      on conflict (idempotency_key) do nothing
      returning job_id as "jobId"`);
    const jobId = inserted[0]?.jobId;
    if (!jobId) {
      // A concurrent create with the same key won the race: answer with its job.
      return (await findJobByIdempotencyKey(tx, input.idempotencyKey!))!;
    }

    const images =
      source!.kind === 'paths'
        ? sql`(select id, path from core_schema.images where path = any(${pgArray(source!.paths)}::text[]))`
        : sql`(select im.id, im.path from core_schema.dataset_images di
               join core_schema.images im on im.id = di.image_id where di.dataset_id = ${source!.datasetId})`;
    const onlyMissing =
      input.type === 'BACKFILL'
        ? sql`where not exists (select 1 from core_schema.captions c where c.image_id = i.id and c.perspective_id = p.id)
                and not exists (select 1 from job_queue.job_items q where q.image_id = i.id and q.perspective = p.name
                                and q.status in ('pending', 'running'))
                and not exists (select 1 from ${CHUNKED_ITEMS} q where q.image_id = i.id and q.perspective = p.name)`
        : sql``;
    const { rows: counted } = await tx.execute<{ images: number; items: number }>(sql`
      with i as ${images},
      picked as (
        select i.id, i.path, p.name, p.ord, row_number() over (order by i.path, p.ord) - 1 as n
        from i
        cross join unnest(${pgArray(perspectiveNames)}::text[], ${pgArray(ids)}::uuid[]) with ordinality as p(name, id, ord)
        ${onlyMissing}),
      inserted as (
        insert into job_queue.job_items (id, job_id, image_id, image_path, perspective)
        select ${itemId(sql`picked.n`)}, ${jobId}, picked.id, picked.path, picked.name
        from picked cross join ${ITEM_ID_PARTS} as k
        where picked.n < ${chunk}::int
        order by picked.n
        returning 1),
      chunked as (
        insert into job_queue.job_item_chunks (job_id, first_item, image_ids, image_paths, perspectives)
        select ${jobId}, min(n)::int, array_agg(id order by n), array_agg(path order by n), array_agg(name order by n)
        from picked where n >= ${chunk}::int group by n / ${chunk}::int
        returning cardinality(image_ids) as n)
      select (select count(*) from i) as images,
             (select count(*) from inserted) + (select coalesce(sum(n), 0) from chunked) as items`);
    if (source!.kind === 'paths' && counted[0]!.images < source!.paths.length) {
      // Some paths are not registered images: refused, and the transaction (job row and all) rolls back.
      await unknownImages(tx);
      throw new InvalidInputError(summarise(errors), errors);
    }
    const total = counted[0]!.items;
    if (total === 0) {
      throw new InvalidInputError(
        input.type === 'BACKFILL'
          ? 'the job would have no items: every (image, perspective) pair already has a caption or is queued'
          : 'the job would have no items: the image selection is empty',
      );
    }
    await tx.execute(sql`update job_queue.caption_jobs set total_images = ${total} where job_id = ${jobId}`);
    if (dependsOn.length > 0) {
      await tx.execute(sql`
        insert into job_queue.job_dependencies (job_id, depends_on_job_id)
        select ${jobId}, unnest(${pgArray(dependsOn)}::uuid[])`);
    }
    await recordJobCreated(tx, jobId);
    await notifyWork(tx);
    return getJob(tx, jobId);
  });
}

/** The stored paths among `paths` that are no registered image (normally none: no rows come back). */
async function findUnknownImagePaths(db: Db, paths: string[]): Promise<string[]> {
  const { rows } = await db.execute<{ path: string }>(sql`
    select p.path from unnest(${pgArray(paths)}::text[]) as p(path)
    where not exists (select 1 from core_schema.images i where i.path = p.path)`);
  return rows.map((r) => r.path);
}

async function findJobByIdempotencyKey(db: Db, key: string): Promise<JobRow | undefined> {
  const { rows } = await db.execute<Record<string, unknown>>(
    sql`select ${JOB_COLUMNS} from job_queue.caption_jobs j where j.idempotency_key = ${key}`,
  );
  return rows[0] as unknown as JobRow | undefined;
}

function summarise(errors: FieldError[]): string {
  const shown = errors.slice(0, 5).map((e) => `${e.path}: ${e.message}`);
  const more = errors.length > 5 ? ` (and ${errors.length - 5} more)` : '';
  return `the job cannot be created: ${shown.join('; ')}${more}`;
}

// ---------------------------------------------------------------------------------------------
// List

export const JOB_SORT_KEYS = ['queue', 'createdAt', 'updatedAt', 'priority', 'progress', 'status'] as const;
export type JobSortKey = (typeof JOB_SORT_KEYS)[number];

export interface ListJobsInput {
  status?: JobStatus[];
  type?: JobType[];
  userId?: string;
  archived: boolean;
  createdFrom?: string;
  createdTo?: string;
  sort: JobSortKey;
  order: 'asc' | 'desc';
  page: number;
  limit: number;
}

export async function listJobs(db: Db, input: ListJobsInput): Promise<{ items: JobRow[]; total: number }> {
  const where: SQL[] = [sql`j.archived = ${input.archived}`];
  if (input.status?.length) where.push(sql`j.status = any(${pgArray(input.status)}::text[])`);
  if (input.type?.length) where.push(sql`j.type = any(${pgArray(input.type)}::text[])`);
  if (input.userId !== undefined) where.push(sql`j.user_id = ${input.userId}`);
  if (input.createdFrom) where.push(sql`j.created_at >= ${input.createdFrom}::timestamptz`);
  if (input.createdTo) where.push(sql`j.created_at < ${input.createdTo}::timestamptz`);
  const condition = sql.join(where, sql` and `);

  const dir = sql.raw(input.order === 'desc' ? 'desc' : 'asc');
  const orderBy = {
    queue: sql`j.priority ${dir}, j.queue_position ${dir}, j.created_at ${dir}`,
    createdAt: sql`j.created_at ${dir}`,
    updatedAt: sql`j.updated_at ${dir}`,
    priority: sql`j.priority ${dir}, j.queue_position ${dir}`,
    progress: sql`j.progress ${dir}`,
    status: sql`j.status ${dir}`,
  }[input.sort];

  const { rows } = await db.execute<Record<string, unknown>>(sql`
    select ${JOB_COLUMNS} from job_queue.caption_jobs j where ${condition}
    order by ${orderBy}, j.job_id ${dir}
    limit ${input.limit} offset ${(input.page - 1) * input.limit}`);
  const { rows: counted } = await db.execute<{ n: number }>(
    sql`select count(*) as n from job_queue.caption_jobs j where ${condition}`,
  );
  return { items: rows as unknown as JobRow[], total: counted[0]?.n ?? 0 };
}

// ---------------------------------------------------------------------------------------------
// Queue actions

interface LockedJob {
  status: JobStatus;
  archived: boolean;
}

/** Locks the job row for the rest of the transaction; 404 when it does not exist. */
export async function lockJob(tx: Db, jobId: string): Promise<LockedJob> {
  const { rows } = await tx.execute<{ status: JobStatus; archived: boolean }>(
    sql`select status, archived from job_queue.caption_jobs where job_id = ${jobId} for update`,
  );
  if (!rows[0]) throw new NotFoundError(`job ${jobId} not found`);
  return rows[0];
}

function isFinished(status: JobStatus): boolean {
  return (FINISHED_JOB_STATUSES as readonly string[]).includes(status);
}

/** Cancels a pending, running or paused job: its unfinished items are cancelled, dispatch stops. */
export async function cancelJob(db: Db, jobId: string): Promise<JobRow> {
  return db.transaction(async (tx) => {
    const job = await lockJob(tx, jobId);
    if (job.archived) throw new ConflictError(`job ${jobId} is archived`);
    if (isFinished(job.status)) throw new ConflictError(`job ${jobId} is already ${job.status}; only pending, running or paused jobs can be cancelled`);
    // Items not yet written are cancelled too, as items: the job's record lists every one.
    await writeRemainingChunks(tx, jobId);
    const result = await tx.execute(sql`
      update job_queue.job_items
      set status = 'cancelled', lease_owner = null, lease_expires_at = null, next_attempt_at = null,
          completed_at = now(), updated_at = now()
      where job_id = ${jobId} and status in ('pending', 'running')`);
    await tx.execute(sql`
      update job_queue.caption_jobs
      set status = 'cancelled', cancelled_images = cancelled_images + ${result.rowCount ?? 0},
          error = coalesce(error, 'cancelled by request'), completed_at = now(), updated_at = now()
      where job_id = ${jobId}`);
    await recordJobStatusChange(tx, jobId, job.status, 'cancelled by request');
    await tx.execute(sql`select pg_notify(${CANCEL_CHANNEL}, ${jobId})`);
    // A freed slot: the next job may start.
    await notifyWork(tx);
    return getJob(tx, jobId);
  });
}

/**
 * Pauses a pending or running job: nothing new is dispatched, items in flight finish and are
 * recorded as usual, and the job no longer holds a job slot (the dispatcher only starts `pending`
 * jobs and counts `running` ones). Its queue position stays.
 */
export async function pauseJob(db: Db, jobId: string): Promise<JobRow> {
  return db.transaction(async (tx) => {
    const job = await lockJob(tx, jobId);
    if (job.archived) throw new ConflictError(`job ${jobId} is archived`);
    if (job.status !== 'pending' && job.status !== 'running') {
      throw new ConflictError(`job ${jobId} is ${job.status}; only pending or running jobs can be paused`);
    }
    await tx.execute(sql`update job_queue.caption_jobs set status = 'paused', updated_at = now() where job_id = ${jobId}`);
    await recordJobStatusChange(tx, jobId, job.status, 'paused by request');
    // A freed slot: the next job may start.
    await notifyWork(tx);
    return getJob(tx, jobId);
  });
}

/** Resumes a paused job: back to pending, at its old queue position; it starts when a slot is free. */
export async function resumeJob(db: Db, jobId: string): Promise<JobRow> {
  return db.transaction(async (tx) => {
    const job = await lockJob(tx, jobId);
    if (job.archived) throw new ConflictError(`job ${jobId} is archived`);
    if (job.status !== 'paused') throw new ConflictError(`job ${jobId} is ${job.status}; only paused jobs can be resumed`);
    // A reason it was paused for (its provider, say) is over; resumed_at restarts the outage clock.
    await tx.execute(sql`
      update job_queue.caption_jobs set status = 'pending', error = null, resumed_at = now(), updated_at = now()
      where job_id = ${jobId}`);
    await recordJobStatusChange(tx, jobId, job.status, 'resumed by request');
    await notifyWork(tx);
    return getJob(tx, jobId);
  });
}

export interface ReorderInput {
  /** Move jobs to 1-based places in the queue of jobs that still have work. */
  moves?: { jobId: string; position: number }[];
  /** Set priorities (lower runs first). */
  priorities?: { jobId: string; priority: number }[];
}

export interface QueueEntry {
  jobId: string;
  position: number;
  priority: number;
  status: JobStatus;
}

/**
 * Changes queue order. Priorities are applied first, then moves, in the order given. A moved job
 * takes the priority of the job it lands in front of (or behind, at the end), so it really is at
 * the place asked for, since priority decides order before position.
 */
export async function reorderJobs(db: Db, input: ReorderInput): Promise<QueueEntry[]> {
  return db.transaction(async (tx) => {
    const named = [...(input.priorities ?? []), ...(input.moves ?? [])].map((m) => m.jobId);
    const { rows: targets } = await tx.execute<{ jobId: string; status: JobStatus; archived: boolean }>(sql`
      select job_id as "jobId", status, archived from job_queue.caption_jobs
      where job_id = any(${pgArray(named)}::uuid[]) order by job_id for update`);
    const byId = new Map(targets.map((t) => [t.jobId, t]));
    const errors: FieldError[] = [];
    for (const [field, list] of [['priorities', input.priorities ?? []], ['moves', input.moves ?? []]] as const) {
      list.forEach((m, i) => {
        const t = byId.get(m.jobId);
        if (!t) errors.push({ path: `${field}.${i}.jobId`, message: `unknown job ${m.jobId}` });
      });
    }
    if (errors.length > 0) throw new NotFoundError(summariseNotFound(errors));
    for (const t of targets) {
      if (t.archived || isFinished(t.status)) {
        throw new ConflictError(`job ${t.jobId} is ${t.archived ? 'archived' : t.status}; only pending, running or paused jobs can be reordered`);
      }
    }

    for (const p of input.priorities ?? []) {
      await tx.execute(sql`update job_queue.caption_jobs set priority = ${p.priority}, updated_at = now() where job_id = ${p.jobId}`);
    }
    if (input.moves?.length) {
      const queue = await readQueue(tx, true);
      for (const move of input.moves) {
        const from = queue.findIndex((q) => q.jobId === move.jobId);
        const [entry] = queue.splice(from, 1);
        const at = Math.min(move.position, queue.length + 1) - 1;
        queue.splice(at, 0, entry!);
        const neighbour = queue[at + 1] ?? queue[at - 1];
        if (neighbour) entry!.priority = neighbour.priority;
      }
      await tx.execute(sql`
        update job_queue.caption_jobs j
        set queue_position = n.ord, priority = n.priority, updated_at = now()
        from unnest(${pgArray(queue.map((q) => q.jobId))}::uuid[], ${pgArray(queue.map((q) => q.priority))}::int[])
             with ordinality as n(job_id, priority, ord)
        where j.job_id = n.job_id and (j.queue_position <> n.ord or j.priority <> n.priority)`);
    }
    await notifyWork(tx);
    return readQueue(tx, false);
  });
}

function summariseNotFound(errors: FieldError[]): string {
  return errors.map((e) => `${e.path}: ${e.message}`).join('; ');
}

/** The jobs that still have work, in queue order. */
async function readQueue(db: Db, lock: boolean): Promise<QueueEntry[]> {
  const { rows } = await db.execute<Omit<QueueEntry, 'position'>>(sql`
    select job_id as "jobId", priority, status from job_queue.caption_jobs
    where status in ${ACTIVE} and not archived
    order by priority, queue_position, created_at, job_id
    ${lock ? sql`for update` : sql``}`);
  return rows.map((r, i) => ({ ...r, position: i + 1 }));
}

const ITEM_COLUMNS = sql.raw(
  `id, seq, job_id, image_id, image_path, perspective, status, attempts, next_attempt_at, lease_owner,
   lease_expires_at, error, processing_time, created_at, updated_at, started_at, completed_at`,
);

/** Archives a finished job: its items move to job_archives. */
export async function archiveJob(db: Db, jobId: string): Promise<JobRow> {
  return db.transaction(async (tx) => {
    const job = await lockJob(tx, jobId);
    if (job.archived) throw new ConflictError(`job ${jobId} is already archived`);
    if (!isFinished(job.status)) throw new ConflictError(`job ${jobId} is ${job.status}; only finished jobs can be archived`);
    await tx.execute(sql`
      with moved as (delete from job_queue.job_items where job_id = ${jobId} returning ${ITEM_COLUMNS})
      insert into job_queue.job_archives (${ITEM_COLUMNS}) select ${ITEM_COLUMNS} from moved`);
    await tx.execute(sql`
      update job_queue.caption_jobs set archived = true, archive_date = now(), updated_at = now()
      where job_id = ${jobId}`);
    return getJob(tx, jobId);
  });
}

/** Brings an archived job back: its items return to job_items. */
export async function restoreJob(db: Db, jobId: string): Promise<JobRow> {
  return db.transaction(async (tx) => {
    const job = await lockJob(tx, jobId);
    if (!job.archived) throw new ConflictError(`job ${jobId} is not archived`);
    await tx.execute(sql`
      with moved as (delete from job_queue.job_archives where job_id = ${jobId} returning ${ITEM_COLUMNS})
      insert into job_queue.job_items (${ITEM_COLUMNS}) overriding system value
      select ${ITEM_COLUMNS} from moved`);
    await tx.execute(sql`
      update job_queue.caption_jobs set archived = false, archive_date = null, updated_at = now()
      where job_id = ${jobId}`);
    await notifyWork(tx);
    return getJob(tx, jobId);
  });
}

/** Puts a partial or failed job's failed items back in the queue; returns how many. */
export async function retryFailedItems(db: Db, jobId: string): Promise<{ retried: number; job: JobRow }> {
  return db.transaction(async (tx) => {
    const job = await lockJob(tx, jobId);
    if (job.archived) throw new ConflictError(`job ${jobId} is archived; restore it first`);
    if (job.status !== 'partial' && job.status !== 'failed') {
      throw new ConflictError(`job ${jobId} is ${job.status}; only partial or failed jobs can be retried`);
    }
    const result = await tx.execute(sql`
      update job_queue.job_items
      set status = 'pending', attempts = 0, error = null, next_attempt_at = null, processing_time = null,
          started_at = null, completed_at = null, updated_at = now()
      where job_id = ${jobId} and status = 'failed' and image_id is not null`);
    // Items whose image was deleted since stay failed: there is nothing left to caption.
    const retried = result.rowCount ?? 0;
    // Back to pending with nothing to run, the job would never finish again.
    if (retried === 0) throw new ConflictError(`job ${jobId} has no failed item that can be retried`);
    await tx.execute(sql`
      update job_queue.caption_jobs
      set status = 'pending', failed_images = failed_images - ${retried}, error = null, completed_at = null,
          updated_at = now()
      where job_id = ${jobId}`);
    await tx.execute(sql`update job_queue.caption_jobs set progress = ${PROGRESS_SQL} where job_id = ${jobId}`);
    await recordJobStatusChange(tx, jobId, job.status, `${retried} failed item(s) retried`);
    await recordJobProgress(tx, jobId);
    await notifyWork(tx);
    return { retried, job: await getJob(tx, jobId) };
  });
}

/** Unfinished jobs whose config holds sealed provider secrets (they need SECRETS_KEY to run). */
export async function countJobsWithSecrets(db: Db): Promise<number> {
  const { rows } = await db.execute<{ n: number }>(sql`
    select count(*) as n from job_queue.caption_jobs
    where status in ${ACTIVE} and not archived and config ? 'providerConfig'`);
  return rows[0]?.n ?? 0;
}
