/**
 * The short road for successful REST GETs (src/http/rest-queries.ts) answers exactly as
 * trpc-to-openapi's handler does: two bare express apps over the same router and database, one
 * with the library's handler alone and one with the short road in front of it, get the same
 * requests and must give the same status, content type and body.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type NextFunction, type Request, type Response } from 'express';
import { createOpenApiNodeHttpHandler } from 'trpc-to-openapi';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scopeOf } from '../src/http/auth.js';
import { createLogger } from '../src/logger.js';
import { restQueries } from '../src/http/rest-queries.js';
import { appRouter } from '../src/routers/index.js';
import { createCallerFactory, type Context } from '../src/trpc.js';
import { createJob, finishItem, IMAGES, itemIds } from './helpers/fixtures.js';
import { getOk } from './helpers/data.js';
import { startTestService, type TestService } from './helpers/service.js';

let svc: TestService;
const servers: Server[] = [];
let library: string;
let shortRoad: string;
/** Routes the short road left to the library. */
const fellBack = new Set<string>();

async function listen(app: express.Express): Promise<string> {
  const server = createServer(app);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

beforeAll(async () => {
  svc = await startTestService();
  const createContext = ({ req }: { req: unknown }): Context => ({
    db: svc.db,
    config: svc.config,
    logger: createLogger('silent'),
    requestId: 'test',
    scope: scopeOf(req as Request, svc.config),
    events: undefined as never,
    itemWriter: undefined as never,
    captionExporter: undefined as never,
    workspace: undefined as never,
  });
  const handler = createOpenApiNodeHttpHandler({ router: appRouter, createContext });
  const rest = (req: Request, res: Response, next: NextFunction) => void handler(req, res, next);
  library = await listen(express().use(rest));
  const createCaller = createCallerFactory(appRouter);
  const road = restQueries({
    router: appRouter,
    createCaller: createCaller as never,
    createContext,
    fallback: (req, res, next) => {
      fellBack.add(req.originalUrl);
      return rest(req, res, next);
    },
  });
  shortRoad = await listen(express().use((req: Request, res: Response, next: NextFunction) => void road(req, res, next)));
  // A few jobs in the states a list shows (none running: a running job's ETA moves with the clock).
  await createJob(svc.url, {});
  const done = await createJob(svc.url, { imagePaths: [IMAGES[2]] });
  await finishItem(svc.url, (await itemIds(svc.db, done.jobId))[0]!, 'completed');
});

afterAll(async () => {
  for (const s of servers) await new Promise((resolve) => s.close(resolve));
  await svc?.close();
});

async function answer(base: string, route: string) {
  const response = await fetch(`${base}${route}`);
  let body = await response.text();
  // The statistics' clock-dependent figures move between the two calls.
  if (route.includes('/statistics') && response.ok) {
    const { generatedAt: _t, oldestPendingJobAgeSeconds: _age, ...rest } = JSON.parse(body);
    body = JSON.stringify(rest);
  }
  return { status: response.status, type: response.headers.get('content-type'), body };
}

describe('REST GETs on the short road', () => {
  it('answer as trpc-to-openapi does, successes and failures', async () => {
    const job = (await getOk(svc.url, '/api/perspectives/batch/list')).items[0];
    const image = (await getOk(svc.url, '/api/images')).items[0];
    const dataset = (await getOk(svc.url, '/api/datasets')).items[0];
    const perspective = (await getOk(svc.url, '/api/perspectives')).items[0];
    const routes = [
      '/api/perspectives/batch/list',
      '/api/perspectives/batch/list/',
      '/api/perspectives/batch/list?status=pending',
      '/api/perspectives/batch/list?status=pending&status=completed&sort=createdAt&order=desc&limit=1&page=2',
      '/api/perspectives/batch/list?archived=false&unknown=1&status=',
      '/api/perspectives/batch/list?limit=abc',
      '/api/perspectives/batch/list?status=nope',
      `/api/perspectives/batch/status/${job.jobId}`,
      `/api/perspectives/batch/status/${job.jobId}?itemStatus=pending&limit=1`,
      `/API/perspectives/batch/STATUS/${job.jobId}`,
      '/api/perspectives/batch/status/00000000-0000-4000-8000-000000000000',
      '/api/perspectives/batch/status/not-a-uuid',
      `/api/perspectives/batch/items/${job.jobId}/list?status=pending&perspective=art_critic`,
      `/api/perspectives/batch/items/${job.jobId}/failed`,
      '/api/perspectives/batch/statistics?windowMinutes=5',
      '/api/perspectives/batch/statistics?windowMinutes=0',
      '/api/images?sort=sizeBytes&order=desc&format=jpg&format=webp',
      `/api/images/${image.imageId}`,
      `/api/images/${image.imageId}/latest-captions`,
      '/api/datasets?nameContains=os',
      `/api/datasets/${dataset.datasetId}/images?limit=2`,
      `/api/perspectives?enabled=true&tag=${encodeURIComponent(perspective.tags[0] ?? 'x')}`,
      `/api/perspectives/${perspective.perspectiveId}/versions`,
      `/api/perspectives/${perspective.perspectiveId}/versions/1`,
      '/api/captions?limit=3',
      '/api/access',
      // Paths URL parsing rewrites, and unknown ones: the library's, whatever they are.
      '/api/perspectives/batch/../batch/list',
      '/api/perspectives/batch/list%2F',
      '/api/nothing/here',
    ];
    let short = 0;
    for (const route of routes) {
      const expected = await answer(library, route);
      expect(await answer(shortRoad, route), route).toEqual(expected);
      // Successes on plain paths take the short road; the rest is the library's.
      if (expected.status === 200 && /^[\w\-/]*(\?|$)/.test(route)) {
        expect(fellBack.has(route), route).toBe(false);
        short += 1;
      }
    }
    expect(short).toBeGreaterThan(15);
  });
});
