/**
 * `npm run demo` on its own: the stand-in bridge and the service in one process, on an embedded
 * PostgreSQL of its own and the example workspace; it runs a job to completed, printing its
 * progress, then stays up until SIGINT.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from './helpers/jobs.js';
import { freePort, ROOT } from './helpers/process.js';

let dir: string | undefined;
afterAll(async () => dir && rm(dir, { recursive: true, force: true }));

describe('npm run demo', () => {
  it('runs a job over the example dataset to completed, printing its progress, and stops on Ctrl-C', async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'graphcap-demo-'));
    // As root, the embedded PostgreSQL runs as a `postgres` user, which must be able to enter the folder.
    await chmod(dir, 0o755);
    const port = await freePort();
    const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/demo.ts'], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '',
        PORT: String(port),
        HOST: '127.0.0.1',
        EMBEDDED_PG_DATA: path.join(dir, 'pg'),
        EMBEDDED_PG_PORT: String(await freePort()),
        DEMO_LATENCY_MS: '20',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d) => (output += String(d)));
    child.stderr.on('data', (d) => (output += String(d)));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await waitFor('the demo to finish its job', () => output.includes('look around'), 90_000, 200);
      expect(output).toMatch(/job [0-9a-f-]{36}: 21 items \(dataset os_img × art_critic, graph_caption, storytelling\), provider gemini/);
      expect(output).toMatch(/\[#{20}\]\s+100%\s+completed 21 done, 0 failed of 21/);
      expect(output).toMatch(/a caption it stored \(graph_caption of datasets\/os_img\/[\w.-]+\):\n {2}\{"tags_list":\[\{"tag":/);
      expect(output).toContain(`queue board   http://127.0.0.1:${port}/board`);
      // Still up: the board answers.
      expect((await fetch(`http://127.0.0.1:${port}/board`)).status).toBe(200);
      child.kill('SIGINT');
      expect(await exited).toBe(0);
      // The repository's example workspace is as committed: nothing was written back into it.
      expect(execFileSync('git', ['status', '--porcelain', '--', 'examples'], { cwd: ROOT, encoding: 'utf8' })).toBe('');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 120_000);
});
