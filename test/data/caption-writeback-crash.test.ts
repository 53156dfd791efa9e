/**
 * kill -9 while captions are being written back: after a restart every line of the files is whole
 * and each image has one line per perspective, however the kill fell (mid-append, after a write but
 * before its mark, between two files).
 */
import { link, mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCaptionLine } from '../../src/workspace/caption-files.js';
import { CONFIG, IMAGES } from '../helpers/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { waitFor } from '../helpers/jobs.js';
import { startProcess, stopProcess, type ServiceProcess } from '../helpers/process.js';
import { api, copyWorkspace } from '../helpers/service.js';
import { StandInBridge } from '../stand-ins/bridge.js';

const IMAGE_COUNT = 400;
const PERSPECTIVES = ['custom_caption', 'time_tags'];
let bridge: StandInBridge;
let database: TestDatabase;
let workspace: string;

beforeAll(async () => {
  bridge = await StandInBridge.start({ latencyMs: 0 });
  database = await createTestDatabase();
  workspace = await copyWorkspace();
  await mkdir(path.join(workspace, 'datasets/big'));
  for (let i = 0; i < IMAGE_COUNT; i++) await link(path.join(workspace, IMAGES[0]), path.join(workspace, `datasets/big/img-${String(i).padStart(3, '0')}.jpg`));
});
afterAll(async () => {
  await bridge?.close();
  await database?.drop();
});

const start = () =>
  startProcess({
    DATABASE_URL: database.url,
    WORKSPACE_PATH: workspace,
    INFERENCE_BRIDGE_URL: bridge.url,
    CAPTION_EXPORT_INTERVAL_MS: '10',
    MAX_CONCURRENT_ITEMS: '16',
    POLL_INTERVAL_MS: '50',
    LEASE_SECONDS: '2',
    LOG_LEVEL: 'warn',
  });

const fileOf = (perspective: string) => path.join(workspace, `datasets/big/analysis/batch_${perspective}/captions.jsonl`);
const read = (perspective: string) => readFile(fileOf(perspective), 'utf8').catch(() => '');

describe('kill -9 during the write-back', () => {
  it('leaves no torn or doubled line once the service is back', async () => {
    let service: ServiceProcess = await start();
    const created = await api(service.url, 'POST', '/api/perspectives/batch/create', { type: 'DATASET_PERSPECTIVE', datasetName: 'big', perspectives: PERSPECTIVES, config: CONFIG });
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    // Killed as soon as the write-back has begun: it is writing now, the job far from done.
    await waitFor('the first written lines', async () => (await read(PERSPECTIVES[0]!)).length > 0, 60_000, 1);
    service.child.kill('SIGKILL');
    expect(await service.exited).toBe('SIGKILL');
    const cut = (await read(PERSPECTIVES[0]!)).split('\n').filter(Boolean).length;
    expect(cut).toBeLessThan(IMAGE_COUNT);

    service = await start();
    try {
      await waitFor(
        'the job and the write-back to finish',
        async () => {
          const job = (await api(service.url, 'GET', `/api/perspectives/batch/status/${created.body.jobId}?limit=1`)).body.job;
          const metrics = await (await fetch(`${service.url}/metrics`)).text();
          return job.status === 'completed' && /graphcap_caption_writebacks_pending 0\n/.test(metrics);
        },
        120_000,
        200,
      );
      for (const perspective of PERSPECTIVES) {
        const text = await read(perspective);
        expect(text.endsWith('\n')).toBe(true);
        const names = text
          .split('\n')
          .filter(Boolean)
          .map((line) => {
            const entry = parseCaptionLine(line);
            expect(entry, line.slice(0, 100)).not.toHaveProperty('problem');
            return (entry as { filename: string }).filename;
          });
        expect(names.length, perspective).toBe(IMAGE_COUNT);
        expect(new Set(names).size, perspective).toBe(IMAGE_COUNT);
      }
    } finally {
      expect(await stopProcess(service)).toBe(0);
    }
  }, 240_000);
});
