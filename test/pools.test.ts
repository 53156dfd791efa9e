/**
 * API requests have a database pool of their own, with a statement timeout: requests that hold
 * every one of its connections delay neither the dispatcher nor /health (which says the pool is
 * saturated), and a query past API_STATEMENT_TIMEOUT_MS is a 408, not a request hung for good.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONFIG, IMAGES } from './helpers/fixtures.js';
import { waitFor, waitForJobsToFinish } from './helpers/jobs.js';
import { api, startTestService, type TestService } from './helpers/service.js';
import { StandInBridge } from './stand-ins/bridge.js';

let bridge: StandInBridge;
let svc: TestService;
beforeAll(async () => {
  bridge = await StandInBridge.start({ latencyMs: 300 });
  svc = await startTestService({
    env: { INFERENCE_BRIDGE_URL: bridge.url, POLL_INTERVAL_MS: '50', MAX_CONCURRENT_ITEMS: '2', API_POOL_SIZE: '2', API_STATEMENT_TIMEOUT_MS: '2000' },
  });
});
afterAll(async () => {
  await svc?.close();
  await bridge?.close();
});

describe('the API’s own database pool', () => {
  it('saturated by stuck requests, it delays neither a running job nor /health, and the stuck queries end in 408', { timeout: 60_000 }, async () => {
    const created = await api(svc.url, 'POST', '/api/perspectives/batch/create', { type: 'MULTI_PERSPECTIVE', imagePaths: [...IMAGES], perspectives: ['art_critic'], config: CONFIG });
    expect(created.status).toBe(200);
    // Another session holds the datasets table: every API read of it waits for the lock.
    const blocker = new pg.Client({ connectionString: svc.database.url });
    await blocker.connect();
    try {
      await blocker.query('begin');
      await blocker.query('lock table core_schema.datasets in access exclusive mode');
      const stuck = Array.from({ length: 5 }, () => api(svc.url, 'GET', '/api/datasets'));
      const health = await waitFor('the API pool to be saturated', async () => {
        const answer = await api(svc.url, 'GET', '/health');
        return answer.body.pools.api.waiting > 0 && answer;
      });
      expect(health.status).toBe(200);
      expect(health.body).toMatchObject({ status: 'ok', database: 'ok', pools: { api: { size: 2, inUse: 2 } } });
      expect(health.body.warnings).toContainEqual(expect.stringContaining('every API database connection is in use'));
      // The dispatcher runs the job on its own connections meanwhile (7 calls of 300 ms, 2 at a time).
      const [job] = await waitForJobsToFinish(svc.db, [created.body.jobId], 30_000);
      expect(job!.status).toBe('completed');
      expect((await api(svc.url, 'GET', '/health')).body.pools.api.waiting).toBeGreaterThan(0);
      const answers = await Promise.all(stuck);
      for (const answer of answers) {
        expect(answer.status, JSON.stringify(answer.body)).toBe(408);
        expect(answer.body.detail).toContain('API_STATEMENT_TIMEOUT_MS');
      }
    } finally {
      await blocker.query('rollback');
      await blocker.end();
    }
    expect((await api(svc.url, 'GET', '/api/datasets')).status).toBe(200);
  });
});
