/**
 * The whole service, started in-process on 127.0.0.1 with a port of its own, over the test file's
 * own database and a temporary copy of the fixture workspace. Tests talk to it over real HTTP.
 */
import { cp, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createTRPCClient, httpLink } from '@trpc/client';
import type pg from 'pg';
import { loadConfig, type Config } from '../../src/config.js';
import type { Db } from '../../src/db/client.js';
import { createLogger, type Logger } from '../../src/logger.js';
import type { AppRouter } from '../../src/routers/index.js';
import { startService, type Service } from '../../src/service.js';
import { createTestDatabase, type TestDatabase } from './db.js';

export const FIXTURE_WORKSPACE = fileURLToPath(new URL('../../examples/workspace', import.meta.url));

export interface TestService {
  url: string;
  db: Db;
  pool: pg.Pool;
  config: Config;
  workspace: string;
  database: TestDatabase;
  trpc: ReturnType<typeof createTRPCClient<AppRouter>>;
  service: Service;
  /** Restarts the service on the same database and workspace (new port). */
  restart(env?: Record<string, string>): Promise<void>;
  close(): Promise<void>;
}

/** A temporary copy of the fixture workspace, safe to change. */
export async function copyWorkspace(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'graphcap-ws-'));
  await cp(FIXTURE_WORKSPACE, dir, { recursive: true });
  return dir;
}

export async function startTestService(
  options: {
    env?: Record<string, string>;
    logger?: Logger;
    workspace?: string;
    /** A database of the test's own (left in place on close) instead of a clone of the template. */
    databaseUrl?: string;
  } = {},
): Promise<TestService> {
  const database: TestDatabase = options.databaseUrl
    ? { url: options.databaseUrl, name: new URL(options.databaseUrl).pathname.slice(1), drop: async () => {} }
    : await createTestDatabase();
  const workspace = options.workspace ?? (await copyWorkspace());
  const logger = options.logger ?? createLogger(process.env.TEST_LOG_LEVEL ?? 'silent');
  const makeConfig = (env: Record<string, string> = {}) =>
    loadConfig({
      PORT: '0',
      HOST: '127.0.0.1',
      NODE_ENV: 'test',
      DATABASE_URL: database.url,
      WORKSPACE_PATH: workspace,
      DB_POOL_SIZE: '5',
      API_POOL_SIZE: '5',
      SHUTDOWN_GRACE_SECONDS: '2',
      // Tests say when the workspace is imported (a watcher's test turns it on).
      WORKSPACE_WATCH: 'false',
      WORKSPACE_RESCAN_SECONDS: '0',
      ...options.env,
      ...env,
    });
  let config = makeConfig();
  let service = await startService(config, logger);
  const result: TestService = {
    url: service.url,
    db: service.database.db,
    pool: service.database.pool,
    config,
    workspace,
    database,
    trpc: makeClient(service.url),
    service,
    async restart(env) {
      await service.close();
      config = makeConfig(env);
      service = await startService(config, logger);
      Object.assign(result, {
        url: service.url,
        db: service.database.db,
        pool: service.database.pool,
        config,
        service,
        trpc: makeClient(service.url),
      });
    },
    async close() {
      await service.close();
      await database.drop();
      if (!options.workspace) await rm(workspace, { recursive: true, force: true });
    },
  };
  return result;
}

function makeClient(url: string) {
  return createTRPCClient<AppRouter>({ links: [httpLink({ url: `${url}/api/trpc` })] });
}

/** fetch against the service, JSON in and out. */
export async function api(
  base: string,
  method: string,
  route: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: any; headers: Headers }> {
  const response = await fetch(`${base}${route}`, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // leave as text
  }
  return { status: response.status, body: parsed, headers: response.headers };
}
