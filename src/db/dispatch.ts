/**
 * The dispatcher's queries: start jobs, claim items under leases, renew, rescue and release leases,
 * record outcomes. Every decision a cap depends on is serialized in PostgreSQL, so the caps hold
 * across replicas, not per process.
 *
 * Lock order is always the job row first, then its items (as cancel and retry-failed do), so a
 * record never deadlocks with a cancel. The few statements that lock many items without the job
 * row (renew, release) skip rows another transaction holds instead of waiting for them.
 *
 * Reserves: a replica may hold pending items without a slot (lease_owner set, status still
 * pending), so that the moment one of its calls ends well it starts the next item of that job at
 * once, in the slot the ended call leaves (src/jobs/dispatcher.ts). No other replica claims an item
 * another holds in reserve until that lease expires. The next round that records the ended item
 * makes the started one running (`promote`), in the same statement: a job's running items never
 * count fewer than its calls at the bridge, so the caps hold although the call began before the
 * commit.
 */
import { sql, type SQL } from 'drizzle-orm';
import type { Db } from './client.js';
import { stageCaptionChanges } from './data-events.js';
import { insertCaptionsFrom, rollUpCtes, rollUpJobs, ROLL_UP_NOTIFY } from './items.js';
import { writeRemainingChunks } from './item-chunks.js';
import { EVENTS_CHANNEL, insertJobEvents, jobEventColumns, recordJobStatusChange, recordJobStatusChanges } from './outbox.js';
import { notifyWork, WORK_CHANNEL } from './channels.js';
import type { JobConfig } from './jobs.js';
import { pgArray } from './sql.js';
import {
  PROVIDER_BUDGET_JSON,
  providerCtes,
  providerKey,
  runningPerProvider,
  updateProviders,
  type ProviderBudget,
  type ProviderFeedback,
  type ProviderSettings,
} from './provider-states.js';
import type { JobStatus } from './schema.js';

// Serializes "count the running jobs, then start one" across replicas; any fixed number will do,
// as long as it differs from the other advisory locks (migrations 7_245_001, image deletes 7_245_002).
const JOB_START_LOCK_ID = 7_245_003;

/**
 * The application_name of a dispatcher's LISTEN connection: how replicas see each other. A
 * replica's connections end with its process, so the dispatchers alive are exactly those connected,
 * with no heartbeat to write or expire. A stopping one renames its connection (STOPPING_DISPATCHER).
 */
export const dispatcherConnectionName = (owner: string) => `graphcap-dispatcher ${owner}`.slice(0, 63);
export const STOPPING_DISPATCHER = 'graphcap-dispatcher-stopping';

/**
 * The dispatchers connected to this database, `owner` counted whether its connection is up or not:
 * a full round's claim takes at most its share of a job's slots (claimItems).
 */
const liveDispatchers = (owner: string) => sql`(1 + (
  select count(distinct application_name) from pg_stat_activity
  where datname = current_database() and application_name like 'graphcap-dispatcher %'
    and application_name <> ${dispatcherConnectionName(owner)}))`;

/** The dispatchers connected to this database, `owner` always counted: what each replica's share divides by. */
export async function countDispatchers(db: Db, owner: string): Promise<number> {
  const { rows } = await db.execute<{ n: number }>(sql`select ${liveDispatchers(owner)} as n`);
  return rows[0]?.n ?? 1;
}

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
  /** A half-open breaker's probe: its failure gives the attempt back (src/db/provider-states.ts). */
  probe?: boolean;
}

const QUEUE_ORDER = sql.raw('priority, queue_position, created_at, job_id');

/**
 * Starts pending jobs in queue order while fewer than `maxRunning` jobs are running (all replicas
 * counted). A job with dependencies starts only when every one of them has completed. One
 * transaction under an advisory lock, so two replicas never both take the last slot.
 */
export async function startRunnableJobs(db: Db, maxRunning: number): Promise<string[]> {
  return db.transaction((tx) => startJobs(tx, maxRunning));
}

/** startRunnableJobs within the caller's transaction, which then holds the start lock to its end. */
async function startJobs(tx: Db, maxRunning: number): Promise<string[]> {
  await tx.execute(sql`select pg_advisory_xact_lock(${JOB_START_LOCK_ID})`);
  // A statement after the lock: its snapshot sees every start committed before.
  const { rows } = await tx.execute<{ jobId: string }>(sql`
    with next as (
      select c.job_id from job_queue.caption_jobs c
      where c.status = 'pending' and not c.archived
        and not exists (
          select 1 from job_queue.job_dependencies d
          join job_queue.caption_jobs dep on dep.job_id = d.depends_on_job_id
          where d.job_id = c.job_id and dep.status <> 'completed')
      order by ${QUEUE_ORDER}
      limit greatest(0, ${maxRunning} - (select count(*) from job_queue.caption_jobs r where r.status = 'running'))
    ), started as (
      update job_queue.caption_jobs j
      set status = 'running', slice_items = 0, rate_window_started_at = now(), rate_window_items = 0,
          started_at = coalesce(j.started_at, now()), updated_at = now()
      -- Checked again on the row as locked: a cancel or pause that committed after the CTE read it wins.
      from next where j.job_id = next.job_id and j.status = 'pending'
      returning ${jobEventColumns('j')}
    ), events as (
      ${insertJobEvents(sql`(
        select s.*, 'JOB_STATUS_CHANGED' as type, 1 as ord,
               jsonb_build_object('oldStatus', 'pending', 'newStatus', s.status, 'reason', null) as extra
        from started s)`)}
    )
    -- WORK_CHANNEL too: the other dispatchers come for their share of the started jobs' slots.
    select job_id as "jobId", (select pg_notify(${EVENTS_CHANNEL}, '')) as notified, (select pg_notify(${WORK_CHANNEL}, '')) as woken
    from started`);
  return rows.map((r) => r.jobId);
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
        await writeRemainingChunks(tx, b.jobId);
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
 * A pending item (alias `i`) that is due and that no other replica holds in reserve; without
 * `owner`, one that no replica holds, `owner`'s own reserve excluded too.
 */
const claimable = (owner?: string) =>
  sql`i.status = 'pending' and (i.next_attempt_at is null or i.next_attempt_at <= now())
      and (i.lease_owner is null ${owner === undefined ? sql`` : sql`or i.lease_owner = ${owner}`} or i.lease_expires_at < now())`;

/**
 * A running job (alias `j`) that has an item `owner` may claim and fewer than `maxRunningPerJob`
 * items running: the jobs a full round claims in besides those it was given.
 */
const claimableJob = (owner: string, maxRunningPerJob: number) => sql`(
  j.status = 'running'
  and exists (select 1 from job_queue.job_items i where i.job_id = j.job_id and ${claimable(owner)})
  and (select count(*) from job_queue.job_items i where i.job_id = j.job_id and i.status = 'running') < ${maxRunningPerJob})`;

/** What became of one claimed item's bridge call, to be recorded. */
export type ItemOutcome = {
  itemId: string;
  jobId: string;
  /** Milliseconds the bridge call took. */
  processingTime: number;
  /** What the call says about its provider, for adaptive dispatch; none when it never reached it. */
  signal?: ProviderSignal;
  /** Its call began from the reserve and no round made it running: its row is still pending, leased to the owner. */
  reserved?: boolean;
} & (
  | { status: 'completed'; result: Record<string, unknown>; rawText: string | null }
  /** With `retryInMs` the item goes back to pending until then; without, it fails for good. */
  | { status: 'failed'; error: string; retryInMs: number | null }
  /** Back to pending until `retryInMs` has passed, the attempt given back: the provider said wait. */
  | { status: 'deferred'; error: string; retryInMs: number }
);

export type ProviderSignal =
  | { kind: 'ok'; latencyMs: number }
  | { kind: 'throttled'; retryAfterMs: number | null }
  /** Held back here, never sent: the provider's stored rate limit is used up for `retryAfterMs` (no slow-down). */
  | { kind: 'paced'; retryAfterMs: number }
  | { kind: 'failed' };

/** An item by id and job (whose row a round locks first). */
export type ItemRef = { itemId: string; jobId: string };

/** What a round hands over besides outcomes; the items are `owner`'s reserve. */
interface ReserveChanges {
  /** Reserved items whose call has begun (in the slot of an ended call): running from this round on. */
  promote?: readonly ItemRef[];
  /** Reserved items given back: pending for anyone again. */
  release?: readonly ItemRef[];
}

/**
 * `flow`: the job runs, its turn is not over and its provider has room: an ended call's slot may go
 * on to the next reserved item. `hold`: the same but the provider is at its budget: keep the
 * reserve, hand nothing on. `release`: the job is not running or its turn is over: give it back.
 */
export type ReserveState = 'flow' | 'hold' | 'release';

export interface RecordAndClaimParams extends ReserveChanges {
  owner: string;
  /**
   * A full round: first start jobs while fewer than this many run (the start lock is then held to
   * the end of the round), and claim in every claimable job (claimableJob) besides `claimIn`.
   */
  startJobsUpTo?: number;
  /** Outcomes of items `owner` holds; each is recorded only while the item is still running under its lease. */
  outcomes: readonly ItemOutcome[];
  /** Jobs to claim items in, besides those of the outcomes (whose slots they free). */
  claimIn: readonly string[];
  /** False: record only (a replica that is stopping). */
  claim: boolean;
  leaseSeconds: number;
  maxRunningPerJob: number;
  /** Fair share: items a job may claim per turn while another job waits (FAIR_SHARE_SLICE_ITEMS); 0 or unset = no limit. */
  sliceItems?: number;
  /** Adaptive dispatch per (provider, model) (src/db/provider-states.ts); unset = the static caps only. */
  providers?: ProviderSettings;
  /**
   * Given the claimed items before the transaction commits, so that their calls begin while the
   * commit's WAL flush runs: until it ends the job rows stay locked, so no other replica counts or
   * claims in their jobs meanwhile. If the commit fails after all, the caller must stop the calls.
   */
  onClaimed?: (items: ClaimedItem[]) => void;
}

export interface RecordAndClaimResult {
  /** Jobs this round started (startJobsUpTo). */
  started: string[];
  /** Outcomes written; the others were late (cancelled, rescued, recorded already) and wrote nothing. */
  recorded: ItemOutcome[];
  claimed: ClaimedItem[];
  /** The `promote` items made running; the others are no longer the owner's (cancelled, taken after their lease). */
  promoted: string[];
  /** What the owner's reserve of a job the round locked should do now (a full round only says `release`). */
  reserves: Map<string, ReserveState>;
  /** The providers' states after this round's feedback (with adaptive dispatch). */
  providers: ProviderBudget[];
}

type LockedJob = {
  jobId: string;
  status: JobStatus;
  config: JobConfig;
  requestId: string | null;
  sliceItems: number;
  priority: number;
};

/**
 * The dispatcher's full round, one transaction: records every outcome that finished since the last
 * one (the items, their captions, the jobs' counters, status and events), then claims new items
 * for the slots that frees and for `claimIn`. Batching is what keeps the service off the
 * database's critical path: one commit and one lock of each job row per round, however many items
 * finished in it, instead of a transaction per item serialising on the job row.
 *
 * Recording is exactly once: an item is written only while it is still running under `owner`'s
 * lease, and a caption is unique per item. Claims count a job's running items (all replicas) under
 * its row lock, so MAX_CONCURRENT_ITEMS holds globally.
 */
export async function recordAndClaim(db: Db, p: RecordAndClaimParams): Promise<RecordAndClaimResult> {
  const full = p.claim && p.startJobsUpTo !== undefined;
  const handed = [...(p.promote ?? []), ...(p.release ?? [])];
  const nothing = (started: string[] = []) => ({ started, recorded: [], claimed: [], promoted: [], reserves: new Map(), providers: [] });
  if (!full && p.outcomes.length === 0 && handed.length === 0 && (!p.claim || p.claimIn.length === 0)) return nothing();
  // One transaction, so one commit, even for a round that starts a job and claims its first items.
  return db.transaction(async (tx) => {
    const started = full ? await startJobs(tx, p.startJobsUpTo!) : [];
    const jobIds = [...new Set([...p.outcomes.map((o) => o.jobId), ...handed.map((h) => h.jobId), ...(p.claim ? p.claimIn : [])])];
    if (jobIds.length === 0 && !full) return nothing(started);
    // A statement after the start: its snapshot sees the jobs this round started.
    const claimableUpTo = full ? { owner: p.owner, maxRunningPerJob: p.maxRunningPerJob } : undefined;
    const { jobs, waitingPriority } = await lockJobs(tx, jobIds, Boolean(p.claim && p.sliceItems), claimableUpTo);
    if (jobs.length === 0) return nothing(started);
    const { recorded, promoted, after, providers } = await recordRound(tx, p, jobs);
    for (const job of jobs) job.status = after.get(job.jobId) ?? job.status;
    const running = jobs.filter((j) => j.status === 'running');
    const { claimed, turnOver } = p.claim ? await claimItems(tx, running, waitingPriority, providers, p) : { claimed: [], turnOver: new Set<string>() };
    if (claimed.length > 0) p.onClaimed?.(claimed);
    // Whether a running job may hand on is the swap's to say, with its provider's count.
    const reserves = new Map(jobs.filter((j) => !p.claim || j.status !== 'running' || turnOver.has(j.jobId)).map((j) => [j.jobId, 'release' as const]));
    return { started, recorded, claimed, promoted, reserves, providers };
  });
}

/**
 * `pf`: a round's feedback per (provider, model) of `jobs` (a relation of job_id, config), from the
 * outcomes `o`: ok, throttled and failed signals, the longest Retry-After, the mean latency of the
 * successes; zero for a provider whose jobs had no outcome. Both kinds of round use it.
 */
const roundFeedbackCte = (jobs: SQL) => sql`
    pf as (
      select l.config->>'provider' as provider, l.config->>'model' as model,
             (count(*) filter (where o.signal = 'ok'))::int as ok,
             (count(*) filter (where o.signal = 'throttled'))::int as throttled,
             (count(*) filter (where o.signal = 'failed'))::int as failed,
             nullif(max(coalesce(o."retryAfterMs", 0)) filter (where o.signal in ('throttled', 'paced')), 0) as "retryAfterMs",
             avg(o."latencyMs") filter (where o.signal = 'ok') as "latencyMs"
      from (${jobs}) l left join o on o."jobId" = l.job_id group by 1, 2
    )`;

/** No feedback for the providers of these jobs: a round without outcomes still reads their budgets. */
function noFeedback(jobs: readonly LockedJob[]): ProviderFeedback[] {
  const byKey = new Map(jobs.map((j) => [providerKey(j.config), j.config]));
  return [...byKey.values()].map((c) => ({ provider: c.provider, model: c.model, ok: 0, throttled: 0, failed: 0, retryAfterMs: null, latencyMs: null }));
}

/** The best (lowest) priority of a startable pending job that has work left, or null: fair share's question. */
const WAITING_PRIORITY = sql`(
  select min(w.priority) from job_queue.caption_jobs w
  where w.status = 'pending' and not w.archived
    and exists (select 1 from job_queue.job_items i where i.job_id = w.job_id and i.status = 'pending')
    and not exists (
      select 1 from job_queue.job_dependencies d
      join job_queue.caption_jobs dep on dep.job_id = d.depends_on_job_id
      where d.job_id = w.job_id and dep.status <> 'completed'))`;

/**
 * Locks job rows, always in job id order: every transaction that touches a job locks its row
 * before its items, and several rows in one order, so recordings, claims and cancels never
 * deadlock. FOR NO KEY UPDATE, as the round's own updates take: it excludes other rounds and
 * cancels (FOR UPDATE) but not the item writer adding a running job's next chunk (FOR KEY SHARE),
 * which would otherwise hold up the job's dispatch for the length of every chunk.
 * With `claimableUpTo`, also every claimable job (claimableJob). With `waiting`, also
 * reads the best (lowest) priority of a startable pending job that has work left (fair share), or
 * null when none waits.
 */
async function lockJobs(
  tx: Db,
  jobIds: readonly string[],
  waiting = false,
  claimableUpTo?: { owner: string; maxRunningPerJob: number },
): Promise<{ jobs: LockedJob[]; waitingPriority: number | null }> {
  const waitingPriority = waiting ? WAITING_PRIORITY : sql`null::int`;
  const { rows } = await tx.execute<LockedJob & { waitingPriority: number | null }>(sql`
    select job_id as "jobId", status, config, request_id as "requestId", slice_items as "sliceItems", priority,
           ${waitingPriority} as "waitingPriority"
    from job_queue.caption_jobs j
    where j.job_id = any(${pgArray(jobIds)}::uuid[]) ${claimableUpTo === undefined ? sql`` : sql`or ${claimableJob(claimableUpTo.owner, claimableUpTo.maxRunningPerJob)}`}
    order by j.job_id for no key update`);
  return { jobs: rows, waitingPriority: rows[0]?.waitingPriority ?? null };
}

/**
 * The outcomes as the relation `o` and the CTEs that record them: `written`, the items still the
 * owner's (running under its lease; pending in its reserve when the outcome says `reserved`), set
 * to their outcome; `promoted` and `released`, the reserve's changes; `captions`; `d`, what
 * finished per job (for the roll-up). `gate` is a condition the item updates wait for (a statement
 * that locks its job rows itself makes them wait for those locks: the one lock order, jobs before
 * items).
 */
function recordCtes(
  p: Pick<RecordAndClaimParams, 'owner' | 'outcomes' | 'promote' | 'release' | 'leaseSeconds'>,
  gate: SQL = sql`true`,
): SQL {
  const rows = p.outcomes.map((o) => ({
    itemId: o.itemId,
    jobId: o.jobId,
    processingTime: o.processingTime,
    reserved: o.reserved === true,
    signal: o.signal?.kind ?? null,
    latencyMs: o.signal?.kind === 'ok' ? o.signal.latencyMs : null,
    retryAfterMs: o.signal?.kind === 'throttled' || o.signal?.kind === 'paced' ? o.signal.retryAfterMs : null,
    ...(o.status === 'completed'
      ? { status: 'completed', result: o.result, rawText: o.rawText }
      : { status: o.retryInMs === null ? 'failed' : 'pending', error: o.error, retryInMs: o.retryInMs, giveBack: o.status === 'deferred' }),
  }));
  const ids = (refs: readonly ItemRef[] | undefined) => pgArray((refs ?? []).map((r) => r.itemId));
  return sql`
    o as (
      select * from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb)
        as o("itemId" uuid, "jobId" uuid, status text, "processingTime" int, reserved boolean, error text, "retryInMs" int,
             result jsonb, "rawText" text, "giveBack" boolean, signal text, "latencyMs" float8, "retryAfterMs" int)
    ), written as (
      update job_queue.job_items i
      set status = o.status, error = o.error, processing_time = o."processingTime",
          -- A reserved item's attempt was not counted yet; a deferral gives the attempt back.
          attempts = greatest(i.attempts + (case when o.reserved then 1 else 0 end) - (case when o."giveBack" then 1 else 0 end), 0),
          started_at = case when o.reserved then now() - make_interval(secs => o."processingTime" / 1000.0) else i.started_at end,
          next_attempt_at = case when o.status = 'pending' then now() + make_interval(secs => o."retryInMs" / 1000.0) end,
          completed_at = case when o.status <> 'pending' then now() end,
          lease_owner = null, lease_expires_at = null, updated_at = now()
      from o
      -- The items through the primary key too: else the planner fetches every item the partial
      -- index of running items still lists (dead entries included, until a vacuum) and filters.
      where i.id = any(array(select "itemId" from o)) and i.id = o."itemId"
        and i.status = case when o.reserved then 'pending' else 'running' end and i.lease_owner = ${p.owner} and ${gate}
      returning i.id, i.image_id, i.perspective, i.job_id, i.status, o.reserved
    ), promoted as (
      update job_queue.job_items i
      set status = 'running', attempts = i.attempts + 1, lease_expires_at = now() + make_interval(secs => ${p.leaseSeconds}),
          next_attempt_at = null, started_at = now(), updated_at = now()
      where i.id = any(${ids(p.promote)}::uuid[]) and i.status = 'pending' and i.lease_owner = ${p.owner} and ${gate}
      returning i.id, i.job_id
    ), released as (
      update job_queue.job_items i
      set lease_owner = null, lease_expires_at = null, updated_at = now()
      where i.id = any(${ids(p.release)}::uuid[]) and i.status = 'pending' and i.lease_owner = ${p.owner} and ${gate}
      returning i.id
    ), captions as (
      ${insertCaptionsFrom(sql`(
        select w.id as item_id, w.image_id, w.perspective, w.job_id, o.result, o."rawText" as raw_text,
               null::text as model, null::text as provider
        from written w join o on o."itemId" = w.id where w.status = 'completed')`)}
    ), staged as (
      ${stageCaptionChanges(sql`captions`)}
    ), d as (
      -- A retry or a deferral (pending again) finishes nothing.
      select job_id as "jobId", (count(*) filter (where status = 'completed'))::int as completed,
             (count(*) filter (where status = 'failed'))::int as failed, 0 as cancelled
      from written where status in ('completed', 'failed') group by job_id
    )`;
}

/**
 * The roll-up of `d` (rollUpCtes, `before` as there) and the fair-share count of the slots each
 * job took (`took`: job_id, n) in one update per job row: a row is updated once per statement, so
 * the roll-up counts the turn of the jobs it updates and `turns` those of the others.
 */
function rollUpAndTurns(took: SQL, before?: SQL): SQL {
  return sql`took as (${took}), ${rollUpCtes({
    before,
    set: sql`slice_items = slice_items + coalesce((select t.n from took t where t.job_id = j.job_id), 0)`,
  })}, turns as (
      update job_queue.caption_jobs j set slice_items = slice_items + t.n
      from took t where j.job_id = t.job_id and t.job_id not in (select "jobId" from d)
    )`;
}

/**
 * Records a round's outcomes and reserve changes, in one statement after the job rows' locks: the
 * outcomes whose item is still the owner's, their captions, the jobs' counters, status and events
 * (rollUpCtes), the promotions, and, with adaptive dispatch, the providers' feedback (their rows
 * locked after the job rows, the one lock order every round keeps). One statement because on a
 * busy machine every round trip costs milliseconds.
 */
async function recordRound(
  tx: Db,
  p: Pick<RecordAndClaimParams, 'owner' | 'outcomes' | 'promote' | 'release' | 'leaseSeconds' | 'providers'>,
  jobs: readonly LockedJob[],
): Promise<{ recorded: ItemOutcome[]; promoted: string[]; after: Map<string, JobStatus>; providers: ProviderBudget[] }> {
  const settings = p.providers;
  if (p.outcomes.length === 0 && !p.promote?.length && !p.release?.length) {
    return { recorded: [], promoted: [], after: new Map(), providers: settings ? await updateProviders(tx, noFeedback(jobs), settings) : [] };
  }
  // The jobs' rows, locked by this transaction already.
  const roundJobs = sql`select job_id, config from job_queue.caption_jobs where job_id = any(${pgArray(jobs.map((j) => j.jobId))}::uuid[])`;
  const providerPart = settings ? sql`, ${roundFeedbackCte(roundJobs)}, ${providerCtes(settings)}` : sql``;
  const { rows: [result] } = await tx.execute<{
    recorded: string[];
    promoted: string[];
    jobs: { jobId: string; after: JobStatus }[];
    providers: ProviderBudget[];
    feedback: ProviderFeedback[];
  }>(sql`
    with ${recordCtes(p)}, ${rollUpAndTurns(sql`select job_id, count(*)::int as n from promoted group by job_id`)}${providerPart}
    select (select coalesce(jsonb_agg(id), '[]'::jsonb) from written) as recorded,
           (select coalesce(jsonb_agg(id), '[]'::jsonb) from promoted) as promoted,
           (select coalesce(jsonb_agg(jsonb_build_object('jobId', job_id, 'after', status)), '[]'::jsonb) from rolled) as jobs,
           ${settings ? sql`(select coalesce(jsonb_agg(${PROVIDER_BUDGET_JSON}), '[]'::jsonb) from pupdated)` : sql`'[]'::jsonb`} as providers,
           ${settings ? sql`(select coalesce(jsonb_agg(pf), '[]'::jsonb) from pf)` : sql`'[]'::jsonb`} as feedback,
           ${ROLL_UP_NOTIFY}`);
  const written = new Set(result!.recorded);
  const feedback = result!.feedback;
  let providers = result!.providers;
  // A provider seen for the first time had no row for the statement to update: updateProviders
  // gives it one and applies its feedback.
  if (settings && providers.length < feedback.length) {
    const known = new Set(providers.map(providerKey));
    providers = providers.concat(await updateProviders(tx, feedback.filter((f) => !known.has(providerKey(f))), settings));
  }
  return {
    recorded: p.outcomes.filter((o) => written.has(o.itemId)),
    promoted: result!.promoted,
    after: new Map(result!.jobs.map((j) => [j.jobId, j.after])),
    providers,
  };
}

/**
 * Claims the next ready items of these running jobs, their rows locked: as many per job as keep
 * its running items (all replicas counted) within `maxRunningPerJob`, each with a lease for `owner`
 * and one more attempt.
 *
 * Spread: `owner` takes no more than its share of a job's slots, maxRunningPerJob divided by the
 * dispatchers connected (rounded up). A slot is handed on within the replica that holds it for the
 * rest of a turn, so without this the replica that starts a job would keep all its slots, and the
 * others idle. Each live replica claims its share when the NOTIFY of the start wakes it; a replica
 * that dies drops its connection, and the others' shares grow in their next round.
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
async function claimItems(
  tx: Db,
  jobs: LockedJob[],
  waitingPriority: number | null,
  providers: readonly ProviderBudget[],
  p: Pick<RecordAndClaimParams, 'owner' | 'leaseSeconds' | 'maxRunningPerJob' | 'sliceItems'>,
): Promise<{ claimed: ClaimedItem[]; turnOver: Set<string> }> {
  const isOver = (job: LockedJob) =>
    Boolean(p.sliceItems) && job.sliceItems >= p.sliceItems! && waitingPriority !== null && waitingPriority <= job.priority;
  const turnOver = new Set(jobs.filter(isOver).map((j) => j.jobId));
  if (turnOver.size > 0) await endTurns(tx, [...turnOver]);
  const budget = new Map(providers.map((b) => [providerKey(b), b]));
  const providerOf = (j: LockedJob) => budget.get(providerKey(j.config));
  const claimableJobs = jobs.filter((j) => !turnOver.has(j.jobId) && providerOf(j)?.budget !== 0);
  if (claimableJobs.length === 0) return { claimed: [], turnOver };
  const wanted = claimableJobs.map((j) => ({ jobId: j.jobId, provider: j.config.provider, model: j.config.model, budget: providerOf(j)?.budget ?? null }));
  // A later statement than the recording and the provider locks: the running counts (of the job,
  // and of its provider across all jobs and replicas) see this transaction's own outcomes. A
  // provider's budget goes to its jobs in queue order.
  const { rows } = await tx.execute<Omit<ClaimedItem, 'config' | 'requestId'>>(sql`
    with live as (select ${liveDispatchers(p.owner)} as n), w as (
      -- free: the job's free slots, but no more than take the owner to its share of the job's slots.
      select w.*, j.priority, j.queue_position, j.created_at,
             greatest(0, least(${p.maxRunningPerJob} - r.running,
                               ceil(${p.maxRunningPerJob}::numeric / (select n from live))::int - r.mine)) as free
      from jsonb_to_recordset(${JSON.stringify(wanted)}::jsonb) as w("jobId" uuid, provider text, model text, budget int)
      join job_queue.caption_jobs j on j.job_id = w."jobId"
      cross join lateral (
        select count(*) as running, count(*) filter (where r.lease_owner = ${p.owner}) as mine
        from job_queue.job_items r where r.job_id = w."jobId" and r.status = 'running') r
    ), busy as (
      ${runningPerProvider(sql`exists (select 1 from w where w.budget is not null)`)}
    ), wanted as (
      select w."jobId" as job_id,
             case when w.budget is null then w.free
                  else least(w.free, greatest(0, w.budget - coalesce(b.running, 0)
                    - coalesce(sum(w.free) over (partition by w.provider, w.model
                                                 order by w.priority, w.queue_position, w.created_at, w."jobId"
                                                 rows between unbounded preceding and 1 preceding), 0))) end as n
      from w left join busy b on b.provider = w.provider and b.model = w.model
    ), ${claimCtes(p.owner, p.leaseSeconds)}, turns as (
      update job_queue.caption_jobs j set slice_items = slice_items + c.n
      from (select "jobId", count(*) as n from claimed group by "jobId") c
      where j.job_id = c."jobId"
    )
    select "itemId", "jobId", "imagePath", perspective, attempts from claimed order by "jobId", seq`);
  const byId = new Map(jobs.map((j) => [j.jobId, j]));
  const claimed = rows.map((r) => {
    const job = byId.get(r.jobId)!;
    return { ...r, config: job.config, requestId: job.requestId, ...(providerOf(job)?.probe ? { probe: true } : {}) };
  });
  return { claimed, turnOver };
}

/**
 * `picked`: the next ready items of each job of `wanted` (job_id, n: how many), locked, skipping
 * those another transaction holds and those in another replica's reserve (`owner`'s own come
 * first, being first in line); `claimed`: those items, running for `owner` under a lease with one
 * more attempt.
 */
const claimCtes = (owner: string, leaseSeconds: number) => sql`
    picked as (
      select w.job_id, next.id from wanted w
      cross join lateral (
        select id from job_queue.job_items i
        where i.job_id = w.job_id and ${claimable(owner)}
        order by seq limit greatest(w.n, 0)
        for update skip locked) next
    ), claimed as (
      update job_queue.job_items i
      set status = 'running', attempts = i.attempts + 1, lease_owner = ${owner},
          lease_expires_at = now() + make_interval(secs => ${leaseSeconds}), next_attempt_at = null,
          started_at = now(), updated_at = now()
      -- By primary key, row by row: joined, the planner's guess of 100 picked rows (jsonb_to_recordset's
      -- default) made it hash the whole table, a sequential scan of every item per claim.
      where i.id = any(array(select id from picked))
      returning i.id as "itemId", i.job_id as "jobId", i.image_path as "imagePath", i.perspective, i.attempts, i.seq
    )`;

/**
 * Jobs whose turn is over claim no more; those with nothing left in flight go back to pending, at
 * the back of their priority, and the dispatchers are woken for the freed slot.
 */
async function endTurns(tx: Db, jobIds: readonly string[]): Promise<void> {
  const { rows } = await tx.execute<{ jobId: string }>(sql`
    update job_queue.caption_jobs j
    set status = 'pending', queue_position = nextval('job_queue.caption_jobs_queue_position_seq'), updated_at = now()
    where j.job_id = any(${pgArray(jobIds)}::uuid[])
      and not exists (select 1 from job_queue.job_items i where i.job_id = j.job_id and i.status = 'running')
    returning j.job_id as "jobId"`);
  if (rows.length === 0) return;
  await recordJobStatusChanges(
    tx,
    rows.map(({ jobId }) => ({ jobId, from: 'running', reason: 'turn ended: another job of the same or a higher priority is waiting' })),
  );
  await notifyWork(tx);
}

export interface RecordAndSwapParams extends ReserveChanges {
  owner: string;
  /** Outcomes of items `owner` holds; each is recorded only while the item is still the owner's. */
  outcomes: readonly ItemOutcome[];
  /** Items to add to the owner's reserve, per job (while the job is running and its turn not over). */
  reserve?: readonly { jobId: string; n: number }[];
  leaseSeconds: number;
  maxRunningPerJob: number;
  sliceItems?: number;
  providers?: ProviderSettings;
}

export interface RecordAndSwapResult extends RecordAndClaimResult {
  /** None: starting jobs is a full round's. */
  started: [];
  /** Items added to the owner's reserve: pending, leased to it; `attempts` counts the attempt a call would be. */
  reserved: ClaimedItem[];
  /**
   * The caps may allow more than this round could claim (slots free beyond those it freed, a turn
   * to end, a provider without a row yet): a full round (recordAndClaim) should follow.
   */
  more: boolean;
}

/**
 * The steady-state round, one statement in autocommit: records the outcomes and the reserve's
 * changes (as recordAndClaim does), claims, in their jobs, at most as many items as the round took
 * out of running, per job and per provider, and tops up the reserve. One round trip and one commit
 * instead of five round trips: at a few items in flight, the round trips were most of an item's
 * cycle (bench/README.md).
 *
 * One statement has one snapshot, taken before it waits for the job rows' locks, so its counts of
 * running items may miss another replica's claims committed in between; that is why it never
 * claims more than it frees (outcomes of running items less promotions): the running items of a
 * job or provider do not grow, so a cap that held before holds after, whatever the counts missed.
 * Within that, it claims no more than the counts and the providers' budgets allow. What needs a
 * fresh count (slots free beyond those freed, ending a turn) it leaves to recordAndClaim, flagging
 * `more`. Reserving takes no slot, so it needs no count.
 */
export async function recordAndSwap(db: Db, p: RecordAndSwapParams): Promise<RecordAndSwapResult> {
  const s = p.providers;
  const jobIds = [...new Set([...p.outcomes, ...(p.promote ?? []), ...(p.release ?? []), ...(p.reserve ?? [])].map((o) => o.jobId))];
  // The job rows first, always: the item and provider updates wait for this lock (recordCtes' gate, pf).
  const locked = sql`(select count(*) from locked) >= 0`;
  const providerPart = s
    ? sql`
    ${roundFeedbackCte(sql`select job_id, config from locked`)}, ${providerCtes(s)},
    pb as (select provider, model, ${PROVIDER_BUDGET_JSON} as b from pupdated),
    busy as (${runningPerProvider()}),`
    : sql``;
  const { rows: [r] } = await db.execute<{
    recorded: string[];
    promoted: string[];
    claimed: (Omit<ClaimedItem, 'config' | 'requestId' | 'probe'> & { probe: boolean })[];
    reserved: Omit<ClaimedItem, 'config' | 'requestId' | 'probe'>[];
    jobs: { jobId: string; config: JobConfig; requestId: string | null; reserve: ReserveState }[];
    providers: ProviderBudget[];
    more: boolean;
  }>(sql`
    with locked as (
      select job_id, status, config, request_id, slice_items, priority, queue_position, created_at
      from job_queue.caption_jobs where job_id = any(${pgArray(jobIds)}::uuid[])
      order by job_id for no key update
    ), ${recordCtes(p, locked)},
    ${providerPart}
    freed as (
      -- Per job: running items the round takes out (outcomes of running items) less those it puts in (promotions).
      select l.job_id,
             ((select count(*) from written w where w.job_id = l.job_id and not w.reserved)
              - (select count(*) from promoted m where m.job_id = l.job_id))::int as n
      from locked l
    ), pfreed as (
      select l.config->>'provider' as provider, l.config->>'model' as model, sum(f.n)::int as n
      from freed f join locked l on l.job_id = f.job_id group by 1, 2
    ), shares as (
      -- Per running job: what it freed; its free slots and its provider's as the snapshot counts them.
      select l.job_id, l.config->>'provider' as provider, l.config->>'model' as model, l.priority, l.queue_position, l.created_at,
             t.turn_over, t.turn_left, greatest(f.n, 0) as freed, greatest(pf.n, 0) as pfreed,
             case when t.turn_over then 0
                  else greatest(0, ${p.maxRunningPerJob} - ((select count(*) from job_queue.job_items r
                                                             where r.job_id = l.job_id and r.status = 'running') - f.n)) end as free,
             ${s ? sql`case when pb.b is not null then greatest(0, (pb.b->>'budget')::int - (coalesce(b.running, 0) - pf.n)) end` : sql`null::int`} as pfree,
             -- The provider runs more than its budget (a lowered limit): no slot of it is handed on.
             ${s ? sql`coalesce((pb.b->>'budget')::int < coalesce(b.running, 0) - pf.n, false)` : sql`false`} as pover,
             ${s ? sql`coalesce((pb.b->>'probe')::boolean, false)` : sql`false`} as probe
      from locked l
      join freed f on f.job_id = l.job_id
      join pfreed pf on pf.provider = l.config->>'provider' and pf.model = l.config->>'model'
      ${s ? sql`left join pb on pb.provider = l.config->>'provider' and pb.model = l.config->>'model'
                left join busy b on b.provider = l.config->>'provider' and b.model = l.config->>'model'` : sql``}
      cross join lateral (select coalesce(${p.sliceItems ?? 0} > 0 and ${WAITING_PRIORITY} <= l.priority, false) as waiting) v
      -- While a job waits for a slot, a turn ends after sliceItems; no reserve beyond what is left of it.
      cross join lateral (select v.waiting and l.slice_items >= ${p.sliceItems ?? 0} as turn_over,
                                 case when v.waiting then greatest(0, ${p.sliceItems ?? 0} - l.slice_items) end as turn_left) t
      where l.status = 'running'
    ), wanted as (
      -- n: what this statement claims, never more than freed (of the job, of its provider);
      -- n_free: what the counts alone would allow. A provider's slots go to its jobs in queue order.
      select job_id, probe, turn_over, turn_left, pover,
             case when pfree is null then least(freed, free)
                  else least(freed, free, greatest(0, least(pfreed, pfree) - coalesce(sum(least(freed, free)) over q, 0))) end as n,
             case when pfree is null then free
                  else least(free, greatest(0, pfree - coalesce(sum(free) over q, 0))) end as n_free
      from shares
      window q as (partition by provider, model order by priority, queue_position, created_at, job_id
                   rows between unbounded preceding and 1 preceding)
    ), ${claimCtes(p.owner, p.leaseSeconds)}, rpicked as (
      -- The reserve's new items: the next free ones after those claimed (which the snapshot still sees pending).
      select w.job_id, next.id from wanted w
      join jsonb_to_recordset(${JSON.stringify(p.reserve ?? [])}::jsonb) as r("jobId" uuid, n int) on r."jobId" = w.job_id
      cross join lateral (
        select id from job_queue.job_items i
        where i.job_id = w.job_id and ${claimable()}
          and i.seq > coalesce((select max(c.seq) from claimed c where c."jobId" = w.job_id), 0)
        order by seq limit greatest(0, least(r.n, coalesce(w.turn_left, r.n)))
        for update skip locked) next
      where not w.turn_over
    ), reserved as (
      update job_queue.job_items i
      set lease_owner = ${p.owner}, lease_expires_at = now() + make_interval(secs => ${p.leaseSeconds}), updated_at = now()
      where i.id = any(array(select id from rpicked))
      returning i.id as "itemId", i.job_id as "jobId", i.image_path as "imagePath", i.perspective, i.attempts + 1 as attempts, i.seq
    ), ${rollUpAndTurns(
      sql`select job_id, count(*)::int as n from (select "jobId" as job_id from claimed union all select job_id from promoted) t group by job_id`,
      sql`select job_id, status from locked`,
    )}
    select (select coalesce(jsonb_agg(id), '[]'::jsonb) from written) as recorded,
           (select coalesce(jsonb_agg(id), '[]'::jsonb) from promoted) as promoted,
           (select coalesce(jsonb_agg(jsonb_build_object('itemId', c."itemId", 'jobId', c."jobId", 'imagePath', c."imagePath",
                                                         'perspective', c.perspective, 'attempts', c.attempts, 'probe', w.probe)
                                      order by c."jobId", c.seq), '[]'::jsonb)
            from claimed c join wanted w on w.job_id = c."jobId") as claimed,
           (select coalesce(jsonb_agg(jsonb_build_object('itemId', v."itemId", 'jobId', v."jobId", 'imagePath', v."imagePath",
                                                         'perspective', v.perspective, 'attempts', v.attempts)
                                      order by v."jobId", v.seq), '[]'::jsonb)
            from reserved v) as reserved,
           (select jsonb_agg(jsonb_build_object('jobId', l.job_id, 'config', l.config, 'requestId', l.request_id,
                                                'reserve', case when w.turn_over is not false then 'release' when w.pover then 'hold' else 'flow' end))
            from locked l left join wanted w on w.job_id = l.job_id) as jobs,
           ${s ? sql`(select coalesce(jsonb_agg(b), '[]'::jsonb) from pb)` : sql`'[]'::jsonb`} as providers,
           (${s ? sql`(select count(*) from pb) < (select count(*) from pf)` : sql`false`}
            or exists (select 1 from wanted w
                       where w.turn_over
                          or (w.n_free > w.n and w.n = (select count(*) from picked k where k.job_id = w.job_id)
                              -- Free slots and items to fill them beyond this round's.
                              and exists (select 1 from job_queue.job_items i
                                          where i.job_id = w.job_id and ${claimable(p.owner)}
                                            and i.id <> all(array(select id from picked)) and i.id <> all(array(select id from rpicked)))))) as more,
           ${ROLL_UP_NOTIFY}`);
  const written = new Set(r!.recorded);
  const jobs = new Map((r!.jobs ?? []).map((j) => [j.jobId, j]));
  const withJob = (item: Omit<ClaimedItem, 'config' | 'requestId' | 'probe'>): ClaimedItem => {
    const job = jobs.get(item.jobId)!;
    return { ...item, config: job.config, requestId: job.requestId };
  };
  return {
    started: [],
    recorded: p.outcomes.filter((o) => written.has(o.itemId)),
    promoted: r!.promoted,
    claimed: r!.claimed.map(({ probe, ...item }) => ({ ...withJob(item), ...(probe ? { probe: true } : {}) })),
    reserved: r!.reserved.map(withJob),
    reserves: new Map([...jobs.values()].map((j) => [j.jobId, j.reserve])),
    providers: r!.providers,
    more: r!.more,
  };
}

/** An item `owner` holds: running under its lease, or pending in its reserve. */
const heldBy = (owner: string) => sql`status in ('running', 'pending') and lease_owner = ${owner}`;

/**
 * Renews the leases `owner` holds on these items (running or reserved), in one UPDATE. Returns the
 * renewed items and the lost ones: gone, finished, cancelled, or taken by another replica after
 * the lease expired.
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
          where id = any(${pgArray(p.itemIds)}::uuid[]) and ${heldBy(p.owner)}
          for update skip locked) mine
    where i.id = mine.id
    returning i.id`);
  const renewed = new Set(rows.map((r) => r.id));
  const rest = p.itemIds.filter((id) => !renewed.has(id));
  if (rest.length === 0) return { renewed: [...renewed], lost: [] };
  const { rows: held } = await db.execute<{ id: string }>(sql`
    select id from job_queue.job_items
    where id = any(${pgArray(rest)}::uuid[]) and ${heldBy(p.owner)}`);
  const stillHeld = new Set(held.map((r) => r.id));
  return { renewed: [...renewed], lost: rest.filter((id) => !stillHeld.has(id)) };
}

/**
 * Gives back items `owner` still holds, running or reserved (at shutdown): pending again at once,
 * the attempt not counted, and every dispatcher woken so another replica takes them now rather
 * than after the lease. Items another transaction is finishing right now are left to it.
 */
export async function releaseItems(db: Db, p: { owner: string; itemIds: string[] }): Promise<number> {
  if (p.itemIds.length === 0) return 0;
  return db.transaction(async (tx) => {
    const released = await tx.execute(sql`
      update job_queue.job_items i
      set status = 'pending', attempts = case when i.status = 'running' then greatest(i.attempts - 1, 0) else i.attempts end,
          lease_owner = null, lease_expires_at = null, started_at = null, updated_at = now()
      from (select id from job_queue.job_items
            where id = any(${pgArray(p.itemIds)}::uuid[]) and ${heldBy(p.owner)}
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
      await lockJobs(tx, [jobId]);
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
      if (failed.rowCount) await rollUpJobs(tx, [{ jobId, completed: 0, failed: failed.rowCount, cancelled: 0 }]);
      if (retried.rowCount) await notifyWork(tx);
      total.failed += failed.rowCount ?? 0;
      total.retried += retried.rowCount ?? 0;
    });
  }
  return total;
}
