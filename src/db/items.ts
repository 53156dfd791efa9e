/**
 * Job items: listing, and the recording of outcomes (the item, its caption and the job's counters
 * and status in one transaction). The internal item-update endpoint and the dispatcher both record
 * through here.
 */
import { sql, type SQL } from 'drizzle-orm';
import { ConflictError, InvalidInputError, NotFoundError } from '../errors.js';
import type { Db, DbTime } from './client.js';
import { JOB_FINISHED, notifyWork, WORK_CHANNEL } from './channels.js';
import { getJob, type JobRow } from './jobs.js';
import { stageCaptionChanges } from './data-events.js';
import { pgArray } from './sql.js';
import { EVENTS_CHANNEL, insertJobEvents, jobEventColumns, recordJobStatusChange } from './outbox.js';
import { ITEM_STATUSES, type ItemStatus, type JobStatus } from './schema.js';

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

/**
 * A page of the job's items in their original order; reads job_archives for an archived job. Pass
 * the job's row when it is at hand (GET /status has read it), to spare reading it again.
 *
 * The cost follows the page, not the job: a live job's items are read through (job_id, status, seq),
 * the first page-end items of each status, merged by seq (one `(job_id, seq)` order across statuses
 * would need another index on the busiest table); unfiltered, the total is the job's item count
 * (`total_images`: items are made with the job and leave only with it; for a moment after the
 * create of a big job, the last pages wait for the item writer). Read as one filter, a
 * 4,000-item job cost ~25 ms per page: every item fetched and sorted, then all of them counted.
 */
export async function listItems(
  db: Db,
  jobId: string,
  input: ListItemsInput,
  job?: Pick<JobRow, 'archived' | 'totalImages'>,
): Promise<{ items: ItemRow[]; total: number }> {
  job ??= await getJob(db, jobId);
  const offset = (input.page - 1) * input.limit;
  const statuses = input.status?.length ? [...new Set(input.status)] : undefined;
  const where: SQL[] = [sql`i.job_id = ${jobId}`];
  if (statuses) where.push(sql`i.status = any(${pgArray(statuses)}::text[])`);
  if (input.perspective !== undefined) where.push(sql`i.perspective = ${input.perspective}`);
  const condition = sql.join(where, sql` and `);

  let source: SQL;
  if (job.archived) source = sql.raw('job_queue.job_archives');
  else if (input.perspective !== undefined) source = sql.raw('job_queue.job_items');
  else {
    const ranges = (statuses ?? ITEM_STATUSES).map(
      (status) => sql`(select * from job_queue.job_items where job_id = ${jobId} and status = ${status} order by seq limit ${offset + input.limit})`,
    );
    source = sql`(${sql.join(ranges, sql` union all `)})`;
  }
  const { rows } = await db.execute<Record<string, unknown>>(sql`
    select ${itemColumns(source)} where ${condition}
    order by i.seq limit ${input.limit} offset ${offset}`);
  if (!statuses && input.perspective === undefined) return { items: rows as unknown as ItemRow[], total: job.totalImages };
  const table = sql.raw(job.archived ? 'job_queue.job_archives' : 'job_queue.job_items');
  const { rows: counted } = await db.execute<{ n: number }>(sql`select count(*) as n from ${table} i where ${condition}`);
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
    await insertItemCaptions(tx, [{ itemId, result: update.result!, model: update.model, provider: update.provider }]);
  }
  await tx.execute(sql`
    update job_queue.job_items
    set status = ${to}, error = ${to === 'failed' ? (update.error ?? 'failed') : null},
        processing_time = coalesce(${update.processingTime ?? null}::int, processing_time),
        attempts = case when ${from} = 'pending' then attempts + 1 else attempts end,
        lease_owner = null, lease_expires_at = null, completed_at = now(), updated_at = now()
    where id = ${itemId}`);
  await rollUpJobs(tx, [{
    jobId,
    completed: to === 'completed' ? 1 : 0,
    failed: to === 'failed' ? 1 : 0,
    cancelled: to === 'cancelled' ? 1 : 0,
  }]);
}

/** A caption an item made; model and provider default to the job config's. */
export interface ItemCaption {
  itemId: string;
  result: Record<string, unknown>;
  rawText?: string | null;
  model?: string;
  provider?: string;
}

/**
 * The INSERT that stores captions items made, from `source`: a relation with the columns item_id,
 * image_id, perspective, job_id, result, raw_text, model and provider (null: the job config's).
 * Each caption gets its perspective's id, version and revision; at most one per item, however
 * often this runs; each waits to be written back to graphcap's captions.jsonl
 * (src/jobs/caption-exporter.ts) and to be announced (stageCaptionChanges). A fragment, so the
 * dispatcher can store captions in the statement that records its items; returns id and job_id.
 */
export const insertCaptionsFrom = (source: SQL) => sql`
  insert into core_schema.captions
    (image_id, perspective_id, perspective_version, perspective_revision, model, provider, result, raw_text, job_id, item_id, export_pending)
  select s.image_id, p.id, p.version, p.revision,
         coalesce(s.model, j.config->>'model'), coalesce(s.provider, j.config->>'provider'),
         s.result, s.raw_text, s.job_id, s.item_id, true
  from ${source} s
  join job_queue.caption_jobs j on j.job_id = s.job_id
  join core_schema.perspectives p on p.name = s.perspective
  where s.image_id is not null
  on conflict (item_id) do nothing
  returning id, job_id`;

/** Stores the captions of these items (see insertCaptionsFrom), in one statement. */
export async function insertItemCaptions(tx: Db, captions: readonly ItemCaption[]): Promise<void> {
  if (captions.length === 0) return;
  await tx.execute(sql`
    with stored as (${insertCaptionsFrom(sql`(
      select i.id as item_id, i.image_id, i.perspective, i.job_id, c.result, c."rawText" as raw_text, c.model, c.provider
      from jsonb_to_recordset(${JSON.stringify(captions)}::jsonb)
           as c("itemId" uuid, result jsonb, "rawText" text, model text, provider text)
      join job_queue.job_items i on i.id = c."itemId")`)})
    ${stageCaptionChanges(sql`stored`)}`);
}

/** Seconds after which the throughput window of a job rolls over (see the ETA in jobs.ts). */
const RATE_WINDOW_SECONDS = 60;

/**
 * The ETA's throughput figures on the job row, for `finished` more items (SET clauses; every one
 * reads the row as it was): a window older than RATE_WINDOW_SECONDS becomes the recent rate and a
 * new one starts. A window that was never started counts from the job's start.
 */
const ROLL_RATE_WINDOW = (finished: SQL) => {
  const start = sql`coalesce(rate_window_started_at, started_at)`;
  const rolled = sql`(${start} is not null and now() - ${start} >= make_interval(secs => ${RATE_WINDOW_SECONDS}))`;
  return sql`
    recent_items_per_second = case when ${rolled}
      then (rate_window_items + ${finished}) / greatest(extract(epoch from now() - ${start})::float8, 0.001)
      else recent_items_per_second end,
    rate_window_items = case when ${rolled} then 0 else rate_window_items + ${finished} end,
    rate_window_started_at = case when ${rolled} or ${start} is null then now() else ${start} end`;
};

/** Items of one job that reached a final state, for rollUpJobs. */
export interface JobDelta {
  jobId: string;
  completed: number;
  failed: number;
  cancelled: number;
}

/**
 * Adds finished items to their jobs' counters and gives a job its final status when nothing is
 * left to run: completed (no failures), failed (nothing succeeded), partial otherwise. A paused job
 * finishes here too once its last item is done (all counted: none is left pending), never before.
 * Writes each job's (coalesced) progress event and, for jobs that just finished, their status
 * change. The CTEs `before`, `rolled` and `events` of a statement that has defined `d` ("jobId",
 * completed, failed, cancelled) before them, so the dispatcher can roll up in the statement that
 * records its items; `rolled` returns each job's new state and `before`. The callers hold the
 * jobs' row locks.
 *
 * `before` reads the jobs' statuses; a statement that takes the row locks itself passes the rows
 * as locked (its snapshot may predate a change committed just before the lock). `set` adds SET
 * clauses, since a statement may update a row only once.
 */
export function rollUpCtes(o: { before?: SQL; set?: SQL } = {}): SQL {
  // SET expressions read the row as it was: the new counters are the old ones plus the delta.
  const done = sql`processed_images + d.completed + failed_images + d.failed + cancelled_images + d.cancelled`;
  const ends = sql`j.status in ('pending', 'running', 'paused') and ${done} >= total_images`;
  const before = o.before ?? sql`select job_id, status from job_queue.caption_jobs`;
  return sql`
    before as (
      select job_id, status from (${before}) b where job_id in (select "jobId" from d)
    ), rolled as (
      update job_queue.caption_jobs j
      set processed_images = processed_images + d.completed,
          failed_images = failed_images + d.failed,
          cancelled_images = cancelled_images + d.cancelled,
          progress = case when total_images = 0 then 0
                          else round(((processed_images + d.completed + failed_images + d.failed) * 100.0 / total_images)::numeric, 2)::float8 end,
          status = case when ${ends} then
              case when failed_images + d.failed = 0 and cancelled_images + d.cancelled = 0 then 'completed'
                   when processed_images + d.completed = 0 and failed_images + d.failed > 0 then 'failed'
                   when processed_images + d.completed = 0 then 'cancelled'
                   else 'partial' end
            else j.status end,
          completed_at = case when ${ends} then now() else completed_at end,
          ${ROLL_RATE_WINDOW(sql`(d.completed + d.failed)`)},${o.set ? sql` ${o.set},` : sql``}
          updated_at = now()
      from d join before b on b.job_id = d."jobId"
      where j.job_id = d."jobId"
      returning ${jobEventColumns('j')}, b.status as before
    ), events as (
      ${insertJobEvents(sql`(
        select r.*, e.type, e.extra, e.ord from rolled r
        cross join lateral (values
          (1, 'JOB_PROGRESS', '{}'::jsonb),
          (2, 'JOB_STATUS_CHANGED', jsonb_build_object('oldStatus', r.before, 'newStatus', r.status, 'reason', null))) e(ord, type, extra)
        where e.type = 'JOB_PROGRESS' or r.before <> r.status)`)}
    )`;
}

export const ROLL_UP_CTES = rollUpCtes();

/**
 * Select-list columns that send a roll-up's notifications at commit: events were written; a job
 * that finished frees a slot.
 */
export const ROLL_UP_NOTIFY = sql.raw(`
  (select pg_notify('${EVENTS_CHANNEL}', '') where exists (select 1 from rolled)) as notified_events,
  (select pg_notify('${WORK_CHANNEL}', '${JOB_FINISHED}') where exists (select 1 from rolled where before <> status)) as notified_work`);

/** Rolls up these jobs (see ROLL_UP_CTES) in one statement; returns each job's status afterwards. */
export async function rollUpJobs(tx: Db, deltas: readonly JobDelta[]): Promise<Map<string, JobStatus>> {
  if (deltas.length === 0) return new Map();
  const { rows } = await tx.execute<{ jobId: string; after: JobStatus }>(sql`
    with d as (
      select * from jsonb_to_recordset(${JSON.stringify(deltas)}::jsonb)
        as d("jobId" uuid, completed int, failed int, cancelled int)
    ), ${ROLL_UP_CTES}
    select job_id as "jobId", status as after, ${ROLL_UP_NOTIFY} from rolled`);
  return new Map(rows.map((r) => [r.jobId, r.after]));
}
