/**
 * Wires the service: database (embedded or DATABASE_URL, migrated), workspace import, HTTP server.
 * `main.ts` runs it as a process; tests start it in-process against their own database.
 */
import { existsSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { createServer, type Server } from 'node:http';
import type { Config } from './config.js';
import { openDatabase, type Database } from './db/client.js';
import { countJobsWithSecrets } from './db/jobs.js';
import { createApp } from './http/app.js';
import { Dispatcher } from './jobs/dispatcher.js';
import { EventHub } from './jobs/event-hub.js';
import { ItemWriter } from './jobs/item-writer.js';
import { Notifier } from './jobs/notifier.js';
import { Retention } from './jobs/retention.js';
import type { Logger } from './logger.js';
import { createMetrics, type Metrics } from './metrics.js';
import { buildOpenApiDocument } from './openapi.js';
import { syncWorkspace } from './workspace-sync.js';

export interface Service {
  /** Base URL the server listens on, e.g. http://127.0.0.1:32550 */
  url: string;
  database: Database;
  server: Server;
  /**
   * Stops accepting requests and claiming items, lets in-flight requests and bridge calls finish
   * (up to the grace period), releases unfinished items, closes the database.
   */
  close(): Promise<void>;
}

export async function startService(config: Config, logger: Logger): Promise<Service> {
  const database = await openDatabase(config, logger);
  try {
    await checkSecretsKey(database.db, config, logger);
    if (config.WORKSPACE_SYNC_ON_START) {
      if (existsSync(config.WORKSPACE_PATH)) await syncWorkspace(database.db, config.WORKSPACE_PATH, logger);
      else logger.warn({ workspace: config.WORKSPACE_PATH }, 'WORKSPACE_PATH does not exist; nothing imported');
    }
    const metrics = createMetrics({ db: database.db, pool: database.pool });
    const events = new EventHub({ db: database.db, databaseUrl: database.url, logger, pollMs: config.NOTIFIER_POLL_MS });
    await events.start();
    const itemWriter = new ItemWriter({ db: database.db, logger, pollMs: config.POLL_INTERVAL_MS });
    const app = createApp({
      db: database.db,
      pool: database.pool,
      config,
      logger,
      openApiDocument: buildOpenApiDocument(),
      metrics,
      events,
      itemWriter,
    });
    const server = createServer(app);
    // Slow or silent clients must not hold sockets forever.
    server.requestTimeout = 60_000;
    server.headersTimeout = 20_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.PORT, config.HOST, () => resolve());
    });
    const { port } = server.address() as AddressInfo;
    const host = config.HOST === '0.0.0.0' || config.HOST === '::' ? '127.0.0.1' : config.HOST;
    const url = `http://${host}:${port}`;
    logger.info({ url, docs: `${url}/docs`, embeddedDatabase: !config.DATABASE_URL }, 'graphcap Data Service listening');

    itemWriter.start();
    const dispatcher = startDispatcher(config, database, logger, metrics);
    const notifier = new Notifier({
      db: database.db,
      databaseUrl: database.url,
      config,
      logger,
      onDelivery: (outcome) => metrics.eventDeliveries.inc({ outcome }),
    });
    notifier.start();
    const retention = new Retention({
      db: database.db,
      logger,
      policy: {
        archiveAfterDays: config.RETENTION_ARCHIVE_AFTER_DAYS,
        deleteArchivedAfterDays: config.RETENTION_DELETE_ARCHIVED_AFTER_DAYS,
      },
      intervalMs: config.RETENTION_INTERVAL_MINUTES * 60_000,
      firstRunMs: Math.min(60_000, config.RETENTION_INTERVAL_MINUTES * 60_000),
    });
    retention.start();
    let closing: Promise<void> | undefined;
    const close = () =>
      (closing ??= (async () => {
        const graceMs = config.SHUTDOWN_GRACE_SECONDS * 1000;
        // Live streams end first, so the server is not kept open by them.
        await events.stop();
        await Promise.all([closeServer(server, graceMs), dispatcher?.stop(graceMs), retention.stop(), itemWriter.stop()]);
        // Events the last recordings wrote still go out before the database closes.
        await notifier.stop();
        await database.close();
        logger.info('graphcap Data Service stopped');
      })());
    return { url, database, server, close };
  } catch (error) {
    await database.close().catch(() => undefined);
    throw error;
  }
}

/** The dispatcher, unless this replica is API-only or has no Inference Bridge to call. */
function startDispatcher(config: Config, database: Database, logger: Logger, metrics: Metrics): Dispatcher | undefined {
  if (!config.DISPATCHER_ENABLED) {
    logger.info('dispatcher disabled (DISPATCHER_ENABLED=false): this replica serves the API only');
    return undefined;
  }
  if (!config.INFERENCE_BRIDGE_URL) {
    logger.warn('INFERENCE_BRIDGE_URL is not set: the dispatcher is idle and jobs stay queued until a replica with a bridge runs them');
    return undefined;
  }
  return new Dispatcher({ db: database.db, pool: database.pool, databaseUrl: database.url, config, logger, metrics });
}

async function closeServer(server: Server, graceMs: number): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  const timer = setTimeout(() => server.closeAllConnections(), graceMs);
  await closed;
  clearTimeout(timer);
}

/** Unfinished jobs with sealed provider secrets cannot run without the key: refuse to start. */
async function checkSecretsKey(db: Database['db'], config: Config, logger: Logger): Promise<void> {
  if (config.SECRETS_KEY) return;
  const sealed = await countJobsWithSecrets(db);
  if (sealed > 0) {
    throw new Error(
      `invalid configuration: SECRETS_KEY: not set, but ${sealed} unfinished job(s) hold encrypted provider secrets; set the key they were sealed with`,
    );
  }
  logger.info('SECRETS_KEY is not set: jobs with a providerConfig will be refused');
}
