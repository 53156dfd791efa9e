/** A missing or empty workspace is said in the log and in /health, and the service still serves. */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/logger.js';
import { api, startTestService } from './helpers/service.js';

let empty: string;
beforeAll(async () => {
  empty = await mkdtemp(path.join(os.tmpdir(), 'graphcap-empty-ws-'));
});
afterAll(async () => rm(empty, { recursive: true, force: true }));

async function healthOf(workspace: string): Promise<{ body: any; logs: string }> {
  let logs = '';
  const svc = await startTestService({ workspace, logger: createLogger('info', { write: (line: string) => void (logs += line) }) });
  try {
    const health = await api(svc.url, 'GET', '/health');
    expect(health.status).toBe(200);
    return { body: health.body, logs };
  } finally {
    await svc.close();
  }
}

describe('the workspace at start-up', () => {
  it('missing: a warning in the log and in /health', async () => {
    const missing = path.join(empty, 'not-there');
    const { body, logs } = await healthOf(missing);
    expect(body.workspace).toEqual({ path: missing, state: 'missing' });
    expect(body.warnings).toContain(`the workspace ${missing} does not exist (WORKSPACE_PATH)`);
    expect(logs).toMatch(/"msg":"WORKSPACE_PATH does not exist: no datasets or perspectives to import"/);
  });

  it('empty: a warning in the log and in /health', async () => {
    const { body, logs } = await healthOf(empty);
    expect(body.workspace).toEqual({ path: empty, state: 'empty' });
    expect(body.warnings).toContain(`the workspace ${empty} has no datasets and no perspectives`);
    expect(logs).toMatch(/"msg":"the workspace has no datasets\/ and no perspective_library\/: nothing to import"/);
  });
});
