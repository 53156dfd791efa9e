/**
 * Perspective files the workspace should not hold: a FIFO, a link to /dev/zero, a link out of the
 * workspace, a file too big. Each is skipped with a problem in the sync report, the rest imports,
 * and the service keeps answering (a FIFO opened for reading used to block a file-I/O thread).
 */
import { execFileSync } from 'node:child_process';
import { symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startTestService, type TestService } from './helpers/service.js';

let svc: TestService;
beforeAll(async () => {
  svc = await startTestService();
});
afterAll(async () => svc?.close());

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
});
