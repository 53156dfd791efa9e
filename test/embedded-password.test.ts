/**
 * The embedded PostgreSQL's superuser password is random per data folder, kept in it readable by
 * its owner only, and the fixed password of earlier versions is replaced at the first start.
 */
import { chmod, mkdtemp, readFile, rm, stat, unlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, startEmbeddedPostgres } from '../src/db/embedded.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

const canConnect = async (url: string) => {
  const client = new pg.Client({ connectionString: url });
  try {
    await client.connect();
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
};

describe('the embedded PostgreSQL password', () => {
  it('is random, kept in the data folder (0600), the same across restarts, and replaces the old fixed one', { timeout: 90_000 }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'graphcap-pw-'));
    dirs.push(dir);
    await chmod(dir, 0o755);
    const dataDir = path.join(dir, 'data');
    const file = path.join(dataDir, 'graphcap-password');
    const port = await freePort();
    const legacy = (url: string) => url.replace(/\/\/postgres:[^@]+@/, '//postgres:graphcap-local@');

    const first = await startEmbeddedPostgres({ dataDir, port });
    const password = (await readFile(file, 'utf8')).trim();
    expect(password).toMatch(/^[0-9a-f]{48}$/);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(first.url).toContain(`postgres:${password}@`);
    expect(await canConnect(first.url)).toBe(true);
    expect(await canConnect(legacy(first.url))).toBe(false);
    // A folder of an earlier version: the fixed password, no file.
    const admin = new pg.Client({ connectionString: first.adminUrl });
    await admin.connect();
    await admin.query(`alter role postgres password 'graphcap-local'`);
    await admin.end();
    await first.stop();
    await unlink(file);

    const second = await startEmbeddedPostgres({ dataDir, port });
    const replaced = (await readFile(file, 'utf8')).trim();
    expect(replaced).toMatch(/^[0-9a-f]{48}$/);
    expect(replaced).not.toBe(password);
    expect(await canConnect(legacy(second.url))).toBe(false);
    expect(await canConnect(second.url)).toBe(true);
    await second.stop();

    const third = await startEmbeddedPostgres({ dataDir, port });
    expect(third.url).toContain(`postgres:${replaced}@`);
    expect(await canConnect(third.url)).toBe(true);
    await third.stop();
  });
});
