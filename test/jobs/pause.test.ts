/**
 * Pause and resume, end to end: real HTTP to the service, real PostgreSQL, the stand-in Inference
 * Bridge as a real server. One job slot, so "a paused job frees its slot" is visible.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createJob, IMAGES } from '../helpers/fixtures.js';
import { captionsOf, itemStates, jobState, waitFor, waitForJobsToFinish } from '../helpers/jobs.js';
import { api, startTestService, type TestService } from '../helpers/service.js';
import { StandInBridge } from '../stand-ins/bridge.js';

let bridge: StandInBridge;
let svc: TestService;

beforeAll(async () => {
  bridge = await StandInBridge.start();
  svc = await startTestService({
    env: {
      INFERENCE_BRIDGE_URL: bridge.url,
      MAX_CONCURRENT_JOBS: '1',
      MAX_CONCURRENT_ITEMS: '2',
      POLL_INTERVAL_MS: '100',
      LEASE_SECONDS: '30',
      BRIDGE_TIMEOUT_MS: '10000',
    },
  });
});
afterAll(async () => {
  await svc?.close();
  await bridge?.close();
});
beforeEach(() => {
  bridge.set({ latencyMs: [5, 20], errorRate: 0, hangRate: 0, permanentFailures: {}, hangImages: [], seed: 1 });
  bridge.reset();
});

const B = '/api/perspectives/batch';
const post = (route: string, body?: unknown) => api(svc.url, 'POST', `${B}${route}`, body);
const callsOf = (jobId: string) => bridge.calls.filter((c) => c.jobId === jobId);

/** The job's JOB_STATUS_CHANGED events, oldest first. */
async function statusEvents(jobId: string): Promise<{ oldStatus: string; newStatus: string; reason: string | null }[]> {
  const { rows } = await svc.db.execute<{ data: { oldStatus: string; newStatus: string; reason: string | null } }>(sql`
    select data from job_queue.outbox where job_id = ${jobId} and type = 'JOB_STATUS_CHANGED' order by seq`);
  return rows.map((r) => ({ oldStatus: r.data.oldStatus, newStatus: r.data.newStatus, reason: r.data.reason }));
}

describe('pause and resume', () => {
  it('a paused job dispatches nothing new, lets in-flight items finish, frees its slot, and completes after resume', async () => {
    bridge.set({ latencyMs: [40, 80] });
    const big = await createJob(svc.url, { perspectives: ['art_critic', 'storytelling'], imagePaths: [...IMAGES] });
    expect(big.totalImages).toBe(14);
    await waitFor('a few calls of the job', () => callsOf(big.jobId).filter((c) => c.outcome === 'ok').length >= 2);

    const paused = await post(`/pause/${big.jobId}`);
    expect(paused.status).toBe(200);
    expect(paused.body).toMatchObject({ jobId: big.jobId, status: 'paused' });
    expect(paused.body.queuePosition).toBe(1);

    // In-flight calls finish and are recorded; then nothing of the job runs.
    const settled = await waitFor('the in-flight items of the paused job to be recorded', async () => {
      const items = await itemStates(svc.db, [big.jobId]);
      return callsOf(big.jobId).every((c) => c.outcome !== 'in-flight') && !items.some((i) => i.status === 'running') && items;
    });
    const callsAtRest = callsOf(big.jobId).length;
    const completedAtRest = settled.filter((i) => i.status === 'completed').length;
    expect(completedAtRest).toBe(callsOf(big.jobId).filter((c) => c.outcome === 'ok').length);
    expect(completedAtRest).toBeLessThan(14);
    expect(await jobState(svc.db, big.jobId)).toMatchObject({ status: 'paused', processedImages: completedAtRest });

    // The only job slot is free: another job runs to completion meanwhile.
    const small = await createJob(svc.url, { imagePaths: IMAGES.slice(0, 2) });
    const [smallState] = await waitForJobsToFinish(svc.db, [small.jobId]);
    expect(smallState!.status).toBe('completed');
    expect(callsOf(small.jobId)).toHaveLength(2);

    // Statistics count it; it keeps its queue position.
    const stats = await api(svc.url, 'GET', `${B}/statistics`);
    expect(stats.body.jobs.paused).toBe(1);
    const status = await api(svc.url, 'GET', `${B}/status/${big.jobId}`);
    expect(status.body.job).toMatchObject({ status: 'paused', queuePosition: 1 });
    expect(callsOf(big.jobId)).toHaveLength(callsAtRest);

    // Resume (through tRPC): it completes, every item once.
    const resumedAt = Date.now();
    const resumed = await svc.trpc.batch.resume.mutate({ jobId: big.jobId });
    expect(['pending', 'running']).toContain(resumed.status);
    const [bigState] = await waitForJobsToFinish(svc.db, [big.jobId]);
    expect(bigState).toMatchObject({ status: 'completed', processedImages: 14, failedImages: 0 });
    expect(await captionsOf(svc.db, [big.jobId])).toHaveLength(14);
    // No call of the job arrived between the in-flight ones settling and the resume.
    const calls = callsOf(big.jobId);
    expect(calls.slice(callsAtRest).every((c) => c.at >= resumedAt)).toBe(true);
    expect(calls).toHaveLength(14);

    const events = await statusEvents(big.jobId);
    expect(events).toEqual([
      { oldStatus: 'pending', newStatus: 'running', reason: null },
      { oldStatus: 'running', newStatus: 'paused', reason: 'paused by request' },
      { oldStatus: 'paused', newStatus: 'pending', reason: 'resumed by request' },
      { oldStatus: 'pending', newStatus: 'running', reason: null },
      { oldStatus: 'running', newStatus: 'completed', reason: null },
    ]);
  });

  it('a paused job whose last items were in flight finishes when they are recorded', async () => {
    bridge.set({ latencyMs: 300 });
    const job = await createJob(svc.url, { imagePaths: IMAGES.slice(0, 2) });
    await waitFor('both items in flight', () => callsOf(job.jobId).filter((c) => c.outcome === 'in-flight').length === 2);
    expect((await post(`/pause/${job.jobId}`)).status).toBe(200);
    const [state] = await waitForJobsToFinish(svc.db, [job.jobId]);
    expect(state).toMatchObject({ status: 'completed', processedImages: 2 });
    expect((await statusEvents(job.jobId)).map((e) => `${e.oldStatus}>${e.newStatus}`)).toEqual([
      'pending>running',
      'running>paused',
      'paused>completed',
    ]);
  });

  it('state rules: pause only pending or running, resume only paused (409); cancel and reorder take a paused job', async () => {
    // A blocker holds the slot, so the next jobs stay pending.
    bridge.set({ hangImages: [IMAGES[0].split('/').pop()!] });
    const blocker = await createJob(svc.url, { imagePaths: [IMAGES[0]] });
    await waitFor('the blocker to reach the bridge', () => callsOf(blocker.jobId).length > 0);
    const a = await createJob(svc.url, { imagePaths: IMAGES.slice(1, 3) });
    const b = await createJob(svc.url, { imagePaths: IMAGES.slice(3, 5) });

    expect((await post(`/resume/${a.jobId}`)).status).toBe(409);
    const pausedA = await post(`/pause/${a.jobId}`);
    expect(pausedA.body).toMatchObject({ status: 'paused', queuePosition: 2 });
    const again = await post(`/pause/${a.jobId}`);
    expect(again.status).toBe(409);
    expect(again.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(again.body.detail).toMatch(/only pending or running jobs can be paused/);
    expect((await post(`/pause/00000000-0000-4000-8000-000000000000`)).status).toBe(404);
    expect((await post('/pause/not-a-uuid')).status).toBe(400);

    // Reorder takes it: move it behind b.
    const reordered = await post('/reorder', { moves: [{ jobId: a.jobId, position: 3 }] });
    expect(reordered.status).toBe(200);
    expect(reordered.body.queue.map((q: { jobId: string; status: string }) => [q.jobId, q.status])).toEqual([
      [blocker.jobId, 'running'],
      [b.jobId, 'pending'],
      [a.jobId, 'paused'],
    ]);

    // Cancel takes it; then neither pause nor resume does.
    const cancelled = await post(`/cancel/${a.jobId}`);
    expect(cancelled.status).toBe(200);
    expect(cancelled.body).toMatchObject({ status: 'cancelled', cancelledImages: 2 });
    expect((await post(`/resume/${a.jobId}`)).status).toBe(409);
    expect((await post(`/pause/${a.jobId}`)).status).toBe(409);
    expect((await statusEvents(a.jobId)).map((e) => `${e.oldStatus}>${e.newStatus}`)).toEqual(['pending>paused', 'paused>cancelled']);

    expect((await post(`/cancel/${blocker.jobId}`)).status).toBe(200);
    expect((await post(`/cancel/${b.jobId}`)).status).toBe(200);
  });
});
