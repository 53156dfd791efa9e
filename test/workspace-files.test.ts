/**
 * A workspace that misbehaves: perspective files it should not hold (a FIFO, a link to /dev/zero,
 * a link out of the workspace, a file too big) are skipped with a problem each and the service
 * keeps answering (a FIFO opened for reading used to block a file-I/O thread); images are opened as
 * what was checked, and not hashed past a size; a dataset folder that cannot be read or is suddenly
 * empty keeps its members; a burst of sync requests is not a queue.
 */
import { execFileSync } from 'node:child_process';
import { cp, mkdir, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/logger.js';
import { readImageMetadata } from '../src/workspace/files.js';
import { DATASET, IMAGES } from './helpers/fixtures.js';
import { api, startTestService, type TestService } from './helpers/service.js';

let svc: TestService;
const logged: string[] = [];
beforeAll(async () => {
  const sink = new Writable({ write: (chunk, _e, done) => (logged.push(String(chunk)), done()) });
  svc = await startTestService({ logger: createLogger('info', sink) });
});
afterAll(async () => svc?.close());

async function syncReport() {
  const sync = await api(svc.url, 'POST', '/api/workspace/sync');
  expect(sync.status, JSON.stringify(sync.body)).toBe(200);
  return sync.body;
}

describe('hostile files in the perspective library', () => {
  it('are skipped with a problem each, without hanging the sync or the service', async () => {
    const lib = (name: string) => path.join(svc.workspace, 'perspective_library/core', name);
    execFileSync('mkfifo', [lib('fifo.json')]);
    await symlink('/dev/zero', lib('zero.json'));
    await symlink('/etc/hostname', lib('outside.json'));
    await writeFile(lib('huge.json'), `{"name":"huge","prompt":"${'x'.repeat(2 * 1024 * 1024)}"}`);
    await writeFile(lib('fine.json'), JSON.stringify({ name: 'fine_new', display_name: 'Fine', version: '1', prompt: 'p', schema_fields: [] }));

    const sync = await api(svc.url, 'POST', '/api/workspace/sync');
    expect(sync.status, JSON.stringify(sync.body)).toBe(200);
    const problems = Object.fromEntries(
      (sync.body.perspectives.problems as { file: string; message: string }[]).map((p) => [p.file.split('/').at(-1), p.message]),
    );
    expect(problems).toEqual({
      'fifo.json': 'not a regular file: skipped',
      'zero.json': 'a link that leads out of the workspace: skipped',
      'outside.json': 'a link that leads out of the workspace: skipped',
      'huge.json': expect.stringMatching(/^\d+ bytes, more than the 1048576 a file of this kind may have: skipped$/),
    });
    expect(sync.body.perspectives.changes.added).toEqual(['fine_new']);
    // File I/O still works: another sync reads the library again.
    const again = await api(svc.url, 'POST', '/api/workspace/sync');
    expect(again.status).toBe(200);
    expect((await api(svc.url, 'GET', '/health')).status).toBe(200);
  });

  it('a dataset folder that cannot be read, or is suddenly empty, keeps its members and says so; one that is gone loses them', async () => {
    const ws = (p: string) => path.join(svc.workspace, p);
    await cp(ws(`datasets/${DATASET}`), ws('datasets/mounted'), { recursive: true });
    const copy = (await syncReport()).datasets.find((d: { name: string }) => d.name === 'mounted');
    expect(copy.added).toBe(7);
    const members = async () => (await api(svc.url, 'GET', `/api/datasets/${copy.datasetId}`)).body.imageCount;

    // The volume is unmounted: its mount point is there, empty.
    await rm(ws('datasets/mounted'), { recursive: true });
    await mkdir(ws('datasets/mounted'));
    const emptied = (await syncReport()).datasets.find((d: { name: string }) => d.name === 'mounted');
    expect(emptied).toMatchObject({ removed: 0, problems: [{ path: 'datasets/mounted', message: 'empty while 7 members came from it (an unmounted volume?): they are kept' }] });
    expect(await members()).toBe(7);

    // A folder that cannot be read (a link to itself here: reading it fails with ELOOP).
    await rm(ws('datasets/mounted'), { recursive: true });
    await symlink('mounted', ws('datasets/mounted'));
    const unreadable = (await syncReport()).datasets.find((d: { name: string }) => d.name === 'mounted');
    expect(unreadable).toMatchObject({ removed: 0, problems: [{ path: 'datasets/mounted', message: 'cannot be read (ELOOP): its members are kept' }] });
    expect(await members()).toBe(7);

    // Gone for good: the members leave.
    await rm(ws('datasets/mounted'));
    const gone = (await syncReport()).datasets.find((d: { name: string }) => d.name === 'mounted');
    expect(gone).toMatchObject({ removed: 7, problems: [] });
    expect(await members()).toBe(0);
  });

  it('a burst of sync requests runs at most one sync after the one under way', async () => {
    const before = logged.filter((l) => l.includes('"msg":"workspace synced"')).length;
    const answers = await Promise.all(Array.from({ length: 10 }, () => api(svc.url, 'POST', '/api/workspace/sync')));
    expect(answers.map((a) => a.status)).toEqual(Array(10).fill(200));
    const runs = logged.filter((l) => l.includes('"msg":"workspace synced"')).length - before;
    expect(runs).toBeGreaterThanOrEqual(1);
    expect(runs).toBeLessThanOrEqual(2);
  });

  it('the image reader opens no FIFO and follows no link put where a file was; a file over 2 GB is not hashed', async () => {
    const ws = (p: string) => path.join(svc.workspace, p);
    execFileSync('mkfifo', [ws('swapped.jpg')]);
    await expect(readImageMetadata(ws('swapped.jpg'))).rejects.toThrow('not a regular file: skipped');
    await symlink(ws(IMAGES[0]), ws('linked.jpg'));
    await expect(readImageMetadata(ws('linked.jpg'))).rejects.toMatchObject({ code: 'ELOOP' });
    // A sparse file of 3 GB: listed, skipped with its size, never read.
    await writeFile(ws(`datasets/${DATASET}/huge.jpg`), '');
    await truncate(ws(`datasets/${DATASET}/huge.jpg`), 3 * 1024 ** 3);
    const report = (await syncReport()).datasets.find((d: { name: string }) => d.name === DATASET);
    expect(report.problems).toContainEqual({
      path: `datasets/${DATASET}/huge.jpg`,
      message: `${3 * 1024 ** 3} bytes, more than an image may have (${2 * 1024 ** 3}, WORKSPACE_IMAGE_MAX_BYTES): skipped`,
    });
  });

  it('takes its caps from WORKSPACE_IMAGE_MAX_BYTES and WORKSPACE_LIBRARY_FILE_MAX_BYTES', async () => {
    const small = await startTestService({ env: { WORKSPACE_IMAGE_MAX_BYTES: '1000', WORKSPACE_LIBRARY_FILE_MAX_BYTES: '100' } });
    try {
      const report = (await api(small.url, 'POST', '/api/workspace/sync')).body;
      const images = report.datasets.find((d: { name: string }) => d.name === DATASET);
      expect(images.added).toBe(0);
      expect(images.problems.map((p: { message: string }) => p.message)).toEqual(
        Array(IMAGES.length).fill(expect.stringMatching(/^\d+ bytes, more than an image may have \(1000, WORKSPACE_IMAGE_MAX_BYTES\): skipped$/)),
      );
      expect(report.perspectives.added).toBe(0);
      expect(report.perspectives.problems.every((p: { message: string }) => /more than the 100 a file of this kind may have/.test(p.message))).toBe(true);
      expect(report.perspectives.problems.length).toBeGreaterThan(0);
    } finally {
      await small.close();
    }
  });
});
