/**
 * The HTTP app: request ids and access logs, /health, the OpenAPI document and Swagger UI, tRPC at
 * /api/trpc, the REST face at /api, and problem details for every error.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { createExpressMiddleware } from '@trpc/server/adapters/express';
import cors from 'cors';
import express, { type NextFunction, type Request, type Response } from 'express';
import helmet from 'helmet';
import type pg from 'pg';
import swaggerUi from 'swagger-ui-express';
import { createOpenApiNodeHttpHandler, type OpenAPIObject } from 'trpc-to-openapi';
import { SERVICE_VERSION, type Config } from '../config.js';
import type { Db } from '../db/client.js';
import { requestContext, type Logger } from '../logger.js';
import { routeLabeller, type Metrics } from '../metrics.js';
import { appRouter } from '../routers/index.js';
import { createCallerFactory, type BridgeContext, type Context } from '../trpc.js';
import type { EventHub } from '../jobs/event-hub.js';
import type { CaptionExporter } from '../jobs/caption-exporter.js';
import type { ItemWriter } from '../jobs/item-writer.js';
import type { WorkspaceWatcher } from '../jobs/workspace-watcher.js';
import { workspaceState } from '../workspace/paths.js';
import { apiClosed, apiGate, requireToken, scopeOf } from './auth.js';
import { boardRoute } from './board.js';
import { dataEventsRoute, jobEventsRoute } from './events.js';
import { hostCheck } from './host-check.js';
import { refuseDeepJson } from './json-depth.js';
import { methodNotAllowed } from './method-not-allowed.js';
import { conditionalGet } from './etag.js';
import { restQueries } from './rest-queries.js';
import { problem, problemResponses, sendProblem } from './problem.js';

export interface AppDeps {
  db: Db;
  /** The API's own pool (src/db/client.ts). */
  pool: pg.Pool;
  /** The background work's pool: /health pings through it and reports both. */
  workerPool?: pg.Pool;
  config: Config;
  logger: Logger;
  openApiDocument: OpenAPIObject;
  metrics: Metrics;
  events: EventHub;
  itemWriter: ItemWriter;
  /** Writes captions back to graphcap's captions.jsonl files. */
  captionExporter: CaptionExporter;
  /** The workspace's imports, one at a time, and its watcher. */
  workspace: WorkspaceWatcher;
  /** The Inference Bridge (client, monitor, providers), when INFERENCE_BRIDGE_URL is set. */
  bridge?: BridgeContext;
}

declare module 'express-serve-static-core' {
  interface Request {
    requestId: string;
  }
}

const REQUEST_ID = /^[\w.:@/+=-]{1,128}$/;
const HEALTH_TIMEOUT_MS = 2_000;

/** The most calls one tRPC batch request may carry (a 400 beyond); clients set httpBatchLink's maxItems to it. */
export const MAX_TRPC_BATCH = 50;

export function createApp(deps: AppDeps): express.Express {
  const { config, logger } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  const routeOf = routeLabeller(Object.keys(deps.openApiDocument.paths ?? {}), Object.keys(appRouter._def.procedures));
  app.use(requestIdAndAccessLog(logger, deps.metrics, routeOf));
  app.use(hostCheck(config));
  // Swagger UI needs its inline init script and styles; everything else gets helmet's defaults.
  app.use(
    helmet({
      contentSecurityPolicy: {
        directives: {
          'script-src': ["'self'", "'unsafe-inline'"],
          'style-src': ["'self'", "'unsafe-inline'"],
          // Served over plain HTTP on a LAN or loopback: upgrading would break every asset.
          'upgrade-insecure-requests': null,
        },
      },
    }),
  );
  if (config.CORS_ORIGINS.length > 0) {
    app.use(cors({ origin: config.CORS_ORIGINS, exposedHeaders: ['X-Request-Id', 'ETag'], maxAge: 600 }));
  }

  // Open to all, like graphcap's: /health for orchestrators, /api/health where graphcap studio looks.
  const health = async (_req: Request, res: Response) => {
    const report = await healthReport(deps);
    res.status(report.database === 'ok' ? 200 : 503).json(report);
  };
  app.get('/health', health);
  app.get('/api/health', health);

  app.get('/metrics', requireToken(config, (c) => c.METRICS_REQUIRE_TOKEN && apiClosed(c)), async (_req, res) => {
    res.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });

  const docsGate = requireToken(config, (c) => c.DOCS_REQUIRE_TOKEN && apiClosed(c));
  app.get('/openapi.json', docsGate, (_req, res) => {
    res.json(deps.openApiDocument);
  });
  // Swagger UI from swagger-ui-dist's local files: nothing is fetched from a CDN.
  app.use(
    '/docs',
    docsGate,
    swaggerUi.serve,
    swaggerUi.setup(deps.openApiDocument, {
      customSiteTitle: 'graphcap Data Service API',
      swaggerOptions: { validatorUrl: null, displayRequestDuration: true, tryItOutEnabled: false },
    }),
  );
  // The live queue board: a static page over the public API (src/http/board.ts).
  app.use('/board', boardRoute());

  const createContext = ({ req }: { req: IncomingMessage }): Context => ({
    db: deps.db,
    config,
    logger,
    requestId: (req as Request).requestId,
    scope: scopeOf(req as Request, config),
    events: deps.events,
    itemWriter: deps.itemWriter,
    captionExporter: deps.captionExporter,
    workspace: deps.workspace,
    bridge: deps.bridge,
  });
  const onError = ({ error, path }: { error: { code: string; cause?: unknown }; path?: string }) => {
    if (error.code === 'INTERNAL_SERVER_ERROR') logger.error({ err: error.cause ?? error, path }, 'procedure failed');
  };

  app.use('/api', apiGate(config));
  app.use(
    '/api/trpc',
    createExpressMiddleware({
      router: appRouter,
      createContext,
      onError,
      maxBodySize: config.BODY_LIMIT_BYTES,
      // A batch runs its calls at once: unbounded, one request could start thousands.
      maxBatchSize: MAX_TRPC_BATCH,
    }),
  );

  const rest = createOpenApiNodeHttpHandler({
    router: appRouter,
    createContext,
    onError,
    maxBodySize: config.BODY_LIMIT_BYTES,
  });
  // Server-sent events: a plain route, since tRPC subscriptions have no OpenAPI face.
  app.get('/api/perspectives/batch/events', jobEventsRoute(deps.events, config));
  app.get('/api/events', dataEventsRoute(deps.events, config));

  // Mounted at the root, not at /api, because the handler matches on the full req.url; it calls
  // next() for paths it does not know, which then get the 404 below.
  app.use(
    defaultJsonContentType,
    express.json({ limit: config.BODY_LIMIT_BYTES, strict: false }),
    refuseDeepJson,
    problemResponses,
    // ETag, Cache-Control and 304 for GETs (src/http/etag.ts).
    conditionalGet,
    // Successful GETs of queries skip trpc-to-openapi's per-request set-up (src/http/rest-queries.ts);
    // everything else, errors included, is its handler's.
    restQueries({
      router: appRouter,
      createCaller: createCallerFactory(appRouter) as never,
      createContext,
      fallback: (req: Request, res: Response, next: NextFunction) => void rest(req, res, next),
    }),
  );

  app.use(methodNotAllowed(deps.openApiDocument.paths ?? {}));
  app.use((req: Request, res: Response) => {
    sendProblem(res, problem(404, `no route for ${req.method} ${req.path}`, { instance: req.path }));
  });
  app.use((error: unknown, req: Request, res: Response, _next: NextFunction) => {
    const status = httpStatusOf(error);
    if (status >= 500) logger.error({ err: error }, 'request failed');
    const detail =
      status === 413
        ? `request body larger than ${config.BODY_LIMIT_BYTES} bytes`
        : status === 400
          ? 'request body is not valid JSON'
          : status < 500
            ? ((error as Error).message ?? 'bad request')
            : 'Internal server error';
    if (res.headersSent) return;
    sendProblem(res, problem(status, detail, { instance: req.path }));
  });

  return app;
}

/** Gives each request an id (the caller's X-Request-Id when sane), echoes it, and logs one line. */
function requestIdAndAccessLog(logger: Logger, metrics: Metrics, routeOf: (path: string) => string) {
  return (req: Request, res: Response, next: NextFunction) => {
    const given = req.get('x-request-id');
    const requestId = given && REQUEST_ID.test(given) ? given : randomUUID();
    req.requestId = requestId;
    res.setHeader('X-Request-Id', requestId);
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
      const path = req.originalUrl.split('?')[0]!;
      const route = routeOf(path);
      metrics.httpRequests.inc({ method: req.method, route, status: String(res.statusCode) });
      metrics.httpDuration.observe({ method: req.method, route }, durationMs / 1000);
      const line = {
        requestId,
        method: req.method,
        path,
        route,
        status: res.statusCode,
        durationMs: Math.round(durationMs * 100) / 100,
      };
      if (res.statusCode >= 500) logger.error(line, 'request');
      else logger.info(line, 'request');
    });
    requestContext.run({ requestId }, () => next());
  };
}

/**
 * A POST with no body and no Content-Type (cancel, archive ... whose only input is the path) would
 * be refused with 415 by trpc-to-openapi: treat it as an empty JSON body.
 */
function defaultJsonContentType(req: Request, _res: Response, next: NextFunction): void {
  const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
  if (!req.headers['content-type'] && !hasBody) req.headers['content-type'] = 'application/json';
  next();
}

function httpStatusOf(error: unknown): number {
  const status = (error as { status?: unknown; statusCode?: unknown })?.status ?? (error as { statusCode?: unknown })?.statusCode;
  return typeof status === 'number' && status >= 400 && status < 600 ? status : 500;
}

/**
 * graphcap's health answer (status, service, version, timestamp) with what this service depends
 * on: the database (503 without it), the Inference Bridge and the workspace, whose troubles are
 * `warnings` (the API works without them).
 */
async function healthReport(deps: AppDeps) {
  // Through the background pool: a saturated API pool is reported, not taken for a database outage.
  const [database, workspace] = await Promise.all([pingDatabase(deps.workerPool ?? deps.pool), workspaceState(deps.config.WORKSPACE_PATH)]);
  const pools = { api: poolState(deps.pool), workers: poolState(deps.workerPool ?? deps.pool) };
  const bridge = deps.bridge?.monitor.snapshot() ?? null;
  const warnings: string[] = [];
  if (workspace === 'missing') warnings.push(`the workspace ${deps.config.WORKSPACE_PATH} does not exist (WORKSPACE_PATH)`);
  if (workspace === 'empty') warnings.push(`the workspace ${deps.config.WORKSPACE_PATH} has no datasets and no perspectives`);
  if (!bridge) warnings.push('INFERENCE_BRIDGE_URL is not set: no job runs');
  else if (bridge.state === 'unreachable' || bridge.state === 'incompatible') warnings.push(`the Inference Bridge is ${bridge.state}: ${bridge.detail}`);
  if (pools.api.waiting > 0) {
    warnings.push(`every API database connection is in use (${pools.api.waiting} requests waiting): raise API_POOL_SIZE, or look for slow queries`);
  }
  if (bridge && bridge.unknownPerspectives.length > 0) {
    warnings.push(`the Inference Bridge does not know ${bridge.unknownPerspectives.join(', ')} (restart it to load new perspectives)`);
  }
  return {
    status: database === 'ok' ? 'ok' : 'unavailable',
    service: 'graphcap-data-service',
    version: SERVICE_VERSION,
    timestamp: new Date().toISOString(),
    database,
    pools,
    bridge,
    workspace: { path: deps.config.WORKSPACE_PATH, state: workspace },
    warnings,
    uptimeSeconds: Math.round(process.uptime()),
  };
}

function poolState(pool: pg.Pool) {
  return { size: pool.options.max ?? 10, inUse: pool.totalCount - pool.idleCount, waiting: pool.waitingCount };
}

async function pingDatabase(pool: pg.Pool): Promise<'ok' | 'unavailable'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'unavailable'>((resolve) => {
    timer = setTimeout(() => resolve('unavailable'), HEALTH_TIMEOUT_MS);
  });
  const ping = pool.query('select 1').then(
    () => 'ok' as const,
    () => 'unavailable' as const,
  );
  try {
    return await Promise.race([ping, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
