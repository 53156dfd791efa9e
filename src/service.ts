/**
 * Wires the service: database (embedded or DATABASE_URL, migrated), workspace and providers file
 * import, the Inference Bridge (client, monitor, providers), HTTP server, background workers.
 * `main.ts` runs it as a process; tests start it in-process against their own database.
 */
import type { AddressInfo } from 'node:net';
import { createServer, type Server } from 'node:http';
import path from 'node:path';
import type { Config } from './config.js';
import { openDatabase, type Database } from './db/client.js';
import { countJobsWithSecrets } from './db/jobs.js';
import { createApp } from './http/app.js';
import { answerClientError } from './http/problem.js';
import { BridgeMonitor, withoutCredentials } from './jobs/bridge-monitor.js';
import { CaptionExporter } from './jobs/caption-exporter.js';
import { Dispatcher } from './jobs/dispatcher.js';
import { EventHub } from './jobs/event-hub.js';
import { createInferenceBridge, type InferenceBridge } from './jobs/inference.js';
import { ItemWriter } from './jobs/item-writer.js';
import { Notifier } from './jobs/notifier.js';
import { ProviderPacer } from './jobs/provider-pacer.js';
import { ProviderRegistry } from './jobs/provider-registry.js';
import { Retention } from './jobs/retention.js';
import type { Logger } from './logger.js';
import { createMetrics, type Metrics } from './metrics.js';
import { buildOpenApiDocument } from './openapi.js';
import { importProvidersFile } from './providers-file.js';
import { listSealedSecrets } from './db/sealed.js';
import { canOpen, loadOrCreateKeyFile } from './secrets.js';
import { workspaceState } from './workspace/paths.js';
import { WorkspaceWatcher } from './jobs/workspace-watcher.js';

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

export async function startService(given: Config, logger: Logger): Promise<Service> {
  const database = await openDatabase(given, logger);
  const workspace = new WorkspaceWatcher({
    db: database.db,
    root: given.WORKSPACE_PATH,
    logger,
    watch: given.WORKSPACE_WATCH,
    rescanMs: given.WORKSPACE_RESCAN_SECONDS * 1000,
    limits: { imageMaxBytes: given.WORKSPACE_IMAGE_MAX_BYTES, libraryFileMaxBytes: given.WORKSPACE_LIBRARY_FILE_MAX_BYTES },
  });
  let bridge: InferenceBridge | undefined;
  let monitor: BridgeMonitor | undefined;
  try {
    // After the database: the embedded one's folder is where the local key lives.
    const config = await withLocalSecretsKey(given, logger);
    await checkSecretsKey(database.db, config, logger);
    await importWorkspace(database, config, logger, workspace);
    const providers = new ProviderRegistry(database.db, config.SECRETS_KEY, config.SECRETS_KEY_PREVIOUS);
    const pacer = new ProviderPacer();
    if (config.INFERENCE_BRIDGE_URL) {
      bridge = createInferenceBridge({
        url: config.INFERENCE_BRIDGE_URL,
        timeoutMs: config.BRIDGE_TIMEOUT_MS,
        retryTimeouts: config.BRIDGE_RETRY_TIMEOUTS,
        workspacePath: config.WORKSPACE_PATH,
        bridgeWorkspacePath: config.BRIDGE_WORKSPACE_PATH,
        secretsKey: config.SECRETS_KEY,
        previousSecretsKeys: config.SECRETS_KEY_PREVIOUS,
        providers,
      });
      monitor = new BridgeMonitor({ baseUrl: config.INFERENCE_BRIDGE_URL, db: database.db, logger, intervalMs: config.BRIDGE_CHECK_INTERVAL_MS });
      await monitor.start();
    }
    const metrics = createMetrics({ db: database.db, pool: database.pool, bridge: monitor });
    const events = new EventHub({
      db: database.db,
      databaseUrl: database.url,
      logger,
      pollMs: config.NOTIFIER_POLL_MS,
      maxSubscribers: config.EVENT_SUBSCRIBERS_MAX,
      maxPerOwner: config.EVENT_SUBSCRIBERS_PER_TOKEN,
      onSubscribers: (count) => metrics.eventSubscribers.set(count),
      onDropped: () => metrics.eventSubscribersDropped.inc(),
    });
    await events.start();
    const itemWriter = new ItemWriter({ db: database.db, logger, pollMs: config.POLL_INTERVAL_MS });
    const captionExporter = new CaptionExporter({
      db: database.db,
      root: config.WORKSPACE_PATH,
      // The repository's example workspace stays as committed: auto does not write to it.
      mode: config.WORKSPACE_SOURCE === 'example' && config.WORKSPACE_WRITE_CAPTIONS === 'auto' ? 'false' : config.WORKSPACE_WRITE_CAPTIONS,
      intervalMs: config.CAPTION_EXPORT_INTERVAL_MS,
      logger,
      written: metrics.captionWritebacks,
    });
    const app = createApp({
      db: database.api.db,
      pool: database.api.pool,
      workerPool: database.pool,
      config,
      logger,
      openApiDocument: buildOpenApiDocument(),
      metrics,
      events,
      itemWriter,
      captionExporter,
      workspace,
      bridge: bridge && monitor ? { client: bridge, monitor, providers, pacer } : undefined,
    });
    const server = createServer(app);
    server.on('clientError', answerClientError);
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
    logger.info(
      { url, docs: `${url}/docs`, embeddedDatabase: !config.DATABASE_URL, bridge: config.INFERENCE_BRIDGE_URL && withoutCredentials(config.INFERENCE_BRIDGE_URL) },
      'graphcap Data Service listening',
    );

    itemWriter.start();
    workspace.start();
    await captionExporter.start();
    const dispatcher = bridge && monitor ? startDispatcher(config, database, logger, metrics, { bridge, monitor, providers, pacer }) : undefined;
    if (!config.INFERENCE_BRIDGE_URL) {
      logger.warn('INFERENCE_BRIDGE_URL is not set: the dispatcher is idle and jobs stay queued until a replica with a bridge runs them');
    }
    const notifier = new Notifier({
      db: database.db,
      databaseUrl: database.url,
      config,
      logger,
      onDelivery: (outcome, count = 1) => metrics.eventDeliveries.inc({ outcome }, count),
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
        monitor?.stop();
        await workspace.stop();
        await Promise.all([closeServer(server, graceMs), dispatcher?.stop(graceMs), retention.stop(), itemWriter.stop()]);
        // After the dispatcher: the captions its last rounds stored are written back too.
        await captionExporter.flush().catch((error: unknown) => logger.warn({ err: error }, 'last caption write-back failed'));
        await captionExporter.stop();
        await bridge?.close();
        // Events the last recordings wrote still go out before the database closes.
        await notifier.stop();
        await database.close();
        logger.info('graphcap Data Service stopped');
      })());
    return { url, database, server, close };
  } catch (error) {
    await workspace.stop();
    monitor?.stop();
    await bridge?.close().catch(() => undefined);
    await database.close().catch(() => undefined);
    throw error;
  }
}

/**
 * The workspace at start-up: say which one is used and when it is missing or empty, import it
 * (WORKSPACE_SYNC_ON_START), then the providers file.
 */
async function importWorkspace(database: Database, config: Config, logger: Logger, watcher: WorkspaceWatcher): Promise<void> {
  const workspace = config.WORKSPACE_PATH;
  if (config.WORKSPACE_SOURCE === 'example') {
    logger.info({ workspace }, 'WORKSPACE_PATH is not set and there is no /workspace: serving the example workspace');
  }
  const state = await workspaceState(workspace);
  if (state === 'missing') logger.warn({ workspace }, 'WORKSPACE_PATH does not exist: no datasets or perspectives to import');
  if (state === 'empty') logger.warn({ workspace }, 'the workspace has no datasets/ and no perspective_library/: nothing to import');
  if (config.WORKSPACE_SYNC_ON_START && state !== 'missing') await watcher.sync();
  if (config.PROVIDERS_FILE) {
    await importProvidersFile(database.db, config.PROVIDERS_FILE, { secretsKey: config.SECRETS_KEY, readEnv: config.readEnv, logger });
  }
}

interface BridgeParts {
  bridge: InferenceBridge;
  monitor: BridgeMonitor;
  providers: ProviderRegistry;
  pacer: ProviderPacer;
}

/** The dispatcher, unless this replica is API-only. */
function startDispatcher(config: Config, database: Database, logger: Logger, metrics: Metrics, parts: BridgeParts): Dispatcher | undefined {
  if (!config.DISPATCHER_ENABLED) {
    logger.info('dispatcher disabled (DISPATCHER_ENABLED=false): this replica serves the API only');
    return undefined;
  }
  return new Dispatcher({
    db: database.db,
    pool: database.pool,
    databaseUrl: database.url,
    config,
    logger,
    metrics,
    bridge: parts.bridge,
    providers: parts.providers,
    pacer: parts.pacer,
    bridgeState: () => parts.monitor.state,
    onMissingRoute: (detail) => parts.monitor.reportMissingRoute(detail),
  });
}

/**
 * Without SECRETS_KEY, a service on its embedded database keeps a key of its own in the data folder
 * (made once the database is initialised), so provider keys can be stored on a fresh clone and the
 * key goes wherever the data it opens goes, and nowhere else (beside the folder, two data folders in
 * one parent, e.g. /tmp, shared one key). With DATABASE_URL the key must be given: replicas must
 * share it.
 */
async function withLocalSecretsKey(config: Config, logger: Logger): Promise<Config> {
  if (config.SECRETS_KEY || config.DATABASE_URL) return config;
  const file = path.join(config.EMBEDDED_PG_DATA, 'graphcap-secrets.key');
  const key = await loadOrCreateKeyFile(file);
  logger.info({ file }, 'SECRETS_KEY is not set: provider keys are sealed with the local key of the embedded database');
  return Object.freeze({ ...config, SECRETS_KEY: key });
}

async function closeServer(server: Server, graceMs: number): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  const timer = setTimeout(() => server.closeAllConnections(), graceMs);
  await closed;
  clearTimeout(timer);
}

/**
 * Unfinished jobs with sealed provider secrets cannot run without the key: refuse to start. With a
 * key, say which stored secrets it cannot open (sealed under a key this replica lacks: their items
 * go back for another replica, and set SECRETS_KEY_PREVIOUS).
 */
async function checkSecretsKey(db: Database['db'], config: Config, logger: Logger): Promise<void> {
  if (config.SECRETS_KEY) {
    const locked = (await listSealedSecrets(db)).filter((s) => !canOpen(s.value, config.SECRETS_KEY, config.SECRETS_KEY_PREVIOUS));
    if (locked.length > 0) {
      const count = (kind: string) => locked.filter((s) => s.kind === kind).length;
      logger.error(
        { providers: count('provider'), jobs: count('job'), keyIds: [...new Set(locked.map((s) => s.value.kid))] },
        'secrets sealed with a key this replica does not have: their calls wait for a replica that has it; give the key in SECRETS_KEY_PREVIOUS, then npm run secrets:reseal',
      );
    }
    return;
  }
  const sealed = await countJobsWithSecrets(db);
  if (sealed > 0) {
    throw new Error(
      `invalid configuration: SECRETS_KEY: not set, but ${sealed} unfinished job(s) hold encrypted provider secrets; set the key they were sealed with`,
    );
  }
  logger.info('SECRETS_KEY is not set: jobs with a providerConfig will be refused');
}
