/**
 * Three replicas as separate processes (`node --import tsx src/main.ts`) on one database, sharing
 * the work of 2,000 items through the stand-in Inference Bridge; then one is killed with SIGKILL
 * mid-job, and another stopped with SIGTERM while it holds items. The test process hosts the
 * stand-in and an API-only service (dispatcher off) for creating jobs.
 */
import { link, mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { sql } from 'drizzle-orm';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createJob } from '../helpers/fixtures.js';
import { countBy, captionsOf, dispatcherNames, itemStates, waitFor, waitForJobsToFinish } from '../helpers/jobs.js';
import { startProcess, stopProcess, type ServiceProcess } from '../helpers/process.js';
import { api, copyWorkspace, startTestService, type TestService } from '../helpers/service.js';
import { dispatcherConnectionName, STOPPING_DISPATCHER } from '../../src/db/dispatch.js';
import { StandInBridge } from '../stand-ins/bridge.js';

const CAPS = { jobs: 2, items: 6 };
const BULK = 'bulk';
const BULK_IMAGES = 1000;

let bridge: StandInBridge;
let svc: TestService;
let bulk: string[];
/** The workspace copy, removed at the end (the service leaves a workspace it was given to its owner). */
let copied: string | undefined;
const replicas = new Map<string, ServiceProcess>();

beforeAll(async () => {
  bridge = await StandInBridge.start();
  const workspace = await copyWorkspace();
  copied = workspace;
  svc = await startTestService({ workspace, env: { DISPATCHER_ENABLED: 'false' } });

  // 1,000 images: hard links to the fixture's seven, under new names, so they cost no disk.
  const source = path.join(workspace, 'datasets', 'os_img');
  const originals = (await readdir(source)).filter((f) => /\.(jpe?g|webp)$/.test(f)).sort();
  await mkdir(path.join(workspace, 'datasets', BULK));
  bulk = [];
  for (let i = 0; i < BULK_IMAGES; i++) {
    const original = originals[i % originals.length]!;
    const name = `${String(i).padStart(4, '0')}-${original}`;
    await link(path.join(source, original), path.join(workspace, 'datasets', BULK, name));
    bulk.push(`datasets/${BULK}/${name}`);
  }
  const synced = await api(svc.url, 'POST', '/api/workspace/sync');
  expect(synced.status).toBe(200);
  expect(synced.body.datasets.find((d: { name: string }) => d.name === BULK).added).toBe(BULK_IMAGES);

  const env = (id: string) => ({
    DATABASE_URL: svc.database.url,
    WORKSPACE_PATH: workspace,
    WORKSPACE_SYNC_ON_START: 'false',
    INFERENCE_BRIDGE_URL: bridge.url,
    REPLICA_ID: id,
    MAX_CONCURRENT_JOBS: String(CAPS.jobs),
    MAX_CONCURRENT_ITEMS: String(CAPS.items),
    POLL_INTERVAL_MS: '200',
    LEASE_SECONDS: '3',
    BRIDGE_TIMEOUT_MS: '10000',
    SHUTDOWN_GRACE_SECONDS: '1',
    DB_POOL_SIZE: '4',
    // Debug: each replica logs what it records in every round, so the test can count who did what.
    LOG_LEVEL: 'debug',
  });
  const started = await Promise.all(['replica-a', 'replica-b', 'replica-c'].map((id) => startProcess(env(id))));
  started.forEach((p, i) => replicas.set(['replica-a', 'replica-b', 'replica-c'][i]!, p));
}, 120_000);

afterAll(async () => {
  await Promise.all([...replicas.values()].map((p) => stopProcess(p, 'SIGKILL')));
  await bridge?.close();
  await svc?.close();
  if (copied) await rm(copied, { recursive: true, force: true });
});

/** Items a replica recorded as completed, from its debug log (one line per recording round). */
function recordedBy(id: string): number {
  return replicas
    .get(id)!
    .output()
    .split('\n')
    .filter((line) => line.includes('"msg":"outcomes recorded"'))
    .reduce((sum, line) => sum + (JSON.parse(line) as { completed: number }).completed, 0);
}

/**
 * Waits until none of a dead replica's database sessions is left, so nothing of it can still commit.
 * In this database only: other test files' services on the same server use the same replica names.
 */
async function sessionsGone(id: string): Promise<void> {
  await waitFor(`the sessions of ${id} to end`, async () => {
    const { rows } = await svc.db.execute(sql`
      select 1 from pg_stat_activity
      where datname = current_database() and application_name = ${`graphcap-data-service ${id}`}`);
    return rows.length === 0;
  });
}

async function runningItemsOf(owner: string, jobId: string): Promise<string[]> {
  const { rows } = await svc.db.execute<{ id: string }>(sql`
    select id from job_queue.job_items where job_id = ${jobId} and status = 'running' and lease_owner = ${owner} order by id`);
  return rows.map((r) => r.id);
}

/** The live replica holding the most of the job's items, once one holds any. */
async function busiestReplica(jobId: string): Promise<string> {
  return waitFor('a replica to hold items', async () => {
    const { rows } = await svc.db.execute<{ owner: string }>(sql`
      select lease_owner as owner from job_queue.job_items where job_id = ${jobId} and status = 'running'
      group by lease_owner order by count(*) desc limit 1`);
    return rows[0]?.owner;
  });
}

/** Every item completed with exactly one caption. */
async function expectExactlyOnce(jobIds: string[], total: number): Promise<void> {
  const items = await itemStates(svc.db, jobIds);
  expect(items).toHaveLength(total);
  expect(items.every((i) => i.status === 'completed')).toBe(true);
  const captions = await captionsOf(svc.db, jobIds);
  expect(captions).toHaveLength(total);
  expect([...countBy(captions.map((c) => c.itemId)).values()].every((n) => n === 1)).toBe(true);
  expect(new Set(captions.map((c) => c.itemId))).toEqual(new Set(items.map((i) => i.id)));
}

// Each test starts from a provider the replicas know nothing about: what the adaptive limit learnt
// from one test's bridge latency would otherwise throttle the next.
beforeEach(async () => {
  await svc.db.execute(sql`delete from job_queue.provider_states`);
});

describe('three replicas on one database', () => {
  it('share 2,000 items: each gets exactly one caption, never two calls at once, global caps hold', async () => {
    bridge.set({ latencyMs: [0, 15] });
    bridge.reset();
    const perspectives = ['art_critic', 'storytelling'];
    const jobs = [
      await createJob(svc.url, { perspectives, imagePaths: bulk.slice(0, 400) }),
      await createJob(svc.url, { perspectives, imagePaths: bulk.slice(400, 800) }),
      await createJob(svc.url, { perspectives, imagePaths: bulk.slice(800) }),
    ];
    expect(jobs.map((j) => j.totalImages)).toEqual([800, 800, 400]);
    const ids = jobs.map((j) => j.jobId);
    const states = await waitForJobsToFinish(svc.db, ids, 150_000);
    expect(states.map((s) => s.status)).toEqual(['completed', 'completed', 'completed']);
    await expectExactlyOnce(ids, 2000);

    const stats = bridge.getStats();
    expect(stats.duplicateInFlight).toBe(0);
    expect(stats.maxJobsInFlight).toBeLessThanOrEqual(CAPS.jobs);
    for (const id of ids) expect(stats.maxInFlightPerJob[id]).toBeLessThanOrEqual(CAPS.items);
    expect(stats.maxInFlight).toBeLessThanOrEqual(CAPS.jobs * CAPS.items);
    expect(stats.calls).toBe(2000);
    // The replicas really shared the work (each claims its share of a job's slots, a third here; at
    // least half of that is asked), and recorded 2,000 outcomes between them: no more.
    const counts = ['replica-a', 'replica-b', 'replica-c'].map(recordedBy);
    expect(counts.every((n) => n >= 2000 / 3 / 2), `recorded per replica: ${counts.join(' / ')}`).toBe(true);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(2000);
  }, 180_000);

  it('finish every item of a replica killed with SIGKILL mid-job, once its leases expire', async () => {
    bridge.set({ latencyMs: [150, 250] });
    bridge.reset();
    const job = await createJob(svc.url, { perspectives: ['graph_caption'], imagePaths: bulk.slice(0, 120) });
    const victim = await busiestReplica(job.jobId);
    // Frozen first, so that what it holds cannot change between reading it and the kill: once it
    // is stopped, anything it had sent (a COMMIT included) lands within moments.
    const dying = replicas.get(victim)!;
    dying.child.kill('SIGSTOP');
    await sleep(300);
    // What it held when it died (read before its leases can expire, over two seconds from now).
    const held = await runningItemsOf(victim, job.jobId);
    expect(held.length).toBeGreaterThan(0);
    await stopProcess(dying, 'SIGKILL');
    replicas.delete(victim);
    await sessionsGone(victim);
    expect(await runningItemsOf(victim, job.jobId)).toEqual(held);

    const [state] = await waitForJobsToFinish(svc.db, [job.jobId], 90_000);
    expect(state).toMatchObject({ status: 'completed', processedImages: 120, failedImages: 0 });
    await expectExactlyOnce([job.jobId], 120);
    const items = new Map((await itemStates(svc.db, [job.jobId])).map((i) => [i.id, i]));
    for (const id of held) {
      // Claimed by the dead replica, then again by another after the lease expired. (The dead one may
      // have died between its claim and its call, so the bridge saw at least the second call.)
      expect(items.get(id)!.attempts).toBeGreaterThanOrEqual(2);
      expect(bridge.calls.filter((c) => c.itemId === id).length).toBeGreaterThanOrEqual(1);
    }
    expect(bridge.getStats().duplicateInFlight).toBe(0);
  }, 120_000);

  it('hand over the items of a replica stopped with SIGTERM at once, without spending an attempt', async () => {
    // Calls outlast the 1 s shutdown grace, so the stopping replica must give its items back.
    bridge.set({ latencyMs: 3000 });
    bridge.reset();
    const job = await createJob(svc.url, { perspectives: ['art_critic'], imagePaths: bulk.slice(0, 8) });
    const victim = await busiestReplica(job.jobId);
    const held = await runningItemsOf(victim, job.jobId);
    const stopping = replicas.get(victim)!;
    const exited = stopProcess(stopping, 'SIGTERM');
    // While its calls have their grace, it no longer counts among the dispatchers (the others' shares grow).
    await waitFor(`${victim} to leave the count of dispatchers`, async () => {
      const names = await dispatcherNames(svc.db);
      return !names.includes(dispatcherConnectionName(victim)) && names.includes(STOPPING_DISPATCHER);
    });
    expect(stopping.child.exitCode).toBeNull();
    expect(await exited).toBe(0);
    replicas.delete(victim);
    const released = stopping
      .output()
      .split('\n')
      .map((line) => (line.includes('released unfinished items') ? (JSON.parse(line) as { released: number }) : undefined))
      .find(Boolean);
    expect(released?.released).toBeGreaterThanOrEqual(held.length);

    const [state] = await waitForJobsToFinish(svc.db, [job.jobId], 60_000);
    expect(state).toMatchObject({ status: 'completed', processedImages: 8 });
    await expectExactlyOnce([job.jobId], 8);
    const items = new Map((await itemStates(svc.db, [job.jobId])).map((i) => [i.id, i]));
    // Released, not rescued: the attempt that was cut short does not count.
    for (const id of held) expect(items.get(id)!.attempts).toBe(1);
    expect(bridge.getStats().duplicateInFlight).toBe(0);
  }, 90_000);
});
