import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATASET } from './helpers/fixtures.js';
import { freePort, startProcess, stopProcess } from './helpers/process.js';
import { api, copyWorkspace } from './helpers/service.js';

let workspace: string;
let dataRoot: string;
beforeAll(async () => {
  workspace = await copyWorkspace();
  dataRoot = await mkdtemp(path.join(os.tmpdir(), 'graphcap-embedded-'));
  // As root, the embedded PostgreSQL runs as a `postgres` user, which must be able to enter it.
  await chmod(dataRoot, 0o755);
});
afterAll(async () => {
  await rm(workspace, { recursive: true, force: true });
  await rm(dataRoot, { recursive: true, force: true });
});

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}

describe('the service as a process, with its embedded database', () => {
  it('starts with no DATABASE_URL, stops cleanly on SIGTERM, and keeps its data across a restart', async () => {
    const pgPort = await freePort();
    const env = {
      WORKSPACE_PATH: workspace,
      EMBEDDED_PG_DATA: path.join(dataRoot, 'pg'),
      EMBEDDED_PG_PORT: String(pgPort),
    };
    const first = await startProcess(env);
    const created = await api(first.url, 'POST', '/api/perspectives/batch/create', {
      type: 'DATASET_PERSPECTIVE',
      datasetName: DATASET,
      perspectives: ['art_critic'],
      config: { provider: 'gemini', model: 'gemini-2.0-flash-exp' },
    });
    expect(created.status).toBe(200);
    expect(await portAnswers(pgPort)).toBe(true);

    expect(await stopProcess(first, 'SIGTERM')).toBe(0);
    expect(first.output()).toMatch(/"msg":"graphcap Data Service stopped"/);
    expect(await portAnswers(pgPort)).toBe(false);

    const second = await startProcess(env);
    try {
      const status = await api(second.url, 'GET', `/api/perspectives/batch/status/${created.body.jobId}`);
      expect(status.status).toBe(200);
      expect(status.body.job).toMatchObject({ jobId: created.body.jobId, totalImages: 7 });
      // The second start found the data already there.
      expect(second.output()).not.toMatch(/initialising embedded PostgreSQL/);
    } finally {
      expect(await stopProcess(second, 'SIGINT')).toBe(0);
    }
  }, 120_000);

  it('recovers after a kill -9 left its PostgreSQL running', async () => {
    const pgPort = await freePort();
    const env = { WORKSPACE_PATH: workspace, EMBEDDED_PG_DATA: path.join(dataRoot, 'pg-killed'), EMBEDDED_PG_PORT: String(pgPort) };
    const first = await startProcess(env);
    await stopProcess(first, 'SIGKILL');
    const second = await startProcess(env);
    try {
      expect((await api(second.url, 'GET', '/health')).status).toBe(200);
    } finally {
      expect(await stopProcess(second)).toBe(0);
    }
  }, 120_000);

  it('refuses to start on a bad setting, with one line naming it', async () => {
    const bad = await startProcess({ PORT: 'not-a-port', WORKSPACE_PATH: workspace }, { waitForHealth: false });
    expect(await bad.exited).toBe(1);
    expect(bad.output().trim()).toMatch(/^invalid configuration: PORT: .*"not-a-port"/);
    expect(bad.output().trim().split('\n')).toHaveLength(1);
  });
});
