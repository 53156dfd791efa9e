/**
 * A job's `itemsPerSecond`: the recent throughput its ETA is computed from, on every Job. Real HTTP,
 * real PostgreSQL, the stand-in Inference Bridge with a fixed latency, so the rate has a hard ceiling
 * (items in flight over latency) to check against.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONFIG, DATASET } from '../helpers/fixtures.js';
import { waitFor, waitForJobsToFinish } from '../helpers/jobs.js';
import { api, startTestService, type TestService } from '../helpers/service.js';
import { StandInBridge } from '../stand-ins/bridge.js';

const LATENCY_MS = 200;
const IN_FLIGHT = 2;
const B = '/api/perspectives/batch';
let bridge: StandInBridge;
let svc: TestService;

beforeAll(async () => {
  bridge = await StandInBridge.start({ latencyMs: LATENCY_MS });
  svc = await startTestService({
    env: {
      INFERENCE_BRIDGE_URL: bridge.url,
      MAX_CONCURRENT_JOBS: '1',
      MAX_CONCURRENT_ITEMS: String(IN_FLIGHT),
      POLL_INTERVAL_MS: '100',
    },
  });
});
afterAll(async () => {
  await svc?.close();
  await bridge?.close();
});

const create = async () => {
  const response = await api(svc.url, 'POST', `${B}/create`, {
    type: 'DATASET_PERSPECTIVE',
    datasetName: DATASET,
    perspectives: ['art_critic', 'storytelling'],
    config: CONFIG,
  });
  expect(response.status).toBe(200);
  return response.body as { jobId: string; itemsPerSecond: number | null };
};

describe('itemsPerSecond', () => {
  it('is the running job’s recent rate, the one its ETA uses; null while pending and once finished', async () => {
    const job = await create();
    const queued = await create();
    expect(job.itemsPerSecond).toBeNull();
    const running = await waitFor('the job running with 4 items done', async () => {
      const j = (await api(svc.url, 'GET', `${B}/status/${job.jobId}?limit=1`)).body.job;
      return j.status === 'running' && j.processedImages >= 4 && j.processedImages < j.totalImages && j;
    });
    const rate = running.itemsPerSecond as number;
    expect(rate).toBeGreaterThan(0);
    // Each of the IN_FLIGHT slots finishes an item at most every LATENCY_MS.
    expect(rate).toBeLessThanOrEqual((IN_FLIGHT * 1000) / LATENCY_MS);
    const remaining = running.totalImages - running.processedImages - running.failedImages - running.cancelledImages;
    // Both come from one row read; the rate is rounded to 3 places, the ETA rounded up.
    expect(Math.abs(running.etaSeconds - remaining / rate)).toBeLessThanOrEqual(1);

    const listed = (await api(svc.url, 'GET', `${B}/list?status=pending`)).body.items;
    expect(listed.find((j: { jobId: string }) => j.jobId === queued.jobId)).toMatchObject({ itemsPerSecond: null });
    await waitForJobsToFinish(svc.db, [job.jobId, queued.jobId]);
    expect((await api(svc.url, 'GET', `${B}/status/${job.jobId}`)).body.job).toMatchObject({ status: 'completed', itemsPerSecond: null });
  });
});
