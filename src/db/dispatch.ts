/**
 * The dispatcher's queries: start jobs, claim items under leases, renew, rescue and release leases,
 * record outcomes. Every decision a cap depends on is serialized in PostgreSQL, so the caps hold
 * across replicas, not per process.
 *
 * Lock order is always the job row first, then its items (as cancel and retry-failed do), so a
 * record never deadlocks with a cancel. The few statements that lock many items without the job
 * row (renew, release) skip rows another transaction holds instead of waiting for them.
 */
import { sql } from 'drizzle-orm';
import type { Db } from './client.js';
import { insertItemCaption, rollUpJob } from './items.js';
import { recordJobStatusChange } from './outbox.js';
import { notifyWork, pgArray, type JobConfig } from './jobs.js';

// Serializes "count the running jobs, then start one" across replicas; any fixed number will do,
// as long as it differs from the migration lock's.
const JOB_START_LOCK_ID = 7_245_002;

/** An item this replica has claimed, with what the bridge call needs from its job. */
export interface ClaimedItem {
  itemId: string;
  jobId: string;
  imagePath: string;
  perspective: string;
  /** Attempts made, this one included. */
  attempts: number;
  config: JobConfig;
  /** X-Request-Id of the job's create call, if it had one. */
  requestId: string | null;
}

const QUEUE_ORDER = sql.raw('priority, queue_position, created_at, job_id');

/**
 * Starts pending jobs in queue order while fewer than `maxRunning` jobs are running (all replicas
 * counted). A job with dependencies starts only when every one of them has completed. One job per
 * transaction, each under an advisory lock, so two replicas never both take the last slot.
 */
export async function startRunnableJobs(db: Db, maxRunning: number): Promise<string[]> {
  const started: string[] = [];
  for (;;) {
    const jobId = await db.transaction(async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(${JOB_START_LOCK_ID})`);
      // A statement after the lock: its snapshot sees every start committed before.
      const { rows } = await tx.execute<{ jobId: string }>(sql`
        update job_queue.caption_jobs j
        set status = 'running', slice_items = 0, rate_window_started_at = now(), rate_window_items = 0,
            started_at = coalesce(j.started_at, now()), updated_at = now()
        where j.status = 'pending' and j.job_id = (
          select c.job_id from job_queue.caption_jobs c
          where c.status = 'pending' and not c.archived
            and (select count(*) from job_queue.caption_jobs r where r.status = 'running') < ${maxRunning}
            and not exists (
              select 1 from job_queue.job_dependencies d
              join job_queue.caption_jobs dep on dep.job_id = d.depends_on_job_id
              where d.job_id = c.job_id and dep.status <> 'completed')
          order by ${QUEUE_ORDER}
          limit 1)
        returning j.job_id as "jobId"`);
      const id = rows[0]?.jobId;
      if (id) await recordJobStatusChange(tx, id, 'pending');
      return id;
    });
    if (!jobId) return started;
    started.push(jobId);
  }
}

/**
 * Ends pending jobs whose dependency finished without completing (failed, partial, cancelled):
 * the job fails with a reason naming the dependency, its items are cancelled. Repeats until no
 * such job is left, since a job failed here breaks the jobs that depend on it in turn.
 */
export async function failJobsWithBrokenDependencies(db: Db): Promise<{ jobId: string; error: string }[]> {
  const failed: { jobId: string; error: string }[] = [];
  for (;;) {
    const { rows: broken } = await db.execute<{ jobId: string; dependsOn: string; status: string }>(sql`
      select distinct on (d.job_id) d.job_id as "jobId", d.depends_on_job_id as "dependsOn", dep.status
      from job_queue.job_dependencies d
      join job_queue.caption_jobs j on j.job_id = d.job_id
      join job_queue.caption_jobs dep on dep.job_id = d.depends_on_job_id
      where j.status = 'pending' and dep.status in ('failed', 'partial', 'cancelled')
      order by d.job_id, d.depends_on_job_id`);
    let changed = false;
    for (const b of broken) {
      const error = `dependency ${b.dependsOn} ended ${b.status}`;
      const done = await db.transaction(async (tx) => {
        const { rows } = await tx.execute(
          sql`select 1 from job_queue.caption_jobs where job_id = ${b.jobId} and status = 'pending' for update`,
        );
        if (rows.length === 0) return false;
        const cancelled = await tx.execute(sql`
          update job_queue.job_items
          set status = 'cancelled', next_attempt_at = null, completed_at = now(), updated_at = now()
          where job_id = ${b.jobId} and status = 'pending'`);
        await tx.execute(sql`
          update job_queue.caption_jobs
          set status = 'failed', error = ${error}, cancelled_images = cancelled_images + ${cancelled.rowCount ?? 0},
              completed_at = now(), updated_at = now()
          where job_id = ${b.jobId}`);
        await recordJobStatusChange(tx, b.jobId, 'pending', error);
        return true;
      });
      if (done) failed.push({ jobId: b.jobId, error });
      changed ||= done;
    }
    if (!changed) return failed;
  }
}

/**
 * Running jobs, in queue order, that have an item ready to claim and fewer than `maxRunningPerJob`
 * items running. A cheap filter without locks; claimItems decides under the job's lock.
 */
export async function listClaimableJobs(db: Db, maxRunningPerJob: number): Promise<string[]> {
  const { rows } = await db.execute<{ jobId: string }>(sql`
    select j.job_id as "jobId" from job_queue.caption_jobs j
    where j.status = 'running'
      and exists (select 1 from job_queue.job_items i
                  where i.job_id = j.job_id and i.status = 'pending'
                    and (i.next_attempt_at is null or i.next_attempt_at <= now()))
      and (select count(*) from job_queue.job_items i where i.job_id = j.job_id and i.status = 'running') < ${maxRunningPerJob}
    order by ${QUEUE_ORDER}`);
  return rows.map((r) => r.jobId);
}

export interface ClaimParams {
  jobId: string;
  owner: string;
  leaseSeconds: number;
  maxRunningPerJob: number;
  /** Fair share: items a job may claim per turn while another job waits (FAIR_SHARE_SLICE_ITEMS); 0 or unset = no limit. */
  sliceItems?: number;
}

/**
 * Claims the job's next ready items, as many as keep its running items (all replicas counted)
 * within `maxRunningPerJob`: each gets a lease for `owner` and one more attempt. Only a running
 * job's items are claimed.
 *
 * Fair share by turns: MAX_CONCURRENT_JOBS is about job slots, so a huge job holding a slot would
 * make a small job of the same priority wait for all of it. Instead a job's turn ends once it has
 * claimed `sliceItems` items since it got its slot and a startable job of the same or a higher
 * priority is waiting: it claims nothing more, and when its last item in flight is recorded it goes
 * back to `pending` at the back of its priority (a fresh queue position), which frees the slot for
 * the waiting job. Jobs of equal priority thus take turns round-robin, each small job finishing in
 * time proportional to its own size; priority still decides first, and the slot is only handed
 * over once drained, so MAX_CONCURRENT_JOBS holds at the bridge too. Decided under the job row
 * lock, counted in PostgreSQL, so it holds across replicas.
 */
export async function claimItems(db: Db, p: ClaimParams): Promise<ClaimedItem[]> {
  return db.transaction(async (tx) => {
    // The job row lock serializes "count, then claim" per job across replicas. The claim is a
    // later statement, so its snapshot (and the count in it) sees every claim committed before.
    const { rows: jobs } = await tx.execute<{ config: JobConfig; requestId: string | null; sliceItems: number; priority: number }>(sql`
      select config, request_id as "requestId", slice_items as "sliceItems", priority from job_queue.caption_jobs
      where job_id = ${p.jobId} and status = 'running' for update`);
    const job = jobs[0];
    if (!job) return [];
    if (p.sliceItems && job.sliceItems >= p.sliceItems && (await endTurnIfOthersWait(tx, p.jobId, job.priority))) return [];
    const { rows } = await tx.execute<Omit<ClaimedItem, 'config' | 'requestId'>>(sql`
      update job_queue.job_items i
      set status = 'running', attempts = i.attempts + 1, lease_owner = ${p.owner},
          lease_expires_at = now() + make_interval(secs => ${p.leaseSeconds}), next_attempt_at = null,
          started_at = now(), updated_at = now()
      from (select id from job_queue.job_items
            where job_id = ${p.jobId} and status = 'pending' and (next_attempt_at is null or next_attempt_at <= now())
            order by seq
            limit greatest(0, ${p.maxRunningPerJob} -
              (select count(*) from job_queue.job_items where job_id = ${p.jobId} and status = 'running'))
            for update skip locked) c
      where i.id = c.id
      returning i.id as "itemId", i.job_id as "jobId", i.image_path as "imagePath", i.perspective, i.attempts`);
    if (rows.length > 0 && p.sliceItems) {
      await tx.execute(sql`update job_queue.caption_jobs set slice_items = slice_items + ${rows.length} where job_id = ${p.jobId}`);
    }
    return rows.map((r) => ({ ...r, config: job.config, requestId: job.requestId }));
  });
}

/**
 * A job whose turn is used up (see claimItems), its row locked: when a startable job of the same or
 * a higher priority is waiting, it claims no more (returns true), and once nothing of it is in
 * flight it goes back to pending at the back of its priority and wakes the dispatchers.
 */
async function endTurnIfOthersWait(tx: Db, jobId: string, priority: number): Promise<boolean> {
  const { rows: waiting } = await tx.execute(sql`
    select 1 from job_queue.caption_jobs w
    where w.status = 'pending' and not w.archived and w.job_id <> ${jobId} and w.priority <= ${priority}
      and exists (select 1 from job_queue.job_items i where i.job_id = w.job_id and i.status = 'pending')
      and not exists (
        select 1 from job_queue.job_dependencies d
        join job_queue.caption_jobs dep on dep.job_id = d.depends_on_job_id
        where d.job_id = w.job_id and dep.status <> 'completed')
    limit 1`);
  if (waiting.length === 0) return false;
  const { rows: inFlight } = await tx.execute(
    sql`select 1 from job_queue.job_items where job_id = ${jobId} and status = 'running' limit 1`,
  );
  if (inFlight.length > 0) return true;
  await tx.execute(sql`
    update job_queue.caption_jobs
    set status = 'pending', queue_position = nextval('job_queue.caption_jobs_queue_position_seq'), updated_at = now()
    where job_id = ${jobId}`);
  await recordJobStatusChange(tx, jobId, 'running', 'turn ended: another job of the same or a higher priority is waiting');
  await notifyWork(tx);
  return true;
}

/**
 * Renews the leases `owner` holds on these items, in one UPDATE. Returns the renewed items and
 * the lost ones: gone, finished, cancelled, or taken by another replica after the lease expired.
 * An item another transaction has locked right now is in neither list; it is looked at next time.
 */
export async function extendLeases(
  db: Db,
  p: { owner: string; itemIds: string[]; leaseSeconds: number },
): Promise<{ renewed: string[]; lost: string[] }> {
  const { rows } = await db.execute<{ id: string }>(sql`
    update job_queue.job_items i
    set lease_expires_at = now() + make_interval(secs => ${p.leaseSeconds})
    from (select id from job_queue.job_items
          where id = any(${pgArray(p.itemIds)}::uuid[]) and status = 'running' and lease_owner = ${p.owner}
          for update skip locked) mine
    where i.id = mine.id
    returning i.id`);
  const renewed = new Set(rows.map((r) => r.id));
  const rest = p.itemIds.filter((id) => !renewed.has(id));
  if (rest.length === 0) return { renewed: [...renewed], lost: [] };
  const { rows: held } = await db.execute<{ id: string }>(sql`
    select id from job_queue.job_items
    where id = any(${pgArray(rest)}::uuid[]) and status = 'running' and lease_owner = ${p.owner}`);
  const stillHeld = new Set(held.map((r) => r.id));
  return { renewed: [...renewed], lost: rest.filter((id) => !stillHeld.has(id)) };
}

export interface ItemOutcomeBase {
  itemId: string;
  jobId: string;
  owner: string;
  /** Milliseconds the bridge call took. */
  processingTime: number;
}

/** Locks the job row: the first lock of every recording transaction (see the lock order above). */
async function lockJobRow(tx: Db, jobId: string): Promise<void> {
  await tx.execute(sql`select 1 from job_queue.caption_jobs where job_id = ${jobId} for update`);
}

/**
 * Records a caption, in one transaction: the caption, the item completed, the job rolled forward.
 * Only while the item is still running under `owner`'s lease; otherwise (cancelled, rescued,
 * recorded already) nothing is written and it returns false.
 */
export async function recordItemSuccess(
  db: Db,
  p: ItemOutcomeBase & { result: Record<string, unknown>; rawText: string | null },
): Promise<boolean> {
  return db.transaction(async (tx) => {
    await lockJobRow(tx, p.jobId);
    const finished = await tx.execute(sql`
      update job_queue.job_items
      set status = 'completed', error = null, processing_time = ${p.processingTime},
          lease_owner = null, lease_expires_at = null, completed_at = now(), updated_at = now()
      where id = ${p.itemId} and status = 'running' and lease_owner = ${p.owner}`);
    if (!finished.rowCount) return false;
    await insertItemCaption(tx, p.itemId, { result: p.result, rawText: p.rawText ?? undefined });
    await rollUpJob(tx, p.jobId, { completed: 1, failed: 0, cancelled: 0 });
    return true;
  });
}

/**
 * Records a failed attempt under the same guard as recordItemSuccess. With `retryInMs` the item
 * goes back to pending until then; without, it fails for good and the job rolls forward.
 */
export async function recordItemFailure(
  db: Db,
  p: ItemOutcomeBase & { error: string; retryInMs: number | null },
): Promise<boolean> {
  return db.transaction(async (tx) => {
    await lockJobRow(tx, p.jobId);
    const retry = p.retryInMs !== null;
    const updated = await tx.execute(sql`
      update job_queue.job_items
      set status = ${retry ? 'pending' : 'failed'}, error = ${p.error}, processing_time = ${p.processingTime},
          next_attempt_at = ${retry ? sql`now() + make_interval(secs => ${p.retryInMs! / 1000})` : null},
          completed_at = ${retry ? null : sql`now()`},
          lease_owner = null, lease_expires_at = null, updated_at = now()
      where id = ${p.itemId} and status = 'running' and lease_owner = ${p.owner}`);
    if (!updated.rowCount) return false;
    if (!retry) await rollUpJob(tx, p.jobId, { completed: 0, failed: 1, cancelled: 0 });
    return true;
  });
}

/**
 * Gives back items `owner` still holds (at shutdown): pending again at once, the attempt not
 * counted, and every dispatcher woken so another replica takes them now rather than after the
 * lease. Items another transaction is finishing right now are left to it.
 */
export async function releaseItems(db: Db, p: { owner: string; itemIds: string[] }): Promise<number> {
  if (p.itemIds.length === 0) return 0;
  return db.transaction(async (tx) => {
    const released = await tx.execute(sql`
      update job_queue.job_items i
      set status = 'pending', attempts = greatest(i.attempts - 1, 0), lease_owner = null, lease_expires_at = null,
          started_at = null, updated_at = now()
      from (select id from job_queue.job_items
            where id = any(${pgArray(p.itemIds)}::uuid[]) and status = 'running' and lease_owner = ${p.owner}
            for update skip locked) mine
      where i.id = mine.id`);
    if (released.rowCount) await notifyWork(tx);
    return released.rowCount ?? 0;
  });
}

/**
 * The crash sweep: running items whose lease expired (their replica died or hung) go back to
 * pending, or fail when they have used all `maxAttempts`. Any replica may run it at any time.
 */
export async function rescueExpiredLeases(db: Db, maxAttempts: number): Promise<{ retried: number; failed: number }> {
  const { rows: jobs } = await db.execute<{ jobId: string }>(sql`
    select distinct job_id as "jobId" from job_queue.job_items where status = 'running' and lease_expires_at < now()`);
  const total = { retried: 0, failed: 0 };
  for (const { jobId } of jobs) {
    await db.transaction(async (tx) => {
      await lockJobRow(tx, jobId);
      const expired = sql`job_id = ${jobId} and status = 'running' and lease_expires_at < now()`;
      const failed = await tx.execute(sql`
        update job_queue.job_items
        set status = 'failed', error = 'lease of ' || coalesce(lease_owner, '?') || ' expired on the last of ' || attempts || ' attempts',
            lease_owner = null, lease_expires_at = null, completed_at = now(), updated_at = now()
        where ${expired} and attempts >= ${maxAttempts}`);
      const retried = await tx.execute(sql`
        update job_queue.job_items
        set status = 'pending', error = 'lease of ' || coalesce(lease_owner, '?') || ' expired', lease_owner = null,
            lease_expires_at = null, updated_at = now()
        where ${expired}`);
      if (failed.rowCount) await rollUpJob(tx, jobId, { completed: 0, failed: failed.rowCount, cancelled: 0 });
      if (retried.rowCount) await notifyWork(tx);
      total.failed += failed.rowCount ?? 0;
      total.retried += retried.rowCount ?? 0;
    });
  }
  return total;
}
