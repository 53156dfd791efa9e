/**
 * The event outbox: events are written in the transaction of the change they report, delivered to
 * the message broker by src/jobs/notifier.ts and fanned out to live subscribers by
 * src/jobs/event-hub.ts. Job events are written while the job row is locked, so a job's events
 * commit in `seq` order.
 */
import { sql, type SQL } from 'drizzle-orm';
import { currentRequestId } from '../logger.js';
import { parseDbTime, type Db, type DbTime } from './client.js';
import { pgArray } from './sql.js';

/** NOTIFY channel: "new events were committed". A hint; readers also poll. */
export const EVENTS_CHANNEL = 'graphcap_events';

export const JOB_EVENT_TYPES = ['JOB_CREATED', 'JOB_STATUS_CHANGED', 'JOB_PROGRESS'] as const;

export type OutboxEvent = {
  id: number;
  seq: number;
  eventId: string;
  type: string;
  stream: string;
  jobId: string | null;
  data: Record<string, unknown>;
  requestId: string | null;
  occurredAt: DbTime;
  /** Delivery attempts so far, this one included. */
  attempts: number;
};

/** An event as the broker and live subscribers receive it (README, "Following jobs live"): `id` is unique per event. */
export function eventMessage(event: OutboxEvent) {
  return {
    id: event.eventId,
    seq: event.seq,
    type: event.type,
    occurredAt: parseDbTime(event.occurredAt).toISOString(),
    jobId: event.jobId,
    data: event.data,
    requestId: event.requestId,
  };
}

const EVENT_COLUMNS = sql.raw(`id, seq, event_id as "eventId", type, stream, job_id as "jobId", data,
  request_id as "requestId", occurred_at as "occurredAt", attempts`);

/** The job's counters as events carry them, from a row with the columns of jobEventColumns. */
const JOB_SNAPSHOT = sql.raw(`jsonb_build_object(
  'jobId', job_id, 'status', status, 'totalImages', total_images, 'processedImages', processed_images,
  'failedImages', failed_images, 'cancelledImages', cancelled_images, 'progress', progress)`);

/** The caption_jobs columns (of the row aliased `alias`) that insertJobEvents needs. */
export const jobEventColumns = (alias: string) =>
  sql.raw(['job_id', 'status', 'total_images', 'processed_images', 'failed_images', 'cancelled_images', 'progress', 'request_id']
    .map((c) => `${alias}.${c}`)
    .join(', '));

/**
 * The INSERT of job events from `source`: a relation with jobEventColumns plus `type`, `extra`
 * (merged into the data) and `ord` (the order of a job's events). A job has at most one
 * undelivered progress event: a newer one rewrites it (new data, new event id, new place in the
 * order) instead of queueing. A fragment, so roll-ups write their events in their own statement.
 */
export const insertJobEvents = (source: SQL) => sql`
  insert into job_queue.outbox (type, stream, job_id, data, request_id)
  select s.type, 'job:' || s.job_id, s.job_id, ${JOB_SNAPSHOT} || s.extra, coalesce(${currentRequestId() ?? null}, s.request_id)
  from ${source} s
  order by s.job_id, s.ord
  on conflict (job_id) where type = 'JOB_PROGRESS' and delivered_at is null
  do update set data = excluded.data, request_id = excluded.request_id, occurred_at = now(),
                seq = nextval('job_queue.outbox_seq'), event_id = gen_random_uuid(), xid = pg_current_xact_id(),
                attempts = 0, next_attempt_at = null, last_error = null`;

/** JOB_PROGRESS with each job's current counters (coalesced, see insertJobEvents). */
export async function recordJobProgress(tx: Db, jobIds: string | readonly string[]): Promise<void> {
  const ids = typeof jobIds === 'string' ? [jobIds] : jobIds;
  if (ids.length === 0) return;
  await tx.execute(sql`
    with written as (
      ${insertJobEvents(sql`(
        select ${jobEventColumns('j')}, 'JOB_PROGRESS' as type, '{}'::jsonb as extra, 1 as ord
        from job_queue.caption_jobs j where j.job_id = any(${pgArray(ids)}::uuid[]))`)}
      returning 1)
    select pg_notify(${EVENTS_CHANNEL}, '') where exists (select 1 from written)`);
}

/** JOB_STATUS_CHANGED from `from` to the job's current status, with its counters. */
export async function recordJobStatusChange(tx: Db, jobId: string, from: string, reason?: string | null): Promise<void> {
  await recordJobStatusChanges(tx, [{ jobId, from, reason }]);
}

/** JOB_STATUS_CHANGED for several jobs at once. */
export async function recordJobStatusChanges(
  tx: Db,
  changes: readonly { jobId: string; from: string; reason?: string | null }[],
): Promise<void> {
  if (changes.length === 0) return;
  const rows = changes.map((c, ord) => ({ jobId: c.jobId, from: c.from, reason: c.reason ?? null, ord }));
  await tx.execute(sql`
    with written as (
      ${insertJobEvents(sql`(
        select ${jobEventColumns('j')}, 'JOB_STATUS_CHANGED' as type,
               jsonb_build_object('oldStatus', c."from", 'newStatus', j.status, 'reason', c.reason) as extra, c.ord
        from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as c("jobId" uuid, "from" text, reason text, ord int)
        join job_queue.caption_jobs j on j.job_id = c."jobId")`)}
      returning 1)
    select pg_notify(${EVENTS_CHANNEL}, '') where exists (select 1 from written)`);
}

/** JOB_CREATED, with what the job is. */
export async function recordJobCreated(tx: Db, jobId: string): Promise<void> {
  await tx.execute(sql`
    insert into job_queue.outbox (type, stream, job_id, data, request_id)
    select 'JOB_CREATED', 'job:' || job_id, job_id,
           ${JOB_SNAPSHOT} || jsonb_build_object('type', type, 'priority', priority, 'perspectives', perspectives,
                                                 'userId', user_id, 'datasetId', dataset_id),
           request_id
    from job_queue.caption_jobs where job_id = ${jobId}`);
  await tx.execute(sql`select pg_notify(${EVENTS_CHANNEL}, '')`);
}

// ---------------------------------------------------------------------------------------------
// Delivery

/**
 * Leases the next deliverable event of each stream (only a stream's oldest undelivered event is
 * ever out, which keeps per-stream order across replicas). SKIP LOCKED lets replicas share the work.
 */
export async function claimDeliverable(
  db: Db,
  p: { owner: string; limit: number; leaseMs: number },
): Promise<OutboxEvent[]> {
  const { rows } = await db.execute<OutboxEvent>(sql`
    with heads as (
      select distinct on (stream) id, seq from job_queue.outbox
      where delivered_at is null
      order by stream, seq
    ), ready as (
      select o.id as ready_id from job_queue.outbox o join heads h on h.id = o.id
      where (o.next_attempt_at is null or o.next_attempt_at <= now())
        and (o.lease_expires_at is null or o.lease_expires_at < now())
        -- A coalesced rewrite can put a newer event ahead of one still out: wait for that one.
        and not exists (select 1 from job_queue.outbox l
                        where l.stream = o.stream and l.delivered_at is null and l.id <> o.id
                          and l.lease_expires_at > now())
      order by o.seq
      limit ${p.limit}
      for update of o skip locked
    )
    update job_queue.outbox o
    set lease_owner = ${p.owner}, lease_expires_at = now() + make_interval(secs => ${p.leaseMs / 1000}),
        attempts = attempts + 1
    from ready where o.id = ready.ready_id
    returning ${EVENT_COLUMNS}`);
  return rows.sort((a, b) => a.seq - b.seq);
}

/**
 * Marks events delivered and frees their leases. An event that a coalescing rewrite changed while
 * it was out (its seq moved) stays undelivered: the newer state goes out next.
 */
export async function markDelivered(db: Db, delivered: { id: number; seq: number }[]): Promise<void> {
  if (delivered.length === 0) return;
  await db.execute(sql`
    update job_queue.outbox o
    set delivered_at = case when o.seq = d.seq then now() end, lease_owner = null, lease_expires_at = null,
        last_error = null
    from unnest(${pgArray(delivered.map((d) => d.id))}::bigint[], ${pgArray(delivered.map((d) => d.seq))}::bigint[]) as d(id, seq)
    where o.id = d.id`);
}

/** Frees the lease of an event that could not be delivered and schedules its next attempt. */
export async function markDeliveryFailed(db: Db, p: { id: number; seq: number; error: string; retryInMs: number }): Promise<void> {
  await db.execute(sql`
    update job_queue.outbox
    set lease_owner = null, lease_expires_at = null, last_error = ${p.error.slice(0, 1000)},
        -- A rewritten event is new: it goes out without waiting.
        next_attempt_at = case when seq = ${p.seq} then now() + make_interval(secs => ${p.retryInMs / 1000}) end
    where id = ${p.id}`);
}

/**
 * Moves an event aside as a dead letter (the broker will not take it): marked dead and delivered,
 * so the next event of its stream goes out. Not if a coalescing rewrite changed it meanwhile.
 */
export async function markDead(db: Db, p: { id: number; seq: number; error: string }): Promise<boolean> {
  const result = await db.execute(sql`
    update job_queue.outbox
    set dead_at = now(), delivered_at = now(), lease_owner = null, lease_expires_at = null, last_error = ${p.error.slice(0, 1000)}
    where id = ${p.id} and seq = ${p.seq} and delivered_at is null`);
  return (result.rowCount ?? 0) > 0;
}

/** Moves aside every event that has waited for the broker longer than `hours`; returns how many. */
export async function expireUndelivered(db: Db, hours: number): Promise<number> {
  const result = await db.execute(sql`
    update job_queue.outbox
    set dead_at = now(), delivered_at = now(), lease_owner = null, lease_expires_at = null,
        last_error = coalesce(last_error || '; ', '') || 'undelivered for more than ' || ${hours} || ' hours'
    where delivered_at is null and occurred_at < now() - make_interval(hours => ${hours})
      and (lease_expires_at is null or lease_expires_at < now())`);
  return result.rowCount ?? 0;
}

export type DeadLetter = {
  eventId: string;
  seq: number;
  type: string;
  stream: string;
  jobId: string | null;
  occurredAt: DbTime;
  deadAt: DbTime;
  attempts: number;
  lastError: string | null;
};

/** The dead letters, newest first (kept EVENT_RETENTION_HOURS like delivered events). */
export async function listDeadLetters(db: Db, p: { limit: number; offset: number }): Promise<{ items: DeadLetter[]; total: number }> {
  const { rows } = await db.execute<DeadLetter & { total: number }>(sql`
    select event_id as "eventId", seq, type, stream, job_id as "jobId", occurred_at as "occurredAt", dead_at as "deadAt",
           attempts, last_error as "lastError", count(*) over ()::int as total
    from job_queue.outbox where dead_at is not null
    order by dead_at desc, seq desc limit ${p.limit} offset ${p.offset}`);
  return { items: rows.map(({ total: _total, ...row }) => row), total: rows[0]?.total ?? (await countDeadLetters(db)) };
}

export async function countDeadLetters(db: Db): Promise<number> {
  const { rows } = await db.execute<{ n: number }>(sql`select count(*)::int as n from job_queue.outbox where dead_at is not null`);
  return rows[0]?.n ?? 0;
}

/** Seconds the oldest undelivered event has waited (0 for none). */
export async function oldestUndeliveredAge(db: Db): Promise<number> {
  const { rows } = await db.execute<{ s: number }>(sql`
    select coalesce(extract(epoch from now() - min(occurred_at)), 0)::float8 as s from job_queue.outbox where delivered_at is null`);
  return rows[0]?.s ?? 0;
}

/** With no broker configured, events are only for live subscribers: mark them delivered. */
export async function discardUndelivered(db: Db): Promise<number> {
  const result = await db.execute(sql`update job_queue.outbox set delivered_at = now() where delivered_at is null`);
  return result.rowCount ?? 0;
}

/** Deletes delivered events older than the cutoff; live subscribers can resume only within it. */
export async function pruneDelivered(db: Db, olderThanHours: number): Promise<number> {
  const result = await db.execute(sql`
    delete from job_queue.outbox where delivered_at < now() - make_interval(hours => ${olderThanHours})`);
  return result.rowCount ?? 0;
}

export async function countUndelivered(db: Db): Promise<number> {
  const { rows } = await db.execute<{ n: number }>(sql`select count(*) as n from job_queue.outbox where delivered_at is null`);
  return rows[0]?.n ?? 0;
}

// ---------------------------------------------------------------------------------------------
// Reading, for live subscribers

/**
 * The oldest transaction still running, as a watermark: every event written by an older
 * transaction is committed (or gone) and can be read without any later one appearing before it.
 */
export async function currentWatermark(db: Db): Promise<string> {
  const { rows } = await db.execute<{ xmin: string }>(sql`select pg_snapshot_xmin(pg_current_snapshot())::text as xmin`);
  return rows[0]!.xmin;
}

/** Which events a reader wants: those of streams starting with `prefix` or among `streams`, of one job. */
export interface StreamFilter {
  prefix?: string;
  streams?: readonly string[];
  jobId?: string;
}

const whereStreams = (f: StreamFilter) => sql`
  ${f.jobId ? sql`and job_id = ${f.jobId}` : sql``}
  ${f.prefix ? sql`and starts_with(stream, ${f.prefix})` : sql``}
  ${f.streams ? sql`and stream = any(${pgArray(f.streams)}::text[])` : sql``}`;

/** Events written by transactions in [fromXid, toXid), in seq order. */
export async function readEventsBetween(db: Db, p: { fromXid: string; toXid: string }): Promise<OutboxEvent[]> {
  const { rows } = await db.execute<OutboxEvent>(sql`
    select ${EVENT_COLUMNS} from job_queue.outbox
    where xid >= ${p.fromXid}::xid8 and xid < ${p.toXid}::xid8
    order by seq`);
  return rows;
}

/** Events after `afterSeq` written before the watermark `beforeXid`: what a resuming reader missed. */
export async function readEventsAfter(
  db: Db,
  p: { afterSeq: number; beforeXid: string; filter: StreamFilter; limit: number },
): Promise<OutboxEvent[]> {
  const { rows } = await db.execute<OutboxEvent>(sql`
    select ${EVENT_COLUMNS} from job_queue.outbox
    where seq > ${p.afterSeq} and xid < ${p.beforeXid}::xid8 ${whereStreams(p.filter)}
    order by seq limit ${p.limit}`);
  return rows;
}
