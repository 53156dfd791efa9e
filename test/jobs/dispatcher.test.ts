/**
 * The dispatcher in the service, end to end: real HTTP to the service, real PostgreSQL, and the
 * stand-in Inference Bridge as a real server on loopback. One service (one job slot, three items in
 * flight per job, short timeouts) runs every scenario in turn.
 */
import { realpath } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { createJob, DATASET, IMAGES, inlineProvider } from '../helpers/fixtures.js';
import { captionsOf, countBy, fixtureCaptions, itemStates, jobState, waitFor, waitForJobsToFinish } from '../helpers/jobs.js';
import { api, startTestService, type TestService } from '../helpers/service.js';
import { StandInBridge } from '../stand-ins/bridge.js';

const CAPS = { jobs: 1, items: 3 };
const SECRET = 'sk-never-log-this-0123456789';
const BRIDGE_TIMEOUT_MS = 600;

let bridge: StandInBridge;
let svc: TestService;
let logs = '';

beforeAll(async () => {
  bridge = await StandInBridge.start();
  svc = await startTestService({
    logger: createLogger('debug', { write: (line: string) => void (logs += line) }),
    env: {
      INFERENCE_BRIDGE_URL: bridge.url,
      MAX_CONCURRENT_JOBS: String(CAPS.jobs),
      MAX_CONCURRENT_ITEMS: String(CAPS.items),
      POLL_INTERVAL_MS: '100',
      LEASE_SECONDS: '30',
      BRIDGE_TIMEOUT_MS: String(BRIDGE_TIMEOUT_MS),
      // The flaky-bridge test's hung calls are retried (by default a timed-out call fails the item).
      BRIDGE_RETRY_TIMEOUTS: 'true',
      MAX_ATTEMPTS: '25',
      RETRY_BASE_MS: '20',
      RETRY_MAX_MS: '200',
      SECRETS_KEY: 'ab'.repeat(32),
    },
  });
});
afterAll(async () => {
  await svc?.close();
  await bridge?.close();
});
beforeEach(async () => {
  bridge.set({ latencyMs: [5, 30], errorRate: 0, hangRate: 0, permanentFailures: {}, hangImages: [], seed: 1 });
  bridge.reset();
  // Each test starts with what adaptive dispatch knows of the provider forgotten (a flaky bridge
  // before would leave its limit low).
  await svc.db.execute(sql`delete from job_queue.provider_states`);
});

const B = '/api/perspectives/batch';
const post = (route: string, body?: unknown, headers?: Record<string, string>) => api(svc.url, 'POST', `${B}${route}`, body, headers);
const file = (imagePath: string) => path.basename(imagePath);

/** The caps held for every job the stand-in saw. */
function expectCapsHeld(): void {
  const stats = bridge.getStats();
  expect(stats.maxJobsInFlight).toBeLessThanOrEqual(CAPS.jobs);
  for (const [jobId, max] of Object.entries(stats.maxInFlightPerJob)) expect(max, `job ${jobId}`).toBeLessThanOrEqual(CAPS.items);
  expect(stats.duplicateInFlight).toBe(0);
}

describe('the dispatcher', () => {
  it('runs a job over the fixture dataset to completed, storing the real fixture caption of each pair once', async () => {
    const perspectives = ['art_critic', 'storytelling'];
    const created = await post(
      '/create',
      { type: 'DATASET_PERSPECTIVE', datasetName: DATASET, perspectives, priority: 10, config: { provider: 'gemini', model: 'gemini-2.0-flash-exp', maxTokens: 4096, temperature: 0.8, providerConfig: inlineProvider(SECRET) } },
      { 'x-request-id': 'watch-this-job' },
    );
    expect(created.status).toBe(200);
    const { jobId, totalImages } = created.body;
    expect(totalImages).toBe(14);

    const [state] = await waitForJobsToFinish(svc.db, [jobId]);
    expect(state).toMatchObject({ status: 'completed', processedImages: 14, failedImages: 0, cancelledImages: 0, progress: 100, error: null });
    expect(state!.startedAt).not.toBeNull();
    expect(state!.completedAt!.getTime()).toBeGreaterThanOrEqual(state!.startedAt!.getTime());

    const expected = await fixtureCaptions(perspectives);
    const captions = await captionsOf(svc.db, [jobId]);
    const items = await itemStates(svc.db, [jobId]);
    expect(captions).toHaveLength(14);
    expect([...countBy(captions.map((c) => c.itemId)).values()].every((n) => n === 1)).toBe(true);
    expect(new Set(captions.map((c) => c.itemId))).toEqual(new Set(items.map((i) => i.id)));
    for (const caption of captions) {
      const fixture = expected.get(`${file(caption.imagePath)}|${caption.perspective}`);
      expect(fixture, `${caption.imagePath} ${caption.perspective}`).toBeDefined();
      expect(caption.result).toEqual(fixture);
      expect(caption).toMatchObject({ jobId, model: 'gemini-2.0-flash-exp', provider: 'gemini', perspectiveVersion: caption.expectedVersion });
    }
    expect(items.every((i) => i.status === 'completed' && i.attempts === 1 && i.processingTime !== null && i.leaseOwner === null)).toBe(true);

    // The bridge got each item once, with the job's request id and config (secrets opened) and an
    // absolute path in the workspace.
    const workspace = await realpath(svc.workspace);
    expect(bridge.calls).toHaveLength(14);
    for (const call of bridge.calls) {
      expect(call).toMatchObject({ requestId: 'watch-this-job', jobId, outcome: 'ok' });
      expect(call.body).toMatchObject({ provider: 'gemini', model: 'gemini-2.0-flash-exp', max_tokens: 4096, temperature: 0.8 });
      expect(call.body.provider_config).toEqual({
        name: 'gemini', kind: 'openai', environment: 'local', base_url: 'http://127.0.0.1:9/v1', api_key: SECRET, models: ['gemini-2.0-flash-exp'],
      });
      expect(call.body.image_path.startsWith(`${workspace}${path.sep}datasets${path.sep}${DATASET}${path.sep}`)).toBe(true);
    }
    expect(bridge.getStats().maxInFlightPerJob[jobId]).toBe(CAPS.items);
    expectCapsHeld();
  });

  it('runs jobs one at a time in queue order: priority first, then reorder', async () => {
    // A blocker holds the only job slot (its calls hang) while the queue is arranged.
    bridge.set({ hangImages: [file(IMAGES[0])] });
    const blocker = await createJob(svc.url, { imagePaths: [IMAGES[0]] });
    await waitFor('the blocker to reach the bridge', () => bridge.calls.length > 0);
    const make = (priority: number) => createJob(svc.url, { priority, imagePaths: IMAGES.slice(1) });
    const j1 = await make(100);
    const j2 = await make(100);
    const j3 = await make(50);
    const j4 = await make(100);
    // Queue now: j3 (priority 50), blocker, j1, j2, j4. Move j4 right behind j3.
    const reordered = await post('/reorder', { moves: [{ jobId: j4.jobId, position: 2 }] });
    expect(reordered.status).toBe(200);
    const waiting = [j3, j4, j1, j2].map((j) => j.jobId);
    for (const id of waiting) expect((await jobState(svc.db, id)).status).toBe('pending');

    bridge.set({ latencyMs: [10, 40] });
    expect((await post(`/cancel/${blocker.jobId}`)).status).toBe(200);
    const states = await waitForJobsToFinish(svc.db, waiting);
    expect(states.map((s) => s.status)).toEqual(['completed', 'completed', 'completed', 'completed']);

    // Calls came job by job, in queue order, never two jobs at once.
    const order = bridge.calls.map((c) => c.jobId).filter((id) => id !== blocker.jobId);
    expect(order.filter((id, i) => id !== order[i - 1])).toEqual(waiting);
    for (let i = 1; i < states.length; i++) {
      expect(states[i]!.startedAt!.getTime()).toBeGreaterThanOrEqual(states[i - 1]!.completedAt!.getTime());
    }
    expectCapsHeld();
    expect(Math.max(...waiting.map((id) => bridge.getStats().maxInFlightPerJob[id]!))).toBe(CAPS.items);
  });

  it('completes every item through a flaky bridge: 30% 503s, 10% hangs past the timeout', async () => {
    bridge.set({ errorRate: 0.3, hangRate: 0.1, latencyMs: [0, 20], seed: 7 });
    const job = await createJob(svc.url, { imagePaths: [...IMAGES], perspectives: ['art_critic', 'storytelling', 'graph_caption'] });
    const [state] = await waitForJobsToFinish(svc.db, [job.jobId], 90_000);
    expect(state).toMatchObject({ status: 'completed', processedImages: 21, failedImages: 0 });

    const captions = await captionsOf(svc.db, [job.jobId]);
    expect(captions).toHaveLength(21);
    expect(new Set(captions.map((c) => c.itemId)).size).toBe(21);
    const stats = bridge.getStats();
    expect(stats.outcomes.transient).toBeGreaterThan(0);
    const hung = bridge.calls.filter((c) => c.hung);
    expect(hung.length).toBeGreaterThan(0);
    // The client gave up on every hung call.
    await waitFor('hung calls to be closed', () => hung.every((c) => c.outcome === 'aborted'));
    const items = await itemStates(svc.db, [job.jobId]);
    expect(items.reduce((sum, i) => sum + i.attempts, 0)).toBe(bridge.calls.length);
    expect(items.some((i) => i.attempts > 1)).toBe(true);
    expect(logs).toMatch(/"msg":"item attempt failed; will retry"/);
    expectCapsHeld();
  });

  it("fails items the bridge refuses with its message (job partial), and retry-failed completes them once it recovers", async () => {
    const refused = [IMAGES[1], IMAGES[4]].map(file);
    bridge.set({ permanentFailures: Object.fromEntries(refused.map((f) => [f, `unsupported image ${f} (stand-in)`])) });
    const job = await createJob(svc.url, { type: 'DATASET_PERSPECTIVE', imagePaths: undefined, datasetName: DATASET, perspectives: ['art_critic', 'storytelling'] });
    const [state] = await waitForJobsToFinish(svc.db, [job.jobId]);
    expect(state).toMatchObject({ status: 'partial', processedImages: 10, failedImages: 4, progress: 100 });
    const failed = (await itemStates(svc.db, [job.jobId])).filter((i) => i.status === 'failed');
    expect(failed.map((i) => file(i.imagePath)).sort()).toEqual([...refused, ...refused].sort());
    for (const item of failed) {
      expect(item.error).toBe(`Inference Bridge answered 400: unsupported image ${file(item.imagePath)} (stand-in)`);
      // Permanent: no retry.
      expect(item.attempts).toBe(1);
    }
    expect(bridge.calls).toHaveLength(14);

    bridge.set({ permanentFailures: {} });
    const retried = await post(`/retry-failed/${job.jobId}`);
    expect(retried.status).toBe(200);
    expect(retried.body.retried).toBe(4);
    const [after] = await waitForJobsToFinish(svc.db, [job.jobId]);
    expect(after).toMatchObject({ status: 'completed', processedImages: 14, failedImages: 0, progress: 100 });
    const captions = await captionsOf(svc.db, [job.jobId]);
    expect(captions).toHaveLength(14);
    expect(new Set(captions.map((c) => c.itemId)).size).toBe(14);
    expect(bridge.calls).toHaveLength(18);
  });

  it('ends jobs whose dependency did not complete, and runs those whose dependencies did', async () => {
    bridge.set({ permanentFailures: { [file(IMAGES[0])]: 'broken file' } });
    const good = await createJob(svc.url, { imagePaths: IMAGES.slice(2, 4) });
    const afterGood = await createJob(svc.url, { type: 'DEPENDENCY_CHAIN', dependsOn: [good.jobId], imagePaths: IMAGES.slice(2, 4), perspectives: ['storytelling'] });
    const bad = await createJob(svc.url, { imagePaths: IMAGES.slice(0, 2) });
    const afterBad = await createJob(svc.url, { type: 'DEPENDENCY_CHAIN', dependsOn: [bad.jobId, good.jobId], priority: 1 });
    const states = await waitForJobsToFinish(svc.db, [good.jobId, afterGood.jobId, bad.jobId, afterBad.jobId]);
    expect(states.map((s) => s.status)).toEqual(['completed', 'completed', 'partial', 'failed']);
    expect(states[1]!.startedAt!.getTime()).toBeGreaterThanOrEqual(states[0]!.completedAt!.getTime());
    expect(states[3]).toMatchObject({ error: `dependency ${bad.jobId} ended partial`, processedImages: 0, cancelledImages: 2, startedAt: null });
    expect(bridge.calls.some((c) => c.jobId === afterBad.jobId)).toBe(false);
  });

  it('cancels a running job: in-flight calls aborted, no further calls, counters add up', async () => {
    // Calls take half a second (within the timeout); lease renewals come every 10 s, so only the
    // cancel NOTIFY can cut them short.
    bridge.set({ latencyMs: 500 });
    const job = await createJob(svc.url, { imagePaths: [...IMAGES], perspectives: ['art_critic', 'storytelling', 'graph_caption'] });
    // In the middle: some items recorded, a full set in flight. (Recorded, not just answered: on a
    // loaded machine an answer can arrive after the client's timeout and count as a failed attempt.)
    await waitFor('a job in the middle', async () =>
      bridge.getStats().inFlight === CAPS.items && (await jobState(svc.db, job.jobId)).processedImages >= CAPS.items);
    const inFlight = bridge.calls.filter((c) => c.outcome === 'in-flight');
    const cancelled = await post(`/cancel/${job.jobId}`);
    const cancelledAt = Date.now();
    expect(cancelled.status).toBe(200);

    await waitFor('the in-flight calls to end', () => inFlight.every((c) => c.outcome !== 'in-flight'), 10_000);
    expect(inFlight.map((c) => c.outcome)).toEqual(Array(CAPS.items).fill('aborted'));
    // Several poll intervals and a lease renewal: time for any stray dispatch to show.
    await sleep(1000);
    expect(bridge.calls.filter((c) => c.at > cancelledAt)).toEqual([]);

    const state = await jobState(svc.db, job.jobId);
    expect(state.status).toBe('cancelled');
    expect(state.processedImages + state.failedImages + state.cancelledImages).toBe(state.totalImages);
    expect(state.processedImages).toBeGreaterThanOrEqual(CAPS.items);
    expect(state.cancelledImages).toBeGreaterThanOrEqual(CAPS.items);
    const items = await itemStates(svc.db, [job.jobId]);
    const byStatus = countBy(items.map((i) => i.status));
    expect(byStatus.get('completed') ?? 0).toBe(state.processedImages);
    expect(byStatus.get('cancelled') ?? 0).toBe(state.cancelledImages);
    expect((await captionsOf(svc.db, [job.jobId])).length).toBe(state.processedImages);
  });

  it('hands the slot of each call that ends on to the job\'s next reserved item: every item once, the caps held, nothing left reserved', async () => {
    const starts = async () => {
      const text = await (await fetch(`${svc.url}/metrics`)).text();
      const of = (via: string) => Number(new RegExp(`^graphcap_item_starts_total\\{via="${via}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
      return { claim: of('claim'), reserve: of('reserve') };
    };
    const before = await starts();
    const job = await createJob(svc.url, { imagePaths: [...IMAGES], perspectives: ['art_critic', 'storytelling', 'graph_caption'] });
    const n = job.totalImages;
    expect(n).toBe(IMAGES.length * 3);
    const [state] = await waitForJobsToFinish(svc.db, [job.jobId]);
    expect(state).toMatchObject({ status: 'completed', processedImages: n });
    const after = await starts();
    const calls = bridge.calls.filter((c) => c.jobId === job.jobId);
    expect(calls).toHaveLength(n);
    expect(after.claim - before.claim + (after.reserve - before.reserve)).toBe(calls.length);
    // The first calls are claimed by rounds; once the job has a reserve, ended calls hand their slots on.
    expect(after.reserve - before.reserve).toBeGreaterThan(0);
    expectCapsHeld();
    const captions = await captionsOf(svc.db, [job.jobId]);
    expect(captions).toHaveLength(n);
    expect(new Set(captions.map((c) => c.itemId)).size).toBe(n);
    const items = await itemStates(svc.db, [job.jobId]);
    expect(items.filter((i) => i.leaseOwner !== null)).toEqual([]);
    expect(items.every((i) => i.attempts === 1)).toBe(true);
  });

  it('reconnects its LISTEN connection after the database drops it, and keeps running jobs', async () => {
    // The dispatcher's listener is the one whose last statement was a LISTEN.
    const listener = () =>
      svc.db
        .execute<{ pid: number }>(sql`
          select pid from pg_stat_activity
          where datname = current_database() and application_name like 'graphcap-dispatcher %'
            and query ilike 'listen %'`)
        .then((r) => r.rows.map((row) => row.pid));
    const [before] = await listener();
    expect(before).toBeDefined();
    await svc.db.execute(sql`select pg_terminate_backend(${before!})`);
    const after = await waitFor('a new LISTEN connection', async () => {
      const pids = await listener();
      return pids.length === 1 && pids[0] !== before && pids[0];
    });
    expect(after).not.toBe(before);
    expect(logs).toMatch(/"msg":"notification connection lost; polling only until it is back"/);

    const job = await createJob(svc.url, { imagePaths: [IMAGES[0]] });
    expect((await waitForJobsToFinish(svc.db, [job.jobId]))[0]!.status).toBe('completed');
  });

  it('never logs provider secrets', () => {
    expect(logs).toMatch(/"msg":"job started"/);
    expect(logs).not.toContain(SECRET);
  });
});
