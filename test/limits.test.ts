/**
 * Answers stay small whatever the question: a body of 100,000 bad elements gets a few KB that name
 * the first errors and count the rest, on both faces; a tRPC batch has a size limit; a path too
 * long for Node's parser gets a problem document, not a bare status line; a body nested too deep and a
 * year-0000 time are 400s, not 500s.
 */
import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_TRPC_BATCH } from '../src/http/app.js';
import { waitFor } from './helpers/jobs.js';
import { api, startTestService, type TestService } from './helpers/service.js';

let svc: TestService;
beforeAll(async () => {
  svc = await startTestService();
});
afterAll(async () => svc?.close());

const BAD = 100_000;

describe('answers bounded by the service, not by the input', () => {
  it('a body of 100,000 bad elements is answered in a few KB, naming 20 and counting all, on REST and tRPC', async () => {
    const body = { name: 'many', imageIds: Array.from({ length: BAD }, () => 'x') };
    const rest = await fetch(`${svc.url}/api/datasets`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const restText = await rest.text();
    expect(rest.status).toBe(400);
    expect(restText.length).toBeLessThan(8_000);
    const problem = JSON.parse(restText);
    expect(problem.errorCount).toBe(BAD);
    expect(problem.errors).toHaveLength(20);
    expect(problem.errors[0]).toEqual({ path: 'imageIds.0', message: expect.stringContaining('UUID') });
    expect(problem.detail).toMatch(/^Input validation failed: imageIds\.0: .*; and 99,?995 more$/);

    const trpc = await fetch(`${svc.url}/api/trpc/datasets.create`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const trpcText = await trpc.text();
    expect(trpc.status).toBe(400);
    expect(trpcText.length).toBeLessThan(8_000);
    const { error } = JSON.parse(trpcText);
    expect(error.data).toMatchObject({ code: 'BAD_REQUEST', errorCount: BAD });
    expect(error.data.errors).toHaveLength(20);
    expect(error.message).toBe(problem.detail);
    // Past the array's limit, its length is the one error: the elements are not looked at.
    const over = await api(svc.url, 'POST', '/api/datasets', { name: 'many', imageIds: Array.from({ length: 100_001 }, () => 'x') });
    expect(over.status).toBe(400);
    expect(over.body).toMatchObject({ errorCount: 1, errors: [{ path: 'imageIds', message: expect.stringContaining('100000') }] });
    // Nothing was made of it.
    expect((await api(svc.url, 'GET', '/api/datasets?name=many')).body.items).toEqual([]);
  });

  it(`a tRPC batch of more than ${MAX_TRPC_BATCH} calls is refused; one of ${MAX_TRPC_BATCH} runs`, async () => {
    const batch = (n: number) =>
      fetch(`${svc.url}/api/trpc/${Array(n).fill('access').join(',')}?batch=1&input=${encodeURIComponent(JSON.stringify({}))}`);
    const ok = await batch(MAX_TRPC_BATCH);
    expect(ok.status).toBe(200);
    expect(await ok.json()).toHaveLength(MAX_TRPC_BATCH);
    const tooMany = await batch(MAX_TRPC_BATCH + 1);
    expect(tooMany.status).toBe(400);
    const answer = JSON.stringify(await tooMany.json());
    expect(answer).toContain('BAD_REQUEST');
    expect(answer.length).toBeLessThan(2_000);
  });

  it('a body nested 10,000 levels deep is a 400 on every face, never a stack overflow', async () => {
    const deep = `{"name":"deep","description":${'['.repeat(10_000)}${']'.repeat(10_000)}}`;
    const post = (route: string) => fetch(`${svc.url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: deep });
    const rest = await post('/api/datasets');
    expect(rest.status).toBe(400);
    expect(((await rest.json()) as { detail: string }).detail).toBe('The request body is nested deeper than 64 levels');
    const created = await post('/api/perspectives/batch/create');
    expect(created.status).toBe(400);
    const trpc = await post('/api/trpc/datasets.create');
    expect(trpc.status).toBe(400);
    expect((await api(svc.url, 'GET', '/api/datasets?name=deep')).body.items).toEqual([]);
  });

  it.each([
    ['/api/captions?createdFrom=0000-01-01T00:00:00Z', 'createdFrom'],
    ['/api/perspectives/batch/list?createdTo=0000-12-31T23:59:59Z', 'createdTo'],
  ])('%s: a year-0000 time is a 400 naming the field, not a database error', async (route, field) => {
    const answer = await api(svc.url, 'GET', route);
    expect(answer.status, JSON.stringify(answer.body)).toBe(400);
    expect(answer.body.errors).toEqual([{ path: field, message: 'must be a time from the year 0001 on' }]);
    expect((await api(svc.url, 'GET', route.replace('0000-', '0001-'))).status).toBe(200);
  });

  it('a path parameter of 100 KB gets a 431 problem document', async () => {
    const { port } = new URL(svc.url);
    const raw = await new Promise<string>((resolve) => {
      const socket = net.connect(Number(port), '127.0.0.1');
      let text = '';
      socket.on('data', (chunk) => (text += String(chunk)));
      // The server may close before it read all we sent: a reset then is fine, the answer is in.
      socket.on('error', () => {});
      socket.on('close', () => resolve(text));
      socket.write(`GET /api/images/${'a'.repeat(100_000)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    });
    const [head, body] = raw.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 431 /);
    expect(head).toContain('Content-Type: application/problem+json');
    expect(JSON.parse(body!)).toMatchObject({ status: 431, code: 'BAD_REQUEST', detail: expect.stringContaining('16 KB') });
    // The service is fine.
    expect((await api(svc.url, 'GET', '/health')).status).toBe(200);
  });

  it('live event subscribers are capped per token and in all: 429 beyond, on SSE and tRPC', async () => {
    const capped = await startTestService({
      env: { API_TOKEN: 'a'.repeat(32), API_READ_TOKEN: 'r'.repeat(32), EVENT_SUBSCRIBERS_MAX: '3', EVENT_SUBSCRIBERS_PER_TOKEN: '2' },
    });
    const streams: AbortController[] = [];
    try {
      const open = async (token: string, route = '/api/events') => {
        const controller = new AbortController();
        const response = await fetch(`${capped.url}${route}`, { headers: { authorization: `Bearer ${token}` }, signal: controller.signal });
        if (response.status === 200) streams.push(controller);
        return response;
      };
      const read = 'r'.repeat(32);
      const write = 'a'.repeat(32);
      expect((await open(read)).status).toBe(200);
      expect((await open(read, '/api/perspectives/batch/events')).status).toBe(200);
      const perToken = await open(read);
      expect(perToken.status).toBe(429);
      expect(perToken.headers.get('retry-after')).toBe('10');
      expect(((await perToken.json()) as { detail: string }).detail).toBe('this token follows 2 event streams already; close one first');
      expect((await open(write)).status).toBe(200);
      const inAll = await open(write);
      expect(inAll.status).toBe(429);
      expect(((await inAll.json()) as { detail: string }).detail).toBe('this service follows 3 event streams already; try again later');
      // The tRPC subscription is refused the same way, as TOO_MANY_REQUESTS.
      const aborter = new AbortController();
      const trpc = await fetch(`${capped.url}/api/trpc/events.data?input=${encodeURIComponent('{}')}`, {
        headers: { authorization: `Bearer ${write}`, accept: 'text/event-stream' },
        signal: aborter.signal,
      });
      let text = '';
      for await (const chunk of trpc.body as unknown as AsyncIterable<Uint8Array>) {
        text += Buffer.from(chunk).toString();
        if (text.includes('TOO_MANY_REQUESTS')) break;
      }
      aborter.abort();
      expect(text).toContain('TOO_MANY_REQUESTS');
      // A closed stream frees its place.
      streams.shift()!.abort();
      await waitFor('the place to be free', async () => {
        const again = await open(read);
        if (again.status !== 200) await again.body?.cancel();
        return again.status === 200;
      });
    } finally {
      for (const s of streams) s.abort();
      await capped.close();
    }
  });

  it('without a token, only requests naming a local host are answered (DNS rebinding); /health answers any', async () => {
    const asHost = (host: string, route = '/api/datasets') =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const { port } = new URL(svc.url);
        const req = http.request({ host: '127.0.0.1', port, path: route, headers: { host } }, (res) => {
          let body = '';
          res.on('data', (c) => (body += String(c)));
          res.on('end', () => resolve({ status: res.statusCode!, body }));
        });
        req.on('error', reject);
        req.end();
      });
    const rebound = await asHost('attacker.example:32550');
    expect(rebound.status).toBe(421);
    expect(JSON.parse(rebound.body)).toMatchObject({ status: 421, detail: expect.stringContaining('"attacker.example"') });
    expect((await asHost('attacker.example', '/health')).status).toBe(200);
    for (const host of ['localhost:1', '127.0.0.1', '[::1]:32550']) expect((await asHost(host)).status, host).toBe(200);
  });

  it.each(['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x'])(
    'a cross-site simple request (%s) changes nothing on either face',
    async (contentType) => {
      for (const route of ['/api/datasets', '/api/trpc/datasets.create']) {
        const answer = await fetch(`${svc.url}${route}`, { method: 'POST', headers: { 'content-type': contentType }, body: JSON.stringify({ name: 'cross-site' }) });
        expect([400, 415], `${route} ${contentType}`).toContain(answer.status);
      }
      expect((await api(svc.url, 'GET', '/api/datasets?name=cross-site')).body.items).toEqual([]);
    },
  );
});
