/**
 * Fair share between jobs of equal priority, end to end: real HTTP, real PostgreSQL, the stand-in
 * Inference Bridge as a real server. One job slot (MAX_CONCURRENT_JOBS=1): a 5,000-item job must not
 * make a 20-item job of the same priority wait for all of it; a job of lower priority still waits.
 */
import { link, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONFIG, DATASET } from '../helpers/fixtures.js';
import { captionsOf, countBy, jobState, waitFor, waitForJobsToFinish } from '../helpers/jobs.js';
import { api, startTestService, type TestService } from '../helpers/service.js';
import { StandInBridge } from '../stand-ins/bridge.js';

const SLICE = 100;
const BIG = 5000;
const BULK = 'fair_share_bulk';
let bridge: StandInBridge;
let svc: TestService;
let bulk: string[];

beforeAll(async () => {
  bridge = await StandInBridge.start({ latencyMs: [5, 15] });
  svc = await startTestService({
    env: {
      INFERENCE_BRIDGE_URL: bridge.url,
      MAX_CONCURRENT_JOBS: '1',
      MAX_CONCURRENT_ITEMS: '4',
      FAIR_SHARE_SLICE_ITEMS: String(SLICE),
      POLL_INTERVAL_MS: '100',
      LEASE_SECONDS: '30',
      BRIDGE_TIMEOUT_MS: '10000',
    },
  });
  // 5,000 images: hard links of one fixture JPEG in a new dataset folder.
  const folder = path.join(svc.workspace, 'datasets', BULK);
  await mkdir(folder);
  const source = path.join(svc.workspace, 'datasets', DATASET, 'highland-cow-8972000_640.jpg');
  bulk = [];
  for (let i = 0; i < BIG; i++) {
    const name = `cow-${String(i).padStart(4, '0')}.jpg`;
    await link(source, path.join(folder, name));
    bulk.push(`datasets/${BULK}/${name}`);
  }
  const synced = await api(svc.url, 'POST', '/api/workspace/sync');
  expect(synced.status).toBe(200);
}, 120_000);
afterAll(async () => {
  await svc?.close();
  await bridge?.close();
});

const create = async (body: Record<string, unknown>) => {
  const response = await api(svc.url, 'POST', '/api/perspectives/batch/create', {
    type: 'MULTI_PERSPECTIVE',
    perspectives: ['art_critic'],
    config: CONFIG,
    ...body,
  });
  expect(response.status, JSON.stringify(response.body)).toBe(200);
  return response.body as { jobId: string; totalImages: number };
};

describe('ETA', () => {
  it('a running job has an ETA from its recent throughput; a pending, paused or finished one has none', async () => {
    bridge.set({ latencyMs: [20, 40] });
    const job = await create({ imagePaths: bulk.slice(0, 300), priority: 100 });
    const queued = await create({ imagePaths: bulk.slice(300, 302), priority: 100 });
    const B = '/api/perspectives/batch';
    const detail = await waitFor('a running job with 30 items done', async () => {
      const response = await api(svc.url, 'GET', `${B}/status/${job.jobId}?limit=1`);
      const j = response.body.job;
      return j.status === 'running' && j.processedImages >= 30 && j.etaSeconds !== null && response.body;
    });
    const before = Date.now();
    const j = detail.job;
    const remaining = j.totalImages - j.processedImages - j.failedImages - j.cancelledImages;
    expect(remaining).toBeGreaterThan(0);
    expect(Number.isInteger(j.etaSeconds)).toBe(true);
    expect(j.etaSeconds).toBeGreaterThanOrEqual(0);
    // Sane: about the items left over the rate since the job started (same order of magnitude).
    const rate = j.processedImages / Math.max(0.001, (before - Date.parse(j.startedAt)) / 1000);
    expect(j.etaSeconds).toBeLessThanOrEqual(Math.ceil((remaining / rate) * 10) + 1);
    expect(j.etaSeconds).toBeGreaterThanOrEqual(Math.floor((remaining / rate) / 10));
    // estimatedCompletionAt is now + etaSeconds (now as the service saw it, within the call).
    const at = Date.parse(j.estimatedCompletionAt);
    expect(at).toBeGreaterThanOrEqual(Date.parse(j.updatedAt));
    expect(Math.abs(at - (before + j.etaSeconds * 1000))).toBeLessThan(60_000);

    const waiting = (await api(svc.url, 'GET', `${B}/status/${queued.jobId}`)).body.job;
    expect(waiting).toMatchObject({ status: 'pending', etaSeconds: null, estimatedCompletionAt: null });
    const paused = await api(svc.url, 'POST', `${B}/pause/${job.jobId}`);
    expect(paused.body).toMatchObject({ status: 'paused', etaSeconds: null, estimatedCompletionAt: null });
    expect((await api(svc.url, 'POST', `${B}/resume/${job.jobId}`)).status).toBe(200);
    const [done] = await waitForJobsToFinish(svc.db, [job.jobId, queued.jobId], 120_000);
    expect(done!.status).toBe('completed');
    const finished = (await api(svc.url, 'GET', `${B}/status/${job.jobId}`)).body.job;
    expect(finished).toMatchObject({ status: 'completed', etaSeconds: null, estimatedCompletionAt: null });
    bridge.set({ latencyMs: [5, 15] });
    bridge.reset();
  }, 180_000);
});

describe('fair share', () => {
  it('a 20-item job started after a 5,000-item job of the same priority completes while the big one is under way', async () => {
    const big = await create({ type: 'DATASET_PERSPECTIVE', datasetName: BULK, priority: 100 });
    expect(big.totalImages).toBe(BIG);
    await waitFor('the big job to run', async () => (await jobState(svc.db, big.jobId)).processedImages > 0);
    const low = await create({ imagePaths: bulk.slice(0, 5), priority: 200 });
    const small = await create({ imagePaths: bulk.slice(BIG - 20), priority: 100 });
    expect(small.totalImages).toBe(20);

    const [smallState] = await waitForJobsToFinish(svc.db, [small.jobId], 120_000);
    expect(smallState!.status).toBe('completed');
    const bigWhenSmallDone = await jobState(svc.db, big.jobId);
    expect(['running', 'pending']).toContain(bigWhenSmallDone.status);
    expect(bigWhenSmallDone.processedImages).toBeLessThan(BIG / 2);
    // The lower-priority job did not get a turn.
    expect((await jobState(svc.db, low.jobId)).status).toBe('pending');

    const [bigState, lowState] = await waitForJobsToFinish(svc.db, [big.jobId, low.jobId], 180_000);
    expect(bigState).toMatchObject({ status: 'completed', processedImages: BIG });
    expect(lowState).toMatchObject({ status: 'completed', processedImages: 5 });
    expect(lowState!.startedAt!.getTime()).toBeGreaterThanOrEqual(bigState!.completedAt!.getTime());
    const captions = await captionsOf(svc.db, [big.jobId]);
    expect(captions).toHaveLength(BIG);
    expect([...countBy(captions.map((c) => c.itemId)).values()].every((n) => n === 1)).toBe(true);

    // One job slot held at the bridge too: a job hands its slot over only once drained.
    const stats = bridge.getStats();
    expect(stats.maxJobsInFlight).toBe(1);
    expect(stats.duplicateInFlight).toBe(0);
    // The big job handed its slot over to the small one, then got it back.
    const { rows } = await svc.db.execute<{ data: { oldStatus: string; newStatus: string; reason: string | null } }>(sql`
      select data from job_queue.outbox where job_id = ${big.jobId} and type = 'JOB_STATUS_CHANGED' order by seq`);
    const transitions = rows.map((r) => `${r.data.oldStatus}>${r.data.newStatus}`);
    expect(transitions[0]).toBe('pending>running');
    expect(transitions.at(-1)).toBe('running>completed');
    expect(transitions).toContain('running>pending');
    expect(rows.find((r) => r.data.newStatus === 'pending')!.data.reason).toMatch(/turn ended/);
    // Its calls: a first turn of at least SLICE items before the small job's.
    const order = bridge.calls.map((c) => c.jobId);
    const firstSmall = order.indexOf(small.jobId);
    expect(order.slice(0, firstSmall).every((id) => id === big.jobId)).toBe(true);
    expect(firstSmall).toBeGreaterThanOrEqual(SLICE);
    expect(order.filter((id) => id === small.jobId)).toHaveLength(20);
  }, 240_000);
});
