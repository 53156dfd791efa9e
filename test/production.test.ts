/**
 * The production path, as the Dockerfile runs it but without Docker (no engine here): build, install
 * production dependencies only into a clean folder, start the compiled service against a real
 * PostgreSQL (its embedded default), and smoke-test it.
 */
import { execFile } from 'node:child_process';
import { chmod, cp, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONFIG, DATASET } from './helpers/fixtures.js';
import { freePort, ROOT, startProcess, stopProcess } from './helpers/process.js';
import { api, copyWorkspace } from './helpers/service.js';

const run = promisify(execFile);
let app: string;
let workspace: string;

beforeAll(async () => {
  app = await mkdtemp(path.join(os.tmpdir(), 'graphcap-prod-'));
  await chmod(app, 0o755);
  workspace = await copyWorkspace();
  const build = path.join(app, 'build');
  await run('npx', ['tsc', '-p', 'tsconfig.build.json', '--outDir', build], { cwd: ROOT });
  // The rest of `npm run build`: the files tsc does not emit (migrations, the queue board's page).
  await run('node', ['--import', 'tsx', 'scripts/copy-build-assets.ts', build], { cwd: ROOT });
  for (const file of ['package.json', 'package-lock.json']) await cp(path.join(ROOT, file), path.join(app, file));
  await cp(build, path.join(app, 'dist'), { recursive: true });
  await run('npm', ['ci', '--omit=dev', '--no-audit', '--no-fund'], { cwd: app, maxBuffer: 1 << 24 });
}, 240_000);
afterAll(async () => {
  await rm(app, { recursive: true, force: true });
  await rm(workspace, { recursive: true, force: true });
});

describe('the production build', () => {
  it('has no dev dependencies and serves the API from dist/ over a real PostgreSQL', async () => {
    await expect(run('node', ['-e', "require.resolve('vitest')"], { cwd: app })).rejects.toThrow();
    const service = await startProcess(
      {
        NODE_ENV: 'production',
        WORKSPACE_PATH: workspace,
        EMBEDDED_PG_DATA: path.join(app, 'pg'),
        EMBEDDED_PG_PORT: String(await freePort()),
      },
      { cwd: app, command: ['dist/src/main.js'] },
    );
    try {
      expect((await api(service.url, 'GET', '/health')).body).toMatchObject({ status: 'ok', database: 'ok' });
      const created = await api(service.url, 'POST', '/api/perspectives/batch/create', {
        type: 'DATASET_PERSPECTIVE',
        datasetName: DATASET,
        perspectives: ['art_critic'],
        config: CONFIG,
      });
      expect(created.status).toBe(200);
      const status = await api(service.url, 'GET', `/api/perspectives/batch/status/${created.body.jobId}`);
      expect(status.body.job.totalImages).toBe(7);
      expect((await fetch(`${service.url}/docs/`)).status).toBe(200);
      const board = await fetch(`${service.url}/board`);
      expect(board.status).toBe(200);
      expect(await board.text()).toContain('<script type="module" src="board.js">');
      for (const asset of ['board.js', 'board.css']) expect((await fetch(`${service.url}/board/${asset}`)).status, asset).toBe(200);
      expect(await (await fetch(`${service.url}/metrics`)).text()).toContain('graphcap_jobs{status="pending"} 1');
      const problem = await api(service.url, 'GET', '/api/perspectives/batch/status/not-a-uuid');
      expect(problem.status).toBe(400);
      expect(JSON.stringify(problem.body)).not.toMatch(/stack|\.ts:\d+|\.js:\d+/);
    } finally {
      expect(await stopProcess(service)).toBe(0);
    }
  }, 120_000);
});
