/**
 * The dispatcher's queries on their own, against real PostgreSQL: caps under concurrent claims from
 * separate connections, the recording guard, leases (renew, rescue, release) and broken
 * dependencies. This service has no bridge URL, so its own dispatcher stays idle.
 */
import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, type Db } from '../../src/db/client.js';
import {
  dispatcherConnectionName,
  extendLeases,
  failJobsWithBrokenDependencies,
  recordAndClaim,
  recordAndSwap,
  releaseItems,
  rescueExpiredLeases,
  startRunnableJobs,
  STOPPING_DISPATCHER,
  type ItemOutcome,
} from '../../src/db/dispatch.js';
import * as schema from '../../src/db/schema.js';
import { createLogger } from '../../src/logger.js';
import { createJob, finishItem, IMAGES, itemIds } from '../helpers/fixtures.js';
import { dispatcherNames, itemStates, jobState, waitFor } from '../helpers/jobs.js';
import { api, startTestService, type TestService } from '../helpers/service.js';

let svc: TestService;
const pools: pg.Pool[] = [];
/** Separate pools: each stands for a replica with connections of its own. */
let replicas: Db[];

beforeAll(async () => {
  svc = await startTestService();
  replicas = Array.from({ length: 4 }, () => {
    const pool = createPool(svc.database.url, 3, createLogger('silent'));
    pools.push(pool);
    return drizzle(pool, { schema });
  });
});
afterAll(async () => {
  await Promise.all(pools.map((p) => p.end()));
  await svc?.close();
});

const RESULT = { caption: 'a test caption' };

/** No job running: every test starts from an empty slot table. */
async function finishRunningJobs(): Promise<void> {
  await svc.db.execute(sql`update job_queue.caption_jobs set status = 'cancelled' where status in ('pending', 'running', 'paused')`);
}

async function runningJob(body: Record<string, unknown> = {}) {
  await finishRunningJobs();
  const job = await createJob(svc.url, { perspectives: ['art_critic', 'storytelling', 'graph_caption'], imagePaths: [...IMAGES], ...body });
  expect(await startRunnableJobs(svc.db, 1)).toEqual([job.jobId]);
  return job;
}

const LEASE = { leaseSeconds: 30, maxRunningPerJob: 4 };

const claim = async (db: Db, jobId: string, owner: string, maxRunningPerJob = 4) =>
  (await recordAndClaim(db, { ...LEASE, owner, outcomes: [], claimIn: [jobId], claim: true, maxRunningPerJob })).claimed;

/** Records one outcome as `owner`, claiming nothing; true when it was written. */
async function record(db: Db, owner: string, outcome: ItemOutcome): Promise<boolean> {
  const { recorded, claimed } = await recordAndClaim(db, { ...LEASE, owner, outcomes: [outcome], claimIn: [], claim: false });
  expect(claimed).toEqual([]);
  return recorded.length === 1;
}

type Held = { itemId: string; jobId: string; owner: string; processingTime: number };
const recordItemSuccess = (db: Db, o: Held & { result: Record<string, unknown>; rawText: string | null }) =>
  record(db, o.owner, { itemId: o.itemId, jobId: o.jobId, processingTime: o.processingTime, status: 'completed', result: o.result, rawText: o.rawText });
const recordItemFailure = (db: Db, o: Held & { error: string; retryInMs: number | null }) =>
  record(db, o.owner, { itemId: o.itemId, jobId: o.jobId, processingTime: o.processingTime, status: 'failed', error: o.error, retryInMs: o.retryInMs });

async function expireLeases(jobId: string): Promise<void> {
  await svc.db.execute(sql`
    update job_queue.job_items set lease_expires_at = now() - interval '1 second'
    where job_id = ${jobId} and status = 'running'`);
}

describe('starting jobs', () => {
  it('starts jobs in queue order, never more than the cap, however many replicas decide at once', async () => {
    await finishRunningJobs();
    const low = await createJob(svc.url, { priority: 200 });
    const first = await createJob(svc.url, { priority: 100 });
    const second = await createJob(svc.url, { priority: 100 });
    const urgent = await createJob(svc.url, { priority: 5 });

    const started = (await Promise.all(replicas.flatMap((db) => [startRunnableJobs(db, 3), startRunnableJobs(db, 3)]))).flat();
    expect(started.sort()).toEqual([urgent.jobId, first.jobId, second.jobId].sort());
    expect((await jobState(svc.db, low.jobId)).status).toBe('pending');
    const states = await Promise.all([urgent, first, second].map((j) => jobState(svc.db, j.jobId)));
    expect(states.map((s) => [s.status, s.startedAt !== null])).toEqual(Array(3).fill(['running', true]));

    // A freed slot goes to the next job in the queue.
    expect(await startRunnableJobs(svc.db, 3)).toEqual([]);
    await api(svc.url, 'POST', `/api/perspectives/batch/cancel/${first.jobId}`);
    expect(await startRunnableJobs(svc.db, 3)).toEqual([low.jobId]);
  });

  it('does not start a job cancelled while the start waited for its row', async () => {
    await finishRunningJobs();
    const job = await createJob(svc.url, {});
    // Another transaction holds the job's row, as a cancel does, while the start decides.
    const holder = await pools[0]!.connect();
    try {
      await holder.query('begin');
      await holder.query('select 1 from job_queue.caption_jobs where job_id = $1 for update', [job.jobId]);
      const starting = startRunnableJobs(replicas[1]!, 5);
      await waitFor('the start to wait for the row', async () => {
        const { rows } = await svc.db.execute(sql`
          select 1 from pg_stat_activity
          where datname = current_database() and wait_event_type = 'Lock' and query like '%set status = ''running''%'`);
        return rows.length > 0;
      });
      await holder.query(`update job_queue.caption_jobs set status = 'cancelled' where job_id = $1`, [job.jobId]);
      await holder.query('commit');
      expect(await starting).toEqual([]);
    } finally {
      holder.release();
    }
    expect((await jobState(svc.db, job.jobId)).status).toBe('cancelled');
  });

  it('starts a job with dependencies only once they have all completed', async () => {
    await finishRunningJobs();
    const dependency = await createJob(svc.url, { imagePaths: [IMAGES[0]] });
    const dependent = await createJob(svc.url, { type: 'DEPENDENCY_CHAIN', dependsOn: [dependency.jobId], priority: 1 });
    expect(await startRunnableJobs(svc.db, 5)).toEqual([dependency.jobId]);
    await finishItem(svc.url, (await itemIds(svc.db, dependency.jobId))[0]!, 'completed');
    expect((await jobState(svc.db, dependency.jobId)).status).toBe('completed');
    expect(await startRunnableJobs(svc.db, 5)).toEqual([dependent.jobId]);
  });
});

describe('claiming items', () => {
  it('never lets the running items of a job exceed the cap, across concurrent claims from several connections', async () => {
    const job = await runningJob();
    const claims = await Promise.all(replicas.flatMap((db, i) => [claim(db, job.jobId, `r${i}`), claim(db, job.jobId, `r${i}`)]));
    const claimed = claims.flat();
    expect(claimed).toHaveLength(4);
    expect(new Set(claimed.map((c) => c.itemId)).size).toBe(4);
    const running = (await itemStates(svc.db, [job.jobId])).filter((i) => i.status === 'running');
    expect(running.map((i) => i.id).sort()).toEqual(claimed.map((c) => c.itemId).sort());
    expect(running.every((i) => i.attempts === 1 && i.leaseOwner !== null)).toBe(true);
    // The items carry what the bridge call needs.
    expect(claimed[0]).toMatchObject({ jobId: job.jobId, attempts: 1, config: { provider: 'gemini' } });

    // Full: nobody gets more until one finishes.
    expect(await claim(svc.db, job.jobId, 'late')).toEqual([]);
    const done = claimed[0]!;
    expect(await recordItemSuccess(svc.db, { ...done, owner: ownerOf(claims, done.itemId), processingTime: 5, result: RESULT, rawText: null })).toBe(true);
    expect(await claim(svc.db, job.jobId, 'late')).toHaveLength(1);
  });

  it('hands a full round\'s claims over before its commit, while no one else sees them or can lock the job', async () => {
    const job = await runningJob();
    // A commit made slow on purpose (a deferred trigger on this owner's claims), so "before the commit" is seen for sure.
    await svc.db.execute(sql.raw(`
      create function job_queue.test_slow_commit() returns trigger language plpgsql as $$
      begin perform pg_sleep(0.1); return null; end $$;
      create constraint trigger test_slow_commit after update on job_queue.job_items deferrable initially deferred
      for each row when (new.lease_owner = 'early') execute function job_queue.test_slow_commit()`));
    try {
      let handed: { ids: string[]; at: number; seen: Promise<{ running: number; lockable: boolean }> } | undefined;
      const result = await recordAndClaim(svc.db, {
        ...LEASE, owner: 'early', outcomes: [], claimIn: [job.jobId], claim: true,
        onClaimed: (items) => {
          const other = pools[1]!;
          const seen = Promise.all([
            other.query<{ n: number }>(`select count(*)::int as n from job_queue.job_items where job_id = $1 and status = 'running'`, [job.jobId]),
            other.query(`select 1 from job_queue.caption_jobs where job_id = $1 for update skip locked`, [job.jobId]),
          ]).then(([running, lock]) => ({ running: running.rows[0]!.n, lockable: lock.rowCount === 1 }));
          handed = { ids: items.map((i) => i.itemId), at: Date.now(), seen };
        },
      });
      const committedAt = Date.now();
      expect(handed).toBeDefined();
      expect(handed!.ids).toEqual(result.claimed.map((i) => i.itemId));
      expect(result.claimed).toHaveLength(4);
      // Four rows × 0.1 s of commit after the hand-over; meanwhile the claims were invisible and the job row locked.
      expect(committedAt - handed!.at).toBeGreaterThanOrEqual(300);
      expect(await handed!.seen).toEqual({ running: 0, lockable: false });
      expect((await itemStates(svc.db, [job.jobId])).filter((i) => i.status === 'running')).toHaveLength(4);
    } finally {
      await svc.db.execute(sql.raw(`
        drop trigger test_slow_commit on job_queue.job_items;
        drop function job_queue.test_slow_commit()`));
    }
  });

  it('claims nothing of a job that is not running, and no item waiting for its retry time', async () => {
    const job = await runningJob({ imagePaths: [IMAGES[0]], perspectives: ['art_critic'] });
    const [item] = await claim(svc.db, job.jobId, 'a');
    expect(await recordItemFailure(svc.db, { ...item!, owner: 'a', processingTime: 1, error: 'busy', retryInMs: 60_000 })).toBe(true);
    expect((await itemStates(svc.db, [job.jobId]))[0]).toMatchObject({ status: 'pending', attempts: 1, error: 'busy' });
    expect(await claim(svc.db, job.jobId, 'a')).toEqual([]);
    await svc.db.execute(sql`update job_queue.job_items set next_attempt_at = now() where job_id = ${job.jobId}`);
    const pendingJob = await createJob(svc.url, {});
    expect(await claim(svc.db, pendingJob.jobId, 'a')).toEqual([]);
    expect(await claim(svc.db, job.jobId, 'a')).toMatchObject([{ itemId: item!.itemId, attempts: 2 }]);
  });

  it('takes no more than its share of a job\'s slots while other dispatchers are connected, and their share once they are gone', async () => {
    const job = await runningJob(); // 21 items, 4 slots
    const connect = async (name: string) => {
      const client = new pg.Client({ connectionString: svc.database.url, application_name: name });
      await client.connect();
      return client;
    };
    const live = () => dispatcherNames(svc.db);
    // Its own connection does not count twice; two peers make three dispatchers: a share of ceil(4 / 3) = 2.
    const peers = await Promise.all(['me', 'peer-1', 'peer-2'].map((owner) => connect(dispatcherConnectionName(owner))));
    try {
      const mine = await claim(svc.db, job.jobId, 'me');
      expect(mine).toHaveLength(2);
      expect(await claim(svc.db, job.jobId, 'me')).toEqual([]);
      const theirs = await claim(svc.db, job.jobId, 'peer-1');
      expect(theirs).toHaveLength(2);
      expect(await running(job.jobId)).toHaveLength(4);

      // peer-1 finishes and goes, peer-2 stops: 'me' alone is left, and takes the slots it finds free.
      for (const item of theirs) expect(await record(svc.db, 'peer-1', completed(item))).toBe(true);
      await peers.splice(1, 1)[0]!.end();
      await peers[1]!.query(`select set_config('application_name', $1, false)`, [STOPPING_DISPATCHER]);
      await waitFor('peer-1 to disconnect', async () => (await live()).length === 2);
      expect(await live()).toEqual([dispatcherConnectionName('me'), STOPPING_DISPATCHER]);
      expect(await claim(svc.db, job.jobId, 'me')).toHaveLength(2);
      const held = await running(job.jobId);
      expect(held).toHaveLength(4);
      expect(held.every((i) => i.leaseOwner === 'me')).toBe(true);
    } finally {
      await Promise.all(peers.map((peer) => peer.end()));
    }
  });
});

function ownerOf(claims: { itemId: string }[][], itemId: string): string {
  return `r${Math.floor(claims.findIndex((c) => c.some((i) => i.itemId === itemId)) / 2)}`;
}

describe('recording', () => {
  it('records a caption exactly once, and discards a result for a cancelled item', async () => {
    const job = await runningJob({ imagePaths: IMAGES.slice(0, 2), perspectives: ['art_critic'] });
    const [a, b] = await claim(svc.db, job.jobId, 'a');
    const outcome = { owner: 'a', processingTime: 42, result: RESULT, rawText: '{"caption":"a test caption"}' };
    expect(await recordItemSuccess(svc.db, { ...a!, ...outcome })).toBe(true);
    expect(await recordItemSuccess(svc.db, { ...a!, ...outcome })).toBe(false);
    const { rows } = await svc.db.execute<{ n: number; model: string; rawText: string; version: string }>(sql`
      select count(*)::int as n, max(model) as model, max(raw_text) as "rawText", max(perspective_version) as version
      from core_schema.captions where item_id = ${a!.itemId}`);
    expect(rows[0]).toEqual({ n: 1, model: 'gemini-2.0-flash-exp', rawText: outcome.rawText, version: '1' });
    expect(await jobState(svc.db, job.jobId)).toMatchObject({ status: 'running', processedImages: 1, progress: 50 });

    expect((await api(svc.url, 'POST', `/api/perspectives/batch/cancel/${job.jobId}`)).status).toBe(200);
    expect(await recordItemSuccess(svc.db, { ...b!, ...outcome })).toBe(false);
    expect(await recordItemFailure(svc.db, { ...b!, owner: 'a', processingTime: 1, error: 'x', retryInMs: null })).toBe(false);
    const { rows: none } = await svc.db.execute(sql`select 1 from core_schema.captions where item_id = ${b!.itemId}`);
    expect(none).toHaveLength(0);
    expect(await jobState(svc.db, job.jobId)).toMatchObject({ status: 'cancelled', processedImages: 1, failedImages: 0, cancelledImages: 1 });
  });

  it('records a batch of several jobs at once, only what is still held, and claims into the freed slots', async () => {
    await finishRunningJobs();
    const a = await createJob(svc.url, { imagePaths: IMAGES.slice(0, 4), perspectives: ['art_critic'] });
    const b = await createJob(svc.url, { imagePaths: IMAGES.slice(0, 4), perspectives: ['storytelling'] });
    expect((await startRunnableJobs(svc.db, 2)).sort()).toEqual([a.jobId, b.jobId].sort());
    const [a1, a2] = await claim(svc.db, a.jobId, 'me', 2);
    const [b1, b2] = await claim(svc.db, b.jobId, 'me', 2);
    // b1 was taken over by another replica after our lease expired.
    await svc.db.execute(sql`update job_queue.job_items set lease_owner = 'other' where id = ${b1!.itemId}`);

    const outcomes: ItemOutcome[] = [
      { itemId: a1!.itemId, jobId: a.jobId, processingTime: 5, status: 'completed', result: RESULT, rawText: null },
      { itemId: a2!.itemId, jobId: a.jobId, processingTime: 6, status: 'failed', error: 'bad image', retryInMs: null },
      { itemId: b1!.itemId, jobId: b.jobId, processingTime: 7, status: 'completed', result: RESULT, rawText: null },
      { itemId: b2!.itemId, jobId: b.jobId, processingTime: 8, status: 'failed', error: 'busy', retryInMs: 60_000 },
    ];
    const { recorded, claimed } = await recordAndClaim(svc.db, {
      owner: 'me', outcomes, claimIn: [], claim: true, leaseSeconds: 30, maxRunningPerJob: 2,
    });
    expect(recorded.map((o) => o.itemId).sort()).toEqual([a1!.itemId, a2!.itemId, b2!.itemId].sort());
    const { rows: captions } = await svc.db.execute<{ itemId: string }>(sql`
      select item_id as "itemId" from core_schema.captions where job_id in (${a.jobId}, ${b.jobId})`);
    expect(captions).toEqual([{ itemId: a1!.itemId }]);
    expect(await jobState(svc.db, a.jobId)).toMatchObject({ status: 'running', processedImages: 1, failedImages: 1, progress: 50 });
    expect(await jobState(svc.db, b.jobId)).toMatchObject({ status: 'running', processedImages: 0, failedImages: 0 });

    // Job a freed both slots; job b one (b1 still runs under the other replica, b2 waits for its retry time).
    const states = await itemStates(svc.db, [a.jobId, b.jobId]);
    const byJob = (jobId: string) => claimed.filter((c) => c.jobId === jobId).map((c) => c.itemId).sort();
    const runningMine = (jobId: string) =>
      states.filter((s) => s.jobId === jobId && s.status === 'running' && s.leaseOwner === 'me').map((s) => s.id).sort();
    expect(byJob(a.jobId)).toHaveLength(2);
    expect(byJob(b.jobId)).toHaveLength(1);
    expect(byJob(a.jobId)).toEqual(runningMine(a.jobId));
    expect(byJob(b.jobId)).toEqual(runningMine(b.jobId));
    expect(byJob(b.jobId)).not.toContain(b2!.itemId);
    expect(states.find((s) => s.id === b2!.itemId)).toMatchObject({ status: 'pending', attempts: 1, error: 'busy' });
  });

  it('fails an item for good and rolls the job forward', async () => {
    const job = await runningJob({ imagePaths: [IMAGES[0]], perspectives: ['art_critic'] });
    const [item] = await claim(svc.db, job.jobId, 'a');
    expect(await recordItemFailure(svc.db, { ...item!, owner: 'a', processingTime: 7, error: 'bad image', retryInMs: null })).toBe(true);
    expect((await itemStates(svc.db, [job.jobId]))[0]).toMatchObject({ status: 'failed', error: 'bad image', processingTime: 7, leaseOwner: null });
    expect(await jobState(svc.db, job.jobId)).toMatchObject({ status: 'failed', failedImages: 1, progress: 100 });
  });
});

const completed = (item: { itemId: string; jobId: string }): ItemOutcome =>
  ({ itemId: item.itemId, jobId: item.jobId, processingTime: 4, status: 'completed', result: RESULT, rawText: null });
const swap = (db: Db, owner: string, outcomes: ItemOutcome[], extra: Partial<Parameters<typeof recordAndSwap>[1]> = {}) =>
  recordAndSwap(db, { ...LEASE, owner, outcomes, ...extra });
const running = async (jobId: string) => (await itemStates(svc.db, [jobId])).filter((i) => i.status === 'running');

const PROVIDERS = { maxLimit: 4, breakerFailures: 5, cooldownMs: 1000, maxCooldownMs: 10_000 };

/** A running job with adaptive dispatch from a clean provider state, its first four items claimed by 'me'. */
async function adaptiveJob() {
  const job = await runningJob();
  await svc.db.execute(sql`delete from job_queue.provider_states`);
  const { claimed: held } = await recordAndClaim(svc.db, { ...LEASE, owner: 'me', outcomes: [], claimIn: [job.jobId], claim: true, providers: PROVIDERS });
  expect(held).toHaveLength(4);
  return { job, held };
}

describe('the steady-state round (recordAndSwap)', () => {
  const sliceItems = async (jobId: string) =>
    (await svc.db.execute<{ n: number }>(sql`select slice_items::int as n from job_queue.caption_jobs where job_id = ${jobId}`)).rows[0]!.n;

  it('records its outcomes once and claims at most the slots they freed; free slots beyond those are flagged for a full round', async () => {
    const job = await runningJob();
    const held = await claim(svc.db, job.jobId, 'me', 2);
    expect(held).toHaveLength(2);

    // The cap (4) has two free slots besides the one this outcome frees: one claimed, the rest flagged.
    const first = await swap(svc.db, 'me', [completed(held[0]!)]);
    expect(first.recorded.map((o) => o.itemId)).toEqual([held[0]!.itemId]);
    expect(first.claimed).toHaveLength(1);
    expect(first.claimed[0]).toMatchObject({ jobId: job.jobId, attempts: 1, config: { provider: 'gemini' } });
    expect(first.more).toBe(true);
    expect((await running(job.jobId)).map((i) => i.id).sort()).toEqual([held[1]!.itemId, first.claimed[0]!.itemId].sort());
    expect(await jobState(svc.db, job.jobId)).toMatchObject({ status: 'running', processedImages: 1 });

    // The full round takes the free slots; then each swap keeps the job at its cap and flags nothing.
    const filled = await claim(svc.db, job.jobId, 'me');
    expect(filled).toHaveLength(2);
    const inFlight = [held[1]!, first.claimed[0]!, ...filled];
    const second = await swap(svc.db, 'me', [completed(inFlight[0]!), { ...completed(inFlight[1]!), status: 'failed', error: 'busy', retryInMs: 60_000 }]);
    expect(second.recorded).toHaveLength(2);
    expect(second.claimed).toHaveLength(2);
    expect(second.more).toBe(false);
    expect(await running(job.jobId)).toHaveLength(4);
    // A late outcome (recorded already) writes nothing and frees nothing.
    const late = await swap(svc.db, 'me', [completed(inFlight[0]!)]);
    expect(late).toMatchObject({ recorded: [], claimed: [], more: false });
    expect(await sliceItems(job.jobId)).toBe(2 + 1 + 2 + 2);
    const { rows } = await svc.db.execute<{ n: number }>(sql`select count(*)::int as n from core_schema.captions where job_id = ${job.jobId}`);
    expect(rows[0]!.n).toBe(2);
    expect(await jobState(svc.db, job.jobId)).toMatchObject({ processedImages: 2, failedImages: 0 });
  });

  it('keeps the cap when its counts miss claims another replica committed while it waited for the job row', async () => {
    const job = await runningJob();
    const mine = await claim(svc.db, job.jobId, 'me', 2);
    const holder = await pools[0]!.connect();
    try {
      await holder.query('begin');
      await holder.query('select 1 from job_queue.caption_jobs where job_id = $1 for update', [job.jobId]);
      // The swap's statement starts (its snapshot: two items running) and waits for the row.
      const swapping = swap(replicas[1]!, 'me', [completed(mine[0]!)]);
      await waitFor('the swap to wait for the job row', async () => {
        const { rows } = await svc.db.execute(sql`
          select 1 from pg_stat_activity
          where datname = current_database() and wait_event_type = 'Lock' and query like '%with locked as%'`);
        return rows.length > 0;
      });
      // Meanwhile another replica fills the two free slots and commits.
      await holder.query(`
        update job_queue.job_items set status = 'running', attempts = 1, lease_owner = 'other', lease_expires_at = now() + interval '30 seconds'
        where id in (select id from job_queue.job_items where job_id = $1 and status = 'pending' order by seq limit 2)`, [job.jobId]);
      await holder.query('commit');
      const result = await swapping;
      expect(result.recorded).toHaveLength(1);
      // Counted by its snapshot, 3 slots were free; it claims the one it freed, so the cap (4) holds.
      expect(result.claimed).toHaveLength(1);
      const now = await running(job.jobId);
      expect(now).toHaveLength(4);
      expect(now.filter((i) => i.leaseOwner === 'other')).toHaveLength(2);
      expect(new Set(now.map((i) => i.id)).size).toBe(4);
    } finally {
      holder.release();
    }
  });

  it('claims nothing for a cancelled or paused job, and ends no turn itself: a full round does', async () => {
    const cancelled = await runningJob();
    const [c1] = await claim(svc.db, cancelled.jobId, 'me');
    await api(svc.url, 'POST', `/api/perspectives/batch/cancel/${cancelled.jobId}`);
    expect(await swap(svc.db, 'me', [completed(c1!)])).toMatchObject({ recorded: [], claimed: [], more: false });

    const paused = await runningJob();
    const [p1] = await claim(svc.db, paused.jobId, 'me');
    await api(svc.url, 'POST', `/api/perspectives/batch/pause/${paused.jobId}`);
    const onPaused = await swap(svc.db, 'me', [completed(p1!)]);
    expect(onPaused.recorded).toHaveLength(1);
    expect(onPaused.claimed).toEqual([]);
    expect(await jobState(svc.db, paused.jobId)).toMatchObject({ status: 'paused', processedImages: 1 });

    // A job whose turn is over while another of its priority waits claims nothing; `more` asks for the round that ends the turn.
    const turn = await runningJob();
    const waiting = await createJob(svc.url, {});
    const items = await claim(svc.db, turn.jobId, 'me', 2);
    const ended = await swap(svc.db, 'me', [completed(items[0]!)], { sliceItems: 2 });
    expect(ended).toMatchObject({ claimed: [], more: true });
    await swap(svc.db, 'me', [completed(items[1]!)], { sliceItems: 2 });
    await recordAndClaim(svc.db, { ...LEASE, owner: 'me', outcomes: [], claimIn: [turn.jobId], claim: true, sliceItems: 2 });
    expect((await jobState(svc.db, turn.jobId)).status).toBe('pending');
    expect(await startRunnableJobs(svc.db, 1)).toEqual([waiting.jobId]);
  });

  it('claims within the provider\'s budget: none while its Retry-After runs, each call\'s feedback applied', async () => {
    const providers = PROVIDERS;
    const { job, held } = await adaptiveJob();

    const ok = await swap(svc.db, 'me', [{ ...completed(held[0]!), signal: { kind: 'ok', latencyMs: 40 } }], { providers });
    expect(ok.claimed).toHaveLength(1);
    expect(ok.providers).toMatchObject([{ provider: 'gemini', budget: 4, latencyMs: 40 }]);

    const throttled: ItemOutcome = {
      itemId: held[1]!.itemId, jobId: job.jobId, processingTime: 2, status: 'deferred', error: '429', retryInMs: 60_000,
      signal: { kind: 'throttled', retryAfterMs: 60_000 },
    };
    const blocked = await swap(svc.db, 'me', [throttled], { providers });
    expect(blocked.recorded).toHaveLength(1);
    expect(blocked.claimed).toEqual([]);
    expect(blocked.more).toBe(false);
    expect(blocked.providers[0]).toMatchObject({ budget: 0, concurrencyLimit: 2 });
    expect(blocked.providers[0]!.waitMs).toBeGreaterThan(50_000);
    expect((await itemStates(svc.db, [job.jobId])).find((i) => i.id === held[1]!.itemId)).toMatchObject({ status: 'pending', attempts: 0 });
  });
});

describe('reserves: slots handed on without a round', () => {
  const ref = (item: { itemId: string; jobId: string }) => ({ itemId: item.itemId, jobId: item.jobId });
  const stateOf = async (jobId: string, itemId: string) => (await itemStates(svc.db, [jobId])).find((i) => i.id === itemId)!;

  it('reserves items no other replica claims; a promotion keeps the running count; a reserved item\'s outcome counts its attempt; a release gives it back', async () => {
    const job = await runningJob();
    const held = await claim(svc.db, job.jobId, 'me', 2);
    const first = await swap(svc.db, 'me', [completed(held[0]!)], { maxRunningPerJob: 2, reserve: [{ jobId: job.jobId, n: 3 }] });
    expect(first.claimed).toHaveLength(1);
    expect(first.reserved).toHaveLength(3);
    expect(first.reserved[0]).toMatchObject({ jobId: job.jobId, attempts: 1, config: { provider: 'gemini' } });
    expect(first.reserves.get(job.jobId)).toBe('flow');
    const reserved = first.reserved;
    for (const r of reserved) expect(await stateOf(job.jobId, r.itemId)).toMatchObject({ status: 'pending', attempts: 0, leaseOwner: 'me' });
    // The reserve is not claimed by another replica: its full round takes the two free slots past it.
    const theirs = await claim(replicas[0]!, job.jobId, 'other', 4);
    expect(theirs).toHaveLength(2);
    expect(theirs.map((i) => i.itemId)).not.toEqual(expect.arrayContaining([reserved[0]!.itemId]));
    expect(new Set([...theirs, ...reserved].map((i) => i.itemId)).size).toBe(5);

    // A call ended and reserved[0] began in its slot: one statement records the one and makes the other running.
    const handOn = await swap(svc.db, 'me', [completed(first.claimed[0]!)], { promote: [ref(reserved[0]!)] });
    expect(handOn.recorded).toHaveLength(1);
    expect(handOn.promoted).toEqual([reserved[0]!.itemId]);
    expect(handOn).toMatchObject({ claimed: [], more: false });
    expect(await running(job.jobId)).toHaveLength(4);
    expect(await stateOf(job.jobId, reserved[0]!.itemId)).toMatchObject({ status: 'running', attempts: 1, leaseOwner: 'me' });

    // A chain in one slot: held[1] ended, reserved[1] ran and ended, reserved[2] runs. reserved[1] is
    // recorded from pending with its attempt; the slot stays taken, so nothing is freed or claimed.
    const chain = await swap(svc.db, 'me', [completed(held[1]!), { ...completed(reserved[1]!), reserved: true }], { promote: [ref(reserved[2]!)] });
    expect(chain.recorded.map((o) => o.itemId).sort()).toEqual([held[1]!.itemId, reserved[1]!.itemId].sort());
    expect(chain).toMatchObject({ promoted: [reserved[2]!.itemId], claimed: [], more: false });
    expect(await stateOf(job.jobId, reserved[1]!.itemId)).toMatchObject({ status: 'completed', attempts: 1, leaseOwner: null });
    expect(await running(job.jobId)).toHaveLength(4);
    // The turn counts every slot taken: 2 claimed + 1 + the other's 2 + 2 promoted.
    const { rows: [turn] } = await svc.db.execute<{ n: number }>(sql`select slice_items::int as n from job_queue.caption_jobs where job_id = ${job.jobId}`);
    expect(turn!.n).toBe(7);

    // A deferred reserved item gives its attempt back; a released one is anyone's again.
    const more = await swap(svc.db, 'me', [completed(reserved[0]!)], { reserve: [{ jobId: job.jobId, n: 2 }] });
    expect(more.claimed).toHaveLength(1);
    expect(more.reserved).toHaveLength(2);
    const deferred: ItemOutcome = { itemId: more.reserved[0]!.itemId, jobId: job.jobId, processingTime: 1, status: 'deferred', error: '429', retryInMs: 60_000, reserved: true };
    const released = await swap(svc.db, 'me', [deferred], { release: [ref(more.reserved[1]!)] });
    expect(released.recorded).toHaveLength(1);
    expect(await stateOf(job.jobId, more.reserved[0]!.itemId)).toMatchObject({ status: 'pending', attempts: 0, leaseOwner: null });
    expect(await stateOf(job.jobId, more.reserved[1]!.itemId)).toMatchObject({ status: 'pending', attempts: 0, leaseOwner: null });
    const { rows: [captions] } = await svc.db.execute<{ n: number }>(sql`select count(*)::int as n from core_schema.captions where job_id = ${job.jobId}`);
    expect(captions!.n).toBe(5);
    expect(await jobState(svc.db, job.jobId)).toMatchObject({ processedImages: 5 });

    // A job that no longer runs gets no reserve, and its holder is told to give back what it has.
    await api(svc.url, 'POST', `/api/perspectives/batch/pause/${job.jobId}`);
    const paused = await swap(svc.db, 'me', [completed(reserved[2]!)], { reserve: [{ jobId: job.jobId, n: 2 }] });
    expect(paused).toMatchObject({ recorded: [expect.anything()], reserved: [], claimed: [] });
    expect(paused.reserves.get(job.jobId)).toBe('release');
  });

  it('refuses a promotion of an item that is no longer the owner\'s; renews and releases reserved items like running ones', async () => {
    const job = await runningJob();
    const held = await claim(svc.db, job.jobId, 'me', 1);
    const first = await swap(svc.db, 'me', [completed(held[0]!)], { maxRunningPerJob: 1, reserve: [{ jobId: job.jobId, n: 2 }] });
    const [gone, kept] = first.reserved;
    expect(await extendLeases(svc.db, { owner: 'me', itemIds: [gone!.itemId, kept!.itemId], leaseSeconds: 30 })).toEqual({
      renewed: expect.arrayContaining([gone!.itemId, kept!.itemId]),
      lost: [],
    });
    // The reserve's lease ran out (its holder hung): another replica claims the item, first in line.
    await svc.db.execute(sql`update job_queue.job_items set lease_expires_at = now() - interval '1 second' where id = ${gone!.itemId}`);
    expect((await claim(replicas[0]!, job.jobId, 'other', 2)).map((i) => i.itemId)).toEqual([gone!.itemId]);
    // The holder's hand-on comes too late: recorded what it held, promoted nothing.
    const late = await swap(svc.db, 'me', [completed(first.claimed[0]!)], { maxRunningPerJob: 2, promote: [ref(gone!)] });
    expect(late.recorded).toHaveLength(1);
    expect(late.promoted).toEqual([]);
    expect(await stateOf(job.jobId, gone!.itemId)).toMatchObject({ status: 'running', leaseOwner: 'other', attempts: 1 });
    expect(await extendLeases(svc.db, { owner: 'me', itemIds: [gone!.itemId, kept!.itemId], leaseSeconds: 30 })).toEqual({ renewed: [kept!.itemId], lost: [gone!.itemId] });
    expect(await releaseItems(svc.db, { owner: 'me', itemIds: [kept!.itemId] })).toBe(1);
    expect(await stateOf(job.jobId, kept!.itemId)).toMatchObject({ status: 'pending', attempts: 0, leaseOwner: null });
  });

  it('reserves no more than is left of a turn while another job waits for the slot', async () => {
    const job = await runningJob();
    const held = await claim(svc.db, job.jobId, 'me', 2);
    const alone = await swap(svc.db, 'me', [completed(held[0]!)], { sliceItems: 4, reserve: [{ jobId: job.jobId, n: 5 }] });
    expect(alone.reserved).toHaveLength(5);
    // With a job waiting, the turn has 4 - 3 claimed = 1 item left.
    await createJob(svc.url, {});
    const waiting = await swap(svc.db, 'me', [completed(held[1]!)], { sliceItems: 4, maxRunningPerJob: 2, reserve: [{ jobId: job.jobId, n: 5 }] });
    expect(waiting.claimed).toHaveLength(1);
    expect(waiting.reserved).toHaveLength(1);
    expect(waiting.reserves.get(job.jobId)).toBe('flow');
  });

  it('holds the hand-on while the provider runs more than its lowered budget', async () => {
    const providers = PROVIDERS;
    const { job, held } = await adaptiveJob();
    const ok = await swap(svc.db, 'me', [{ ...completed(held[0]!), signal: { kind: 'ok', latencyMs: 40 } }], { providers, reserve: [{ jobId: job.jobId, n: 2 }] });
    expect(ok.reserves.get(job.jobId)).toBe('flow');
    // A 429 halves the limit to 2 while 3 items still run: no slot of this provider is handed on.
    const throttled: ItemOutcome = {
      itemId: held[1]!.itemId, jobId: job.jobId, processingTime: 2, status: 'deferred', error: '429', retryInMs: 10,
      signal: { kind: 'throttled', retryAfterMs: null },
    };
    const lowered = await swap(svc.db, 'me', [throttled], { providers });
    expect(lowered.providers[0]).toMatchObject({ concurrencyLimit: 2 });
    expect(lowered.reserves.get(job.jobId)).toBe('hold');
    expect(lowered.claimed).toEqual([]);
  });
});

describe('leases', () => {
  it('renews only the leases the owner still holds, and names the lost ones', async () => {
    const job = await runningJob({ imagePaths: IMAGES.slice(0, 2), perspectives: ['art_critic'] });
    const items = await claim(svc.db, job.jobId, 'a');
    const ids = items.map((i) => i.itemId);
    const before = await svc.db.execute<{ t: string }>(sql`select max(lease_expires_at)::text as t from job_queue.job_items where job_id = ${job.jobId}`);
    expect(await extendLeases(svc.db, { owner: 'a', itemIds: ids, leaseSeconds: 600 })).toEqual({ renewed: expect.arrayContaining(ids), lost: [] });
    const after = await svc.db.execute<{ t: string }>(sql`select min(lease_expires_at)::text as t from job_queue.job_items where job_id = ${job.jobId}`);
    expect(new Date(after.rows[0]!.t).getTime()).toBeGreaterThan(new Date(before.rows[0]!.t).getTime() + 500_000);
    expect(await extendLeases(svc.db, { owner: 'b', itemIds: ids, leaseSeconds: 600 })).toEqual({ renewed: [], lost: expect.arrayContaining(ids) });
  });

  it('rescues an expired lease; the old holder can no longer record, the new one records once', async () => {
    const job = await runningJob({ imagePaths: [IMAGES[0]], perspectives: ['art_critic'] });
    const [held] = await claim(svc.db, job.jobId, 'dead');
    await expireLeases(job.jobId);
    expect(await rescueExpiredLeases(svc.db, 5)).toEqual({ retried: 1, failed: 0 });
    expect((await itemStates(svc.db, [job.jobId]))[0]).toMatchObject({ status: 'pending', attempts: 1, error: 'lease of dead expired' });
    const [again] = await claim(svc.db, job.jobId, 'alive');
    expect(again).toMatchObject({ itemId: held!.itemId, attempts: 2 });
    expect(await extendLeases(svc.db, { owner: 'dead', itemIds: [held!.itemId], leaseSeconds: 30 })).toEqual({ renewed: [], lost: [held!.itemId] });
    const outcome = { processingTime: 3, result: RESULT, rawText: null };
    expect(await recordItemSuccess(svc.db, { ...held!, owner: 'dead', ...outcome })).toBe(false);
    expect(await recordItemSuccess(svc.db, { ...again!, owner: 'alive', ...outcome })).toBe(true);
    const { rows } = await svc.db.execute<{ n: number }>(sql`select count(*)::int as n from core_schema.captions where job_id = ${job.jobId}`);
    expect(rows[0]!.n).toBe(1);
    expect((await jobState(svc.db, job.jobId)).status).toBe('completed');
  });

  it('fails an expired item that has no attempts left', async () => {
    const job = await runningJob({ imagePaths: [IMAGES[0]], perspectives: ['art_critic'] });
    await claim(svc.db, job.jobId, 'dead');
    await expireLeases(job.jobId);
    expect(await rescueExpiredLeases(svc.db, 1)).toEqual({ retried: 0, failed: 1 });
    expect((await itemStates(svc.db, [job.jobId]))[0]).toMatchObject({ status: 'failed', error: 'lease of dead expired on the last of 1 attempts' });
    expect(await jobState(svc.db, job.jobId)).toMatchObject({ status: 'failed', failedImages: 1 });
  });

  it('releases held items at once, without counting the attempt', async () => {
    const job = await runningJob({ imagePaths: IMAGES.slice(0, 2), perspectives: ['art_critic'] });
    const items = await claim(svc.db, job.jobId, 'leaving');
    expect(await releaseItems(svc.db, { owner: 'someone-else', itemIds: items.map((i) => i.itemId) })).toBe(0);
    expect(await releaseItems(svc.db, { owner: 'leaving', itemIds: items.map((i) => i.itemId) })).toBe(2);
    const states = await itemStates(svc.db, [job.jobId]);
    expect(states.map((s) => [s.status, s.attempts, s.leaseOwner])).toEqual([['pending', 0, null], ['pending', 0, null]]);
    expect(await claim(svc.db, job.jobId, 'other')).toHaveLength(2);
  });
});

describe('broken dependencies', () => {
  it('fails the dependent job with a reason naming the dependency, and the jobs after it in the chain', async () => {
    await finishRunningJobs();
    const dependency = await createJob(svc.url, { imagePaths: IMAGES.slice(0, 2) });
    const dependent = await createJob(svc.url, { type: 'DEPENDENCY_CHAIN', dependsOn: [dependency.jobId], perspectives: ['art_critic', 'storytelling'] });
    const next = await createJob(svc.url, { type: 'DEPENDENCY_CHAIN', dependsOn: [dependent.jobId] });
    expect(await failJobsWithBrokenDependencies(svc.db)).toEqual([]);

    const [first, second] = await itemIds(svc.db, dependency.jobId);
    await finishItem(svc.url, first!, 'completed');
    await finishItem(svc.url, second!, 'failed');
    expect((await jobState(svc.db, dependency.jobId)).status).toBe('partial');

    expect(await failJobsWithBrokenDependencies(svc.db)).toEqual([
      { jobId: dependent.jobId, error: `dependency ${dependency.jobId} ended partial` },
      { jobId: next.jobId, error: `dependency ${dependent.jobId} ended failed` },
    ]);
    expect(await jobState(svc.db, dependent.jobId)).toMatchObject({
      status: 'failed',
      error: `dependency ${dependency.jobId} ended partial`,
      totalImages: 4,
      processedImages: 0,
      failedImages: 0,
      cancelledImages: 4,
    });
    expect((await itemStates(svc.db, [dependent.jobId])).map((i) => i.status)).toEqual(Array(4).fill('cancelled'));
    expect(await jobState(svc.db, next.jobId)).toMatchObject({ status: 'failed', cancelledImages: 2 });
    expect(await startRunnableJobs(svc.db, 5)).toEqual([]);
  });
});
