import { sql } from 'drizzle-orm';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../src/db/client.js';
import { createApp } from '../src/http/app.js';
import { EventHub } from '../src/jobs/event-hub.js';
import { createLogger } from '../src/logger.js';
import { CaptionExporter } from '../src/jobs/caption-exporter.js';
import { WorkspaceWatcher } from '../src/jobs/workspace-watcher.js';
import { ItemWriter } from '../src/jobs/item-writer.js';
import { createMetrics } from '../src/metrics.js';
import { buildOpenApiDocument } from '../src/openapi.js';
import { CONFIG, createJob, IMAGES } from './helpers/fixtures.js';
import { api, startTestService, type TestService } from './helpers/service.js';

/** Log lines the service writes, parsed. */
const lines: Record<string, unknown>[] = [];
const sink = new Writable({
  write(chunk, _encoding, done) {
    for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line));
    done();
  },
});

let svc: TestService;
beforeAll(async () => {
  svc = await startTestService({ logger: createLogger('info', sink) });
});
afterAll(async () => svc?.close());

describe('request ids and logs', () => {
  it('echoes the caller’s X-Request-Id and logs one JSON line per request under it', async () => {
    const response = await api(svc.url, 'GET', '/api/perspectives/batch/list', undefined, { 'x-request-id': 'trace-abc.123' });
    expect(response.headers.get('x-request-id')).toBe('trace-abc.123');
    const line = lines.find((l) => l.requestId === 'trace-abc.123' && l.msg === 'request');
    expect(line).toMatchObject({ level: 'info', method: 'GET', path: '/api/perspectives/batch/list', status: 200 });
    expect(typeof line?.durationMs).toBe('number');
  });

  it('makes a new id when none or a malformed one is given, and puts it in problem bodies', async () => {
    const plain = await api(svc.url, 'GET', '/health');
    expect(plain.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const hostile = await api(svc.url, 'GET', '/nowhere', undefined, { 'x-request-id': 'spaces and <tags> are not an id' });
    const id = hostile.headers.get('x-request-id');
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(hostile.status).toBe(404);
    expect(hostile.body).toMatchObject({ status: 404, code: 'NOT_FOUND', requestId: id });
  });

  it('keeps the creating request id on the job', async () => {
    const response = await api(
      svc.url,
      'POST',
      '/api/perspectives/batch/create',
      { type: 'MULTI_PERSPECTIVE', perspectives: ['art_critic'], imagePaths: [IMAGES[0]], config: CONFIG },
      { 'x-request-id': 'create-42' },
    );
    const { rows } = await svc.db.execute<{ request_id: string }>(
      sql`select request_id from job_queue.caption_jobs where job_id = ${response.body.jobId}`,
    );
    expect(rows[0]?.request_id).toBe('create-42');
  });
});

describe('errors', () => {
  it('answers unknown routes with a problem, on REST and outside it', async () => {
    for (const route of ['/api/perspectives/batch/nothing', '/api/nothing', '/nothing']) {
      const response = await api(svc.url, 'GET', route);
      expect(response.status).toBe(404);
      expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(response.body).toMatchObject({ type: 'about:blank', title: 'Not Found', status: 404 });
    }
  });

  it('hides internals of unexpected errors and logs them under the request id', async () => {
    const job = await createJob(svc.url, {});
    // Break the database under the service: the next status read fails inside SQL.
    await svc.db.execute(sql`alter table job_queue.job_items rename to job_items_gone`);
    try {
      const response = await api(svc.url, 'GET', `/api/perspectives/batch/status/${job.jobId}`, undefined, { 'x-request-id': 'boom-1' });
      expect(response.status).toBe(500);
      expect(response.body).toEqual({
        type: 'about:blank',
        title: 'Internal Server Error',
        status: 500,
        detail: 'Internal server error',
        code: 'INTERNAL_SERVER_ERROR',
        instance: `/api/perspectives/batch/status/${job.jobId}`,
        requestId: 'boom-1',
      });
      await expect(svc.trpc.batch.status.query({ jobId: job.jobId })).rejects.toMatchObject({
        message: 'Internal server error',
        data: { code: 'INTERNAL_SERVER_ERROR' },
      });
      const logged = lines.find((l) => l.requestId === 'boom-1' && l.msg === 'procedure failed');
      expect(JSON.stringify(logged)).toMatch(/job_items/);
    } finally {
      await svc.db.execute(sql`alter table job_queue.job_items_gone rename to job_items`);
    }
  });
});

describe('health', () => {
  it('is 200 when the database answers and 503 when it does not', async () => {
    expect((await api(svc.url, 'GET', '/health')).body).toMatchObject({ status: 'ok', database: 'ok' });

    // The same app over a pool that points at a closed port.
    const logger = createLogger('silent');
    const pool = createPool('postgres://nobody:x@127.0.0.1:1/none', 1, logger);
    const app = createApp({
      db: svc.db,
      pool,
      config: svc.config,
      logger,
      openApiDocument: buildOpenApiDocument(),
      metrics: createMetrics({ db: svc.db, pool }),
      events: new EventHub({ db: svc.db, databaseUrl: svc.database.url, logger, pollMs: 1000, maxSubscribers: 10, maxPerOwner: 10 }),
      itemWriter: new ItemWriter({ db: svc.db, logger, pollMs: 1000 }),
      captionExporter: new CaptionExporter({ db: svc.db, root: svc.workspace, mode: 'false', intervalMs: 1000, logger }),
      workspace: new WorkspaceWatcher({ db: svc.db, root: svc.workspace, logger, watch: false, rescanMs: 0 }),
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const { port } = server.address() as { port: number };
      const response = await api(`http://127.0.0.1:${port}`, 'GET', '/health');
      expect(response.status).toBe(503);
      expect(response.body).toMatchObject({ status: 'unavailable', database: 'unavailable' });
    } finally {
      server.close();
      await pool.end();
    }
  });
});
