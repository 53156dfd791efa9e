/**
 * The read-only token (API_READ_TOKEN) over real HTTP: it reads (REST GETs, the SSE stream, tRPC
 * queries and the tRPC subscription) and is refused with 403 on every change, on both faces, leaving
 * the rows as they were; the API token does both; GET /api/access reports each caller's capabilities.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';
import { buildOpenApiDocument } from '../src/openapi.js';
import { CONFIG, countRows, IMAGES, itemIds } from './helpers/fixtures.js';
import { jobState } from './helpers/jobs.js';
import { api, startTestService, type TestService } from './helpers/service.js';

const API_TOKEN = 'api-token-0123456789abcdef';
const API_READ_TOKEN = 'read-token-0123456789abcdef';
const INTERNAL_TOKEN = 'internal-token-0123456789abcdef';
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const BATCH = '/api/perspectives/batch';
const NEW_JOB = { type: 'MULTI_PERSPECTIVE', perspectives: ['art_critic'], imagePaths: IMAGES.slice(0, 2), config: CONFIG };

let closed: TestService;
let open: TestService;
beforeAll(async () => {
  // No Inference Bridge: jobs stay pending, so pause and cancel always find them pausable.
  [closed, open] = await Promise.all([
    startTestService({ env: { API_TOKEN, API_READ_TOKEN, INTERNAL_TOKEN } }),
    startTestService(),
  ]);
});
afterAll(async () => {
  await Promise.all([closed?.close(), open?.close()]);
});

/** POSTs a tRPC mutation (JSON body, as httpLink sends it). */
function trpcMutation(base: string, path: string, input: unknown, token: string) {
  return fetch(`${base}/api/trpc/${path}`, {
    method: 'POST',
    headers: { ...bearer(token), 'content-type': 'application/json' },
    body: JSON.stringify(input),
  });
}

/**
 * Opens an event stream and reads it until `until` matches what arrived (or the deadline passes,
 * which fails the test); returns the text and the response.
 */
async function readStream(url: string, headers: Record<string, string>, until: (text: string) => boolean, afterOpen?: () => Promise<unknown>) {
  const controller = new AbortController();
  const deadline = setTimeout(() => controller.abort(), 20_000);
  const response = await fetch(url, { headers, signal: controller.signal });
  let text = '';
  try {
    if (response.status !== 200 || !response.body) return { response, text };
    await afterOpen?.();
    const decoder = new TextDecoder();
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      text += decoder.decode(chunk, { stream: true });
      if (until(text)) break;
    }
  } catch (error) {
    if (!controller.signal.aborted) throw error;
  } finally {
    clearTimeout(deadline);
    controller.abort();
  }
  return { response, text };
}

async function createWithApiToken(): Promise<string> {
  const created = await api(closed.url, 'POST', `${BATCH}/create`, NEW_JOB, bearer(API_TOKEN));
  expect(created.status).toBe(200);
  return created.body.jobId as string;
}

describe('GET /api/access', () => {
  it('reports what no token, the read token, the API token and the internal token allow', async () => {
    const access = async (svc: TestService, token?: string) => {
      const response = await api(svc.url, 'GET', '/api/access', undefined, token ? bearer(token) : {});
      expect(response.status).toBe(200);
      return response.body;
    };
    expect(await access(open)).toEqual({ tokenRequired: false, read: true, write: true });
    expect(await access(closed)).toEqual({ tokenRequired: true, read: false, write: false });
    expect(await access(closed, 'not-a-token-0123456789')).toEqual({ tokenRequired: true, read: false, write: false });
    expect(await access(closed, API_READ_TOKEN)).toEqual({ tokenRequired: true, read: true, write: false });
    expect(await access(closed, API_TOKEN)).toEqual({ tokenRequired: true, read: true, write: true });
    expect(await access(closed, INTERNAL_TOKEN)).toEqual({ tokenRequired: true, read: true, write: true });
  });

  it('is the tRPC query `access` too, open without a token, but a batch naming other procedures is not', async () => {
    const read = await fetch(`${closed.url}/api/trpc/access`, { headers: bearer(API_READ_TOKEN) });
    expect(read.status).toBe(200);
    expect(((await read.json()) as { result: { data: unknown } }).result.data).toEqual({ tokenRequired: true, read: true, write: false });
    const anonymous = await fetch(`${closed.url}/api/trpc/access`);
    expect(anonymous.status).toBe(200);
    expect(((await anonymous.json()) as { result: { data: unknown } }).result.data).toEqual({ tokenRequired: true, read: false, write: false });
    const smuggled = await fetch(`${closed.url}/api/trpc/access,batch.list?batch=1&input=${encodeURIComponent('{}')}`);
    expect(smuggled.status).toBe(401);
  });
});

describe('the read-only token', () => {
  it('reads the REST face and tRPC queries', async () => {
    const jobId = await createWithApiToken();
    const headers = bearer(API_READ_TOKEN);
    const list = await api(closed.url, 'GET', `${BATCH}/list`, undefined, headers);
    expect(list.status).toBe(200);
    expect(list.body.items.map((j: { jobId: string }) => j.jobId)).toContain(jobId);
    expect((await api(closed.url, 'GET', `${BATCH}/status/${jobId}`, undefined, headers)).status).toBe(200);
    expect((await api(closed.url, 'GET', `${BATCH}/items/${jobId}/failed`, undefined, headers)).status).toBe(200);
    expect((await api(closed.url, 'GET', `${BATCH}/statistics`, undefined, headers)).status).toBe(200);
    expect((await api(closed.url, 'GET', '/api/images', undefined, headers)).status).toBe(200);
    // analyze-images is a POST that changes nothing: a read.
    const analyzed = await api(closed.url, 'POST', `${BATCH}/analyze-images`, { datasetName: 'os_img', perspectives: ['art_critic'] }, headers);
    expect(analyzed.status).toBe(200);
    const query = await fetch(`${closed.url}/api/trpc/batch.status?input=${encodeURIComponent(JSON.stringify({ jobId }))}`, { headers });
    expect(query.status).toBe(200);
    expect(((await query.json()) as { result: { data: { job: { jobId: string } } } }).result.data.job.jobId).toBe(jobId);
  });

  it('follows the SSE stream and the tRPC subscription', async () => {
    let jobId = '';
    const sse = await readStream(
      `${closed.url}${BATCH}/events`,
      bearer(API_READ_TOKEN),
      (text) => jobId !== '' && text.includes(jobId),
      async () => (jobId = await createWithApiToken()),
    );
    expect(sse.response.status).toBe(200);
    expect(sse.response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(sse.text).toMatch(new RegExp(`event: JOB_CREATED\\ndata: .*"jobId":"${jobId}"`));

    let second = '';
    const subscription = await readStream(
      `${closed.url}/api/trpc/batch.events`,
      bearer(API_READ_TOKEN),
      (text) => second !== '' && text.includes(second),
      async () => (second = await createWithApiToken()),
    );
    expect(subscription.response.status).toBe(200);
    expect(subscription.response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(subscription.text).toContain(`"jobId":"${second}"`);
    expect(subscription.text).toContain('JOB_CREATED');

    // Without a token, neither stream opens.
    expect((await fetch(`${closed.url}${BATCH}/events`)).status).toBe(401);
    expect((await fetch(`${closed.url}/api/trpc/batch.events`)).status).toBe(401);
  });

  it('gets 403 on create, pause, cancel and other changes (REST), and nothing changes', async () => {
    const jobId = await createWithApiToken();
    const jobsBefore = await countRows(closed.db, 'job_queue.caption_jobs');
    const headers = bearer(API_READ_TOKEN);
    const [itemId] = await itemIds(closed.db, jobId);
    const refused: [string, string, unknown?][] = [
      ['POST', `${BATCH}/create`, NEW_JOB],
      ['POST', `${BATCH}/pause/${jobId}`],
      ['POST', `${BATCH}/cancel/${jobId}`],
      ['POST', `${BATCH}/reorder`, { moves: [{ jobId, position: 1 }] }],
      ['POST', `${BATCH}/retry-failed/${jobId}`],
      ['POST', `${BATCH}/items/${itemId}`, { status: 'running' }],
      ['POST', '/api/workspace/sync'],
      ['POST', '/api/datasets', { name: 'made-by-a-reader' }],
    ];
    for (const [method, route, body] of refused) {
      const response = await api(closed.url, method, route, body, headers);
      expect(response.status, `${method} ${route}`).toBe(403);
      expect(response.headers.get('content-type'), route).toMatch(/^application\/problem\+json/);
      expect(response.body, route).toMatchObject({ status: 403, code: 'FORBIDDEN', detail: expect.stringMatching(/only read/) });
    }
    expect(await countRows(closed.db, 'job_queue.caption_jobs')).toBe(jobsBefore);
    expect((await jobState(closed.db, jobId)).status).toBe('pending');
    const { rows } = await closed.pool.query(`select 1 from core_schema.datasets where name = 'made-by-a-reader'`);
    expect(rows).toEqual([]);
  });

  it('gets FORBIDDEN on create, pause and cancel over tRPC, and nothing changes', async () => {
    const jobId = await createWithApiToken();
    const jobsBefore = await countRows(closed.db, 'job_queue.caption_jobs');
    for (const [path, input] of [
      ['batch.create', NEW_JOB],
      ['batch.pause', { jobId }],
      ['batch.cancel', { jobId }],
    ] as const) {
      const response = await trpcMutation(closed.url, path, input, API_READ_TOKEN);
      expect(response.status, path).toBe(403);
      const body = (await response.json()) as { error: { data: { code: string } } };
      expect(body.error.data.code, path).toBe('FORBIDDEN');
    }
    expect(await countRows(closed.db, 'job_queue.caption_jobs')).toBe(jobsBefore);
    expect((await jobState(closed.db, jobId)).status).toBe('pending');
  });
});

describe('the API token', () => {
  it('reads and changes: create, pause, resume, cancel on REST and tRPC', async () => {
    const jobId = await createWithApiToken();
    const headers = bearer(API_TOKEN);
    expect((await api(closed.url, 'GET', `${BATCH}/status/${jobId}`, undefined, headers)).status).toBe(200);
    const paused = await api(closed.url, 'POST', `${BATCH}/pause/${jobId}`, undefined, headers);
    expect(paused.status).toBe(200);
    expect((await jobState(closed.db, jobId)).status).toBe('paused');
    const resumed = await trpcMutation(closed.url, 'batch.resume', { jobId }, API_TOKEN);
    expect(resumed.status).toBe(200);
    expect((await jobState(closed.db, jobId)).status).toBe('pending');
    const cancelled = await trpcMutation(closed.url, 'batch.cancel', { jobId }, API_TOKEN);
    expect(cancelled.status).toBe(200);
    expect((await jobState(closed.db, jobId)).status).toBe('cancelled');
    const viaTrpc = await trpcMutation(closed.url, 'batch.create', NEW_JOB, API_TOKEN);
    expect(viaTrpc.status).toBe(200);
  });

  it('no token reads nothing and changes nothing', async () => {
    expect((await api(closed.url, 'GET', `${BATCH}/list`)).status).toBe(401);
    expect((await api(closed.url, 'POST', `${BATCH}/create`, NEW_JOB)).status).toBe(401);
  });
});

describe('configuration and the document', () => {
  it('refuses a read token without an API token, or equal to it, naming API_READ_TOKEN without echoing it', () => {
    const refused = (env: Record<string, string>) => {
      try {
        loadConfig(env);
      } catch (error) {
        expect(error).toBeInstanceOf(ConfigError);
        return (error as Error).message;
      }
      throw new Error('loadConfig accepted it');
    };
    expect(refused({ API_READ_TOKEN })).toMatch(/^invalid configuration: API_READ_TOKEN: needs API_TOKEN/);
    expect(refused({ API_READ_TOKEN: API_TOKEN, API_TOKEN })).toMatch(/^invalid configuration: API_READ_TOKEN: must differ/);
    const short = refused({ API_READ_TOKEN: 'short', API_TOKEN });
    expect(short).toMatch(/API_READ_TOKEN: must be at least 16 characters/);
    expect(short).not.toContain('short"');
    expect(loadConfig({ API_READ_TOKEN, API_TOKEN }).API_READ_TOKEN).toBe(API_READ_TOKEN);
  });

  it('documents 403 on every change and on no read, and /api/access as open', () => {
    const doc = buildOpenApiDocument() as unknown as { paths: Record<string, Record<string, { responses: Record<string, unknown> }>> };
    const responses = (method: string, path: string) => Object.keys(doc.paths[path]?.[method]?.responses ?? {});
    for (const [method, path] of [
      ['post', `${BATCH}/create`],
      ['post', `${BATCH}/pause/{jobId}`],
      ['post', `${BATCH}/cancel/{jobId}`],
      ['post', `${BATCH}/reorder`],
      ['post', '/api/workspace/sync'],
      ['delete', '/api/images/{imageId}'],
    ]) {
      expect(responses(method!, path!), `${method} ${path}`).toContain('403');
    }
    for (const [method, path] of [
      ['get', `${BATCH}/list`],
      ['get', `${BATCH}/statistics`],
      ['post', `${BATCH}/analyze-images`],
      ['get', `${BATCH}/events`],
    ]) {
      expect(responses(method!, path!), `${method} ${path}`).not.toContain('403');
    }
    expect(responses('get', '/api/access')).toEqual(['200', '500']);
  });
});
