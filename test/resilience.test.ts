/**
 * PostgreSQL restarts under load: /health says 503 while it is gone, the service serves again once
 * it is back without a restart, and the dispatcher finishes the job: nothing lost, nothing doubled.
 * This file runs its own PostgreSQL, since the shared one must stay up for the other files.
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedPostgres, type EmbeddedServer } from '../src/db/embedded.js';
import { CONFIG } from './helpers/fixtures.js';
import { captionsOf, itemStates, waitFor } from './helpers/jobs.js';
import { freePort } from './helpers/process.js';
import { api, startTestService, type TestService } from './helpers/service.js';
import { StandInBridge } from './stand-ins/bridge.js';

let root: string;
let port: number;
let server: EmbeddedServer;
let bridge: StandInBridge;

const startDatabase = () => startEmbeddedPostgres({ dataDir: path.join(root, 'pg'), port, database: 'graphcap' });

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'graphcap-restart-'));
  await chmod(root, 0o755);
  port = await freePort();
  server = await startDatabase();
  bridge = await StandInBridge.start({ latencyMs: 40 });
});
afterAll(async () => {
  await bridge?.close();
  await server?.stop();
  await rm(root, { recursive: true, force: true });
});

describe('a database restart mid-job', () => {
  it('reports 503 while PostgreSQL is gone, then serves again and completes the job exactly once', async () => {
    let svc: TestService | undefined;
    try {
      svc = await startTestService({
        databaseUrl: server.url,
        env: {
          INFERENCE_BRIDGE_URL: bridge.url,
          MAX_CONCURRENT_ITEMS: '4',
          POLL_INTERVAL_MS: '100',
          LEASE_SECONDS: '2',
          RETRY_BASE_MS: '50',
          RETRY_MAX_MS: '500',
          MAX_ATTEMPTS: '50',
        },
      });
      const created = await api(svc.url, 'POST', '/api/perspectives/batch/create', {
        type: 'DATASET_PERSPECTIVE',
        datasetName: 'os_img',
        perspectives: ['art_critic', 'storytelling', 'graph_caption', 'poetic_metaphor', 'out_of_frame', 'time_tags'],
        config: CONFIG,
      });
      const jobId = created.body.jobId as string;
      expect(created.body.totalImages).toBe(42);
      await waitFor('some items to finish', async () => (await api(svc!.url, 'GET', `/api/perspectives/batch/status/${jobId}`)).body.job.processedImages >= 5);

      await server.stop();
      const down = await api(svc.url, 'GET', '/health');
      expect(down.status).toBe(503);
      expect(down.body).toMatchObject({ database: 'unavailable' });

      server = await startDatabase();
      await waitFor('health to come back', async () => (await api(svc!.url, 'GET', '/health')).status === 200);
      await waitFor(
        'the job to complete',
        async () => (await api(svc!.url, 'GET', `/api/perspectives/batch/status/${jobId}`)).body.job?.status === 'completed',
        90_000,
      );
      const items = await itemStates(svc.db, [jobId]);
      expect(items).toHaveLength(42);
      expect(items.every((i) => i.status === 'completed')).toBe(true);
      const captions = await captionsOf(svc.db, [jobId]);
      expect(captions).toHaveLength(42);
      expect(new Set(captions.map((c) => c.itemId)).size).toBe(42);
    } finally {
      await svc?.close();
    }
  }, 150_000);
});
