/**
 * Adaptive dispatch end to end (src/db/provider-states.ts): real HTTP, real PostgreSQL, the stand-in
 * Inference Bridge as a real server that rate-limits (429 with Retry-After), goes down (503s for
 * 30 s) or slows down on command. Two replicas share one database and one provider, so what one
 * learns holds for both.
 */
import { link, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { CONFIG, DATASET } from '../helpers/fixtures.js';
import { captionsOf, countBy, itemStates, waitFor, waitForJobsToFinish } from '../helpers/jobs.js';
import { api, startTestService, type TestService } from '../helpers/service.js';
import { StandInBridge } from '../stand-ins/bridge.js';

const CAP = 8;
const BULK = 'adaptive_bulk';
const COOLDOWN_MS = 1000;
let bridge: StandInBridge;
let a: TestService;
let b: TestService;
let bulk: string[];
let logs = '';

beforeAll(async () => {
  bridge = await StandInBridge.start({ latencyMs: 50 });
  const env = {
    INFERENCE_BRIDGE_URL: bridge.url,
    MAX_CONCURRENT_JOBS: '1',
    MAX_CONCURRENT_ITEMS: String(CAP),
    FAIR_SHARE_SLICE_ITEMS: '0',
    POLL_INTERVAL_MS: '100',
    LEASE_SECONDS: '30',
    BRIDGE_TIMEOUT_MS: '10000',
    // Few attempts: a throttled or probing call that spent one would soon fail its item.
    MAX_ATTEMPTS: '3',
    RETRY_BASE_MS: '50',
    RETRY_MAX_MS: '200',
    BREAKER_FAILURES: '5',
    BREAKER_COOLDOWN_MS: String(COOLDOWN_MS),
    BREAKER_MAX_COOLDOWN_MS: String(4 * COOLDOWN_MS),
  };
  const logger = createLogger('info', { write: (line: string) => void (logs += line) });
  a = await startTestService({ env: { ...env, REPLICA_ID: 'replica-a' }, logger });
  const folder = path.join(a.workspace, 'datasets', BULK);
  await mkdir(folder);
  const source = path.join(a.workspace, 'datasets', DATASET, 'ural-owl-6676441_640.jpg');
  bulk = [];
  for (let i = 0; i < 600; i++) {
    const name = `owl-${String(i).padStart(3, '0')}.jpg`;
    await link(source, path.join(folder, name));
    bulk.push(`datasets/${BULK}/${name}`);
  }
  expect((await api(a.url, 'POST', '/api/workspace/sync')).status).toBe(200);
  b = await startTestService({ env: { ...env, REPLICA_ID: 'replica-b' }, logger, databaseUrl: a.database.url, workspace: a.workspace });
}, 120_000);
afterAll(async () => {
  await b?.close();
  await a?.close();
  await bridge?.close();
});
beforeEach(async () => {
  bridge.set({ latencyMs: 50, throttleUntil: 0, unavailableUntil: 0, errorRate: 0, hangRate: 0 });
  bridge.reset();
  await a.db.execute(sql`delete from job_queue.provider_states`);
  logs = '';
});

async function createJob(items: number): Promise<string> {
  const response = await api(a.url, 'POST', '/api/perspectives/batch/create', {
    type: 'MULTI_PERSPECTIVE',
    perspectives: ['art_critic'],
    imagePaths: bulk.slice(0, items),
    config: CONFIG,
  });
  expect(response.status, JSON.stringify(response.body)).toBe(200);
  return response.body.jobId as string;
}

/** Every item completed once, each with one caption; with `maxAttempts`, none spent more attempts. */
async function expectAllCompleted(jobId: string, total: number, maxAttempts?: number): Promise<void> {
  const items = await itemStates(a.db, [jobId]);
  expect(items).toHaveLength(total);
  expect(countBy(items.map((i) => i.status))).toEqual(new Map([['completed', total]]));
  if (maxAttempts !== undefined) expect(Math.max(...items.map((i) => i.attempts))).toBeLessThanOrEqual(maxAttempts);
  const captions = await captionsOf(a.db, [jobId]);
  expect(new Set(captions.map((c) => c.itemId)).size).toBe(total);
  expect(captions).toHaveLength(total);
}

const providerStats = async () => (await api(a.url, 'GET', '/api/perspectives/batch/statistics')).body.providers as {
  provider: string;
  model: string;
  concurrencyLimit: number;
  breaker: string;
}[];

describe('adaptive dispatch', () => {
  it('honours Retry-After on both replicas, spends no attempts, and shrinks then grows its in-flight limit', async () => {
    const jobId = await createJob(500);
    await waitFor('the first calls', () => bridge.calls.filter((c) => c.outcome === 'ok').length >= 60);
    const throttledFrom = Date.now();
    const throttleUntil = throttledFrom + 1500;
    bridge.set({ throttleUntil, retryAfterSeconds: 1 });

    const [state] = await waitForJobsToFinish(a.db, [jobId], 90_000);
    expect(state!.status).toBe('completed');
    // Throttled calls gave their attempts back: every item completed on its one attempt.
    await expectAllCompleted(jobId, 500, 1);

    const calls = [...bridge.calls].sort((x, y) => x.at - y.at);
    const throttled = calls.filter((c) => c.outcome === 'throttled');
    expect(throttled.length).toBeGreaterThan(0);
    expect(throttled.every((c) => c.retryAfterMs === 1000)).toBe(true);
    // No call arrives while a Retry-After is running: none between a 429 (plus a moment for the
    // answer to reach the replicas and the one that saw it to tell the other) and its end.
    const SLACK_MS = 300;
    for (const t of throttled) {
      const early = calls.filter((c) => c.at > t.endedAt! + SLACK_MS && c.at < t.endedAt! + t.retryAfterMs!);
      expect(early.map((c) => c.at - t.endedAt!), `calls within the Retry-After of the 429 at ${t.endedAt}`).toEqual([]);
    }
    // Both replicas dispatched, and together they never exceeded the cap.
    expect(bridge.getStats().maxInFlight).toBeLessThanOrEqual(CAP);
    const before = calls.filter((c) => c.at < throttledFrom);
    expect(Math.max(...before.map((c) => c.inFlight))).toBe(CAP);
    // After the throttling ends: in flight first well below the cap, then back up to it.
    const after = calls.filter((c) => c.at > throttleUntil && c.outcome === 'ok');
    expect(after.length).toBeGreaterThan(100);
    expect(Math.max(...after.slice(0, 10).map((c) => c.inFlight))).toBeLessThanOrEqual(CAP / 2);
    expect(Math.max(...after.slice(-100).map((c) => c.inFlight))).toBeGreaterThanOrEqual(CAP - 1);
    expect(logs).toMatch(/"msg":"provider limit lowered"/);

    // The state is public: statistics and metrics.
    const [provider] = await providerStats();
    expect(provider).toMatchObject({ provider: CONFIG.provider, model: CONFIG.model, breaker: 'closed' });
    expect(provider!.concurrencyLimit).toBeLessThanOrEqual(CAP);
    const metrics = await Promise.all([a, b].map(async (s) => (await fetch(`${s.url}/metrics`)).text()));
    expect(metrics[0]).toMatch(new RegExp(`graphcap_provider_concurrency_limit\\{provider="gemini",model="${CONFIG.model}"\\} \\d`));
    // Deferred items are counted by the replica that recorded them.
    const deferred = metrics.map((m) => Number(/graphcap_dispatched_items_total\{outcome="deferred"\} (\d+)/.exec(m)?.[1] ?? 0));
    expect(deferred[0]! + deferred[1]!).toBeGreaterThan(0);
  }, 120_000);

  it('opens the breaker while the provider is down for 30 s, probes, closes, and completes every item', async () => {
    bridge.set({ latencyMs: 20 });
    const jobId = await createJob(300);
    await waitFor('the first calls', () => bridge.calls.filter((c) => c.outcome === 'ok').length >= 40);
    const downFrom = Date.now();
    const downUntil = downFrom + 30_000;
    bridge.set({ unavailableUntil: downUntil });

    const open = await waitFor('the breaker to open', async () => (await providerStats()).find((p) => p.breaker !== 'closed'));
    expect(['open', 'half-open']).toContain(open.breaker);
    const [state] = await waitForJobsToFinish(a.db, [jobId], 90_000);
    expect(state!.status).toBe('completed');
    await expectAllCompleted(jobId, 300);

    const during = bridge.calls.filter((c) => c.at >= downFrom && c.at < downUntil).sort((x, y) => x.at - y.at);
    // The failures that open it: at most the cap in flight, a few rounds' worth. Then only probes:
    // one at a time, at least a cool-down apart.
    const opened = during.findIndex((c, i) => i > 0 && c.at - during[i - 1]!.at >= COOLDOWN_MS - 100);
    expect(opened).toBeGreaterThan(0);
    expect(opened).toBeLessThanOrEqual(3 * CAP);
    // Only the calls that failed before the breaker opened (those in flight when the outage began
    // included) spent an attempt, an item retried soon enough maybe two; the probes gave theirs back.
    const probes = during.slice(opened);
    const failedBeforeOpen = bridge.calls.filter((c) => c.outcome === 'transient' && c.at < probes[0]!.at).length;
    const attempts = (await itemStates(a.db, [jobId])).reduce((sum, i) => sum + i.attempts, 0);
    expect(attempts - 300).toBeGreaterThan(0);
    expect(attempts - 300).toBeLessThanOrEqual(failedBeforeOpen);
    expect(probes.length).toBeGreaterThan(2);
    expect(probes.length).toBeLessThanOrEqual(30_000 / COOLDOWN_MS);
    expect(probes.every((c) => c.inFlight === 1)).toBe(true);
    for (let i = 1; i < probes.length; i++) expect(probes[i]!.at - probes[i - 1]!.at).toBeGreaterThanOrEqual(COOLDOWN_MS - 100);
    expect(during.every((c) => c.outcome === 'transient' || c.outcome === 'ok')).toBe(true);
    // The first call after the outage is a probe, and then the provider is back at work.
    expect(bridge.calls.filter((c) => c.at >= downUntil).length).toBeGreaterThan(50);

    expect(logs).toMatch(/"msg":"circuit breaker opened/);
    expect(logs).toMatch(/"msg":"circuit breaker closed/);
    const [provider] = await providerStats();
    expect(provider!.breaker).toBe('closed');
    const metrics = await (await fetch(`${b.url}/metrics`)).text();
    expect(metrics).toContain(`graphcap_provider_breaker_state{provider="gemini",model="${CONFIG.model}",state="closed"} 1`);
  }, 120_000);

  it('lowers the limit while latency rises, and grows it back once the new latency is the normal', async () => {
    bridge.set({ latencyMs: 20 });
    const jobId = await createJob(400);
    await waitFor('the first calls', () => bridge.calls.filter((c) => c.outcome === 'ok').length >= 80);
    bridge.set({ latencyMs: 600 });
    await waitFor('the limit to drop', async () => {
      const [p] = await providerStats();
      return p && p.breaker === 'closed' && p.concurrencyLimit < CAP / 2;
    }, 30_000);
    const loweredAt = Date.now();
    // Once the slow average has caught up, the limit climbs back to the cap.
    await waitFor('the limit to recover', async () => {
      const [p] = await providerStats();
      return p && p.concurrencyLimit >= CAP - 1;
    }, 60_000);
    const recoveredAt = Date.now();
    await waitFor('calls at the cap again', () => bridge.calls.some((c) => c.at > recoveredAt && c.inFlight >= CAP - 1), 30_000);
    expect((await api(a.url, 'POST', `/api/perspectives/batch/cancel/${jobId}`)).status).toBe(200);

    // What the bridge saw: while the limit was low, fewer calls at once than the cap.
    const whileLow = bridge.calls.filter((c) => c.at > loweredAt + 700 && c.at < loweredAt + 1500);
    expect(whileLow.length).toBeGreaterThan(0);
    expect(Math.max(...whileLow.map((c) => c.inFlight))).toBeLessThan(CAP / 2 + 1);
    expect(logs).toMatch(/"msg":"provider limit lowered"/);
  }, 120_000);
});
