/**
 * Job items: listing, and the recording of outcomes (the item, its caption and the job's counters
 * and status in one transaction). The internal item-update endpoint and the dispatcher both record
 * through here.
 */
import { sql, type SQL } from 'drizzle-orm';
import { ConflictError, InvalidInputError, NotFoundError } from '../errors.js';
import type { Db, DbTime } from './client.js';
import { getJob, notifyWork, pgArray, PROGRESS_SQL } from './jobs.js';
import { recordJobProgress, recordJobStatusChange } from './outbox.js';
import type { ItemStatus } from './schema.js';

export interface ItemRow {
  itemId: string;
  jobId: string;
  /** Null once the image was deleted (only finished items; see deleteImagesIn). */
  imageId: string | null;
  imagePath: string;
  perspective: string;
  status: ItemStatus;
  attempts: number;
  nextAttemptAt: DbTime | null;
  error: string | null;
  processingTime: number | null;
  captionId: string | null;
  result: Record<string, unknown> | null;
  createdAt: DbTime;
  updatedAt: DbTime;
  startedAt: DbTime | null;
  completedAt: DbTime | null;
}

const itemColumns = (table: SQL) => sql`
  i.id as "itemId", i.job_id as "jobId", i.image_id as "imageId", i.image_path as "imagePath", i.perspective,
  i.status, i.attempts, i.next_attempt_at as "nextAttemptAt", i.error, i.processing_time as "processingTime",
  c.id as "captionId", c.result, i.created_at as "createdAt", i.updated_at as "updatedAt",
  i.started_at as "startedAt", i.completed_at as "completedAt"
  from ${table} i left join core_schema.captions c on c.item_id = i.id`;

export interface ListItemsInput {
  status?: ItemStatus[];
  perspective?: string;
  page: number;
  limit: number;
}

/** A page of the job's items in their original order; reads job_archives for an archived job. */
export async function listItems(
  db: Db,
  jobId: string,
  input: ListItemsInput,
): Promise<{ items: ItemRow[]; total: number }> {
  const job = await getJob(db, jobId);
  const table = sql.raw(job.archived ? 'job_queue.job_archives' : 'job_queue.job_items');
  const where: SQL[] = [sql`i.job_id = ${jobId}`];
  if (input.status?.length) where.push(sql`i.status = any(${pgArray(input.status)}::text[])`);
  if (input.perspective !== undefined) where.push(sql`i.perspective = ${input.perspective}`);
  const condition = sql.join(where, sql` and `);
  const { rows } = await db.execute<Record<string, unknown>>(sql`
    select ${itemColumns(table)} where ${condition}
    order by i.seq limit ${input.limit} offset ${(input.page - 1) * input.limit}`);
  const { rows: counted } = await db.execute<{ n: number }>(
    sql`select count(*) as n from ${table} i where ${condition}`,
  );
  return { items: rows as unknown as ItemRow[], total: counted[0]?.n ?? 0 };
}

export async function getItem(db: Db, itemId: string): Promise<ItemRow> {
  const { rows } = await db.execute<Record<string, unknown>>(
    sql`select ${itemColumns(sql.raw('job_queue.job_items'))} where i.id = ${itemId}`,
  );
  if (!rows[0]) throw new NotFoundError(`item ${itemId} not found`);
  return rows[0] as unknown as ItemRow;
}

// ---------------------------------------------------------------------------------------------
// Updates from an external executor

export interface ItemUpdate {
  status: ItemStatus;
  result?: Record<string, unknown>;
  error?: string;
  processingTime?: number;
  model?: string;
  provider?: string;
}

/** The transitions an item can make; anything else is a 409. */
const TRANSITIONS: Record<ItemStatus, readonly ItemStatus[]> = {
  pending: ['running', 'cancelled'],
  running: ['completed', 'failed', 'pending', 'cancelled'],
  completed: [],
  failed: [],
  cancelled: [],
};

/**
 * Applies an executor's update to one item. A repeated identical update is accepted and changes
 * nothing; a transition that does not exist is refused. Finishing updates also store the caption
 * (at most one per item) and roll the job's counters and status forward, in one transaction.
 */
export async function updateItem(db: Db, itemId: string, update: ItemUpdate): Promise<ItemRow> {
  if (update.status === 'completed' && !update.result) {
    throw new InvalidInputError('a completed item needs a result', [{ path: 'result', message: 'required when status is completed' }]);
  }
  await db.transaction(async (tx) => {
    const { rows } = await tx.execute<{ status: ItemStatus; jobId: string; jobStatus: string; error: string | null }>(sql`
      select i.status, i.job_id as "jobId", j.status as "jobStatus", i.error
      from job_queue.job_items i join job_queue.caption_jobs j on j.job_id = i.job_id
      where i.id = ${itemId} for update of i, j`);
    const current = rows[0];
    if (!current) {
      const { rows: archived } = await tx.execute(sql`select 1 from job_queue.job_archives where id = ${itemId}`);
      if (archived.length > 0) throw new ConflictError(`item ${itemId} belongs to an archived job`);
      throw new NotFoundError(`item ${itemId} not found`);
    }
    if (current.status === update.status) {
      if (await isSameOutcome(tx, itemId, current, update)) return;
      throw new ConflictError(`item ${itemId} is already ${current.status} with a different outcome`);
    }
    if (!TRANSITIONS[current.status].includes(update.status)) {
      throw new ConflictError(`item ${itemId} cannot go from ${current.status} to ${update.status}`);
    }
    await applyTransition(tx, itemId, current.jobId, current.status, update);
  });
  return getItem(db, itemId);
}

async function isSameOutcome(
  tx: Db,
  itemId: string,
  current: { status: ItemStatus; error: string | null },
  update: ItemUpdate,
): Promise<boolean> {
  if (update.status === 'failed') return (update.error ?? null) === current.error || update.error === undefined;
  if (update.status !== 'completed') return true;
  const { rows } = await tx.execute<{ same: boolean }>(sql`
    select result = ${JSON.stringify(update.result)}::jsonb as same from core_schema.captions where item_id = ${itemId}`);
  return rows[0]?.same ?? false;
}

async function applyTransition(tx: Db, itemId: string, jobId: string, from: ItemStatus, update: ItemUpdate): Promise<void> {
  const to = update.status;
  if (to === 'running') {
    await tx.execute(sql`
      update job_queue.job_items
      set status = 'running', attempts = attempts + 1, started_at = now(), updated_at = now()
      where id = ${itemId}`);
    const started = await tx.execute(sql`
      update job_queue.caption_jobs set status = 'running', started_at = coalesce(started_at, now()), updated_at = now()
      where job_id = ${jobId} and status = 'pending'`);
    if (started.rowCount) await recordJobStatusChange(tx, jobId, 'pending');
    return;
  }
  if (to === 'pending') {
    await tx.execute(sql`
      update job_queue.job_items
      set status = 'pending', error = ${update.error ?? null}, lease_owner = null, lease_expires_at = null, updated_at = now()
      where id = ${itemId}`);
    await notifyWork(tx);
    return;
  }
  // completed, failed, cancelled: a final state.
  if (to === 'completed') {
    await insertItemCaption(tx, itemId, { result: update.result!, model: update.model, provider: update.provider });
  }
  await tx.execute(sql`
    update job_queue.job_items
    set status = ${to}, error = ${to === 'failed' ? (update.error ?? 'failed') : null},
        processing_time = coalesce(${update.processingTime ?? null}::int, processing_time),
        attempts = case when ${from} = 'pending' then attempts + 1 else attempts end,
        lease_owner = null, lease_expires_at = null, completed_at = now(), updated_at = now()
    where id = ${itemId}`);
  await rollUpJob(tx, jobId, {
    completed: to === 'completed' ? 1 : 0,
    failed: to === 'failed' ? 1 : 0,
    cancelled: to === 'cancelled' ? 1 : 0,
  });
}

/**
 * Stores the caption an item made: its result, the perspective's id, version and revision, and the
 * model and provider (the job config's unless given). At most one per item, however often this runs.
 */
export async function insertItemCaption(
  tx: Db,
  itemId: string,
  caption: { result: Record<string, unknown>; rawText?: string; model?: string; provider?: string },
): Promise<void> {
  await tx.execute(sql`
    insert into core_schema.captions
      (image_id, perspective_id, perspective_version, perspective_revision, model, provider, result, raw_text, job_id, item_id)
    select i.image_id, p.id, p.version, p.revision,
           coalesce(${caption.model ?? null}, j.config->>'model'), coalesce(${caption.provider ?? null}, j.config->>'provider'),
           ${JSON.stringify(caption.result)}::jsonb, ${caption.rawText ?? null}, i.job_id, i.id
    from job_queue.job_items i
    join job_queue.caption_jobs j on j.job_id = i.job_id
    join core_schema.perspectives p on p.name = i.perspective
    where i.id = ${itemId} and i.image_id is not null
    on conflict (item_id) do nothing`);
}

/** Seconds after which the throughput window of a job rolls over (see the ETA in jobs.ts). */
const RATE_WINDOW_SECONDS = 60;

/**
 * The ETA's throughput figures on the job row, for `finished` more items (SET clauses; every one
 * reads the row as it was): a window older than RATE_WINDOW_SECONDS becomes the recent rate and a
 * new one starts. A window that was never started counts from the job's start.
 */
const ROLL_RATE_WINDOW = (finished: number) => {
  const start = sql`coalesce(rate_window_started_at, started_at)`;
  const rolled = sql`(${start} is not null and now() - ${start} >= make_interval(secs => ${RATE_WINDOW_SECONDS}))`;
  return sql`
    recent_items_per_second = case when ${rolled}
      then (rate_window_items + ${finished}) / greatest(extract(epoch from now() - ${start})::float8, 0.001)
      else recent_items_per_second end,
    rate_window_items = case when ${rolled} then 0 else rate_window_items + ${finished} end,
    rate_window_started_at = case when ${rolled} or ${start} is null then now() else ${start} end`;
};

/**
 * Adds finished items to the job's counters and, when nothing is left to run, gives the job its
 * final status: completed (no failures), failed (nothing succeeded), partial otherwise. A paused
 * job finishes here too once its last item is done (all counted: none is left pending), never
 * before.
 */
export async function rollUpJob(
  tx: Db,
  jobId: string,
  delta: { completed: number; failed: number; cancelled: number },
): Promise<void> {
  await tx.execute(sql`
    update job_queue.caption_jobs
    set processed_images = processed_images + ${delta.completed},
        failed_images = failed_images + ${delta.failed},
        cancelled_images = cancelled_images + ${delta.cancelled},
        ${ROLL_RATE_WINDOW(delta.completed + delta.failed)},
        updated_at = now()
    where job_id = ${jobId}`);
  const { rows } = await tx.execute<{ before: string; finished: boolean }>(sql`
    with before as (select status from job_queue.caption_jobs where job_id = ${jobId})
    update job_queue.caption_jobs
    set progress = ${PROGRESS_SQL},
        status = case
          when status in ('pending', 'running', 'paused') and processed_images + failed_images + cancelled_images >= total_images then
            case when failed_images = 0 and cancelled_images = 0 then 'completed'
                 when processed_images = 0 and failed_images > 0 then 'failed'
                 when processed_images = 0 then 'cancelled'
                 else 'partial' end
          else status end,
        completed_at = case
          when status in ('pending', 'running', 'paused') and processed_images + failed_images + cancelled_images >= total_images
          then now() else completed_at end
    where job_id = ${jobId}
    returning (select status from before) as before,
              ((select status from before) in ('pending', 'running', 'paused') and status not in ('pending', 'running', 'paused')) as finished`);
  await recordJobProgress(tx, jobId);
  if (rows[0]?.finished) {
    await recordJobStatusChange(tx, jobId, rows[0].before);
    // A job that just finished frees a slot.
    await notifyWork(tx);
  }
}
