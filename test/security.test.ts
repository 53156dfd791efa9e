import { realpath, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveInWorkspace } from '../src/workspace/paths.js';
import { CONFIG, createJob, IMAGES, itemIds } from './helpers/fixtures.js';
import { api, startTestService, type TestService } from './helpers/service.js';

const API_TOKEN = 'api-token-0123456789abcdef';
const INTERNAL_TOKEN = 'internal-token-0123456789abcdef';
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

let svc: TestService;
beforeAll(async () => {
  svc = await startTestService({
    env: { API_TOKEN, INTERNAL_TOKEN, METRICS_REQUIRE_TOKEN: 'true', CORS_ORIGINS: 'http://ui.example:32200' },
  });
});
afterAll(async () => svc?.close());

describe('access control with tokens set', () => {
  it('REST: no token 401, wrong token 401, right token 200', async () => {
    const none = await api(svc.url, 'GET', '/api/perspectives/batch/list');
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toBe('Bearer');
    expect(none.body).toMatchObject({ status: 401, code: 'UNAUTHORIZED' });
    expect((await api(svc.url, 'GET', '/api/perspectives/batch/list', undefined, bearer('wrong-token-0123456789'))).status).toBe(401);
    expect((await api(svc.url, 'GET', '/api/perspectives/batch/list', undefined, { authorization: API_TOKEN })).status).toBe(401);
    expect((await api(svc.url, 'GET', '/api/perspectives/batch/list', undefined, bearer(API_TOKEN))).status).toBe(200);
    expect((await api(svc.url, 'GET', '/api/perspectives/batch/list', undefined, bearer(INTERNAL_TOKEN))).status).toBe(200);
  });

  it('tRPC: no token 401, right token 200', async () => {
    const none = await fetch(`${svc.url}/api/trpc/batch.statistics`);
    expect(none.status).toBe(401);
    const ok = await fetch(`${svc.url}/api/trpc/batch.statistics`, { headers: bearer(API_TOKEN) });
    expect(ok.status).toBe(200);
  });

  it('the item-update endpoint refuses the public token and takes the internal one', async () => {
    await expect(createJob(svc.url, {}), 'create without a token is refused').rejects.toThrow(/401/);
    const created = await api(
      svc.url,
      'POST',
      '/api/perspectives/batch/create',
      { type: 'MULTI_PERSPECTIVE', perspectives: ['art_critic'], imagePaths: [IMAGES[0]], config: CONFIG },
      bearer(API_TOKEN),
    );
    expect(created.status).toBe(200);
    const [itemId] = await itemIds(svc.db, created.body.jobId);
    const route = `/api/perspectives/batch/items/${itemId}`;
    const withPublic = await api(svc.url, 'POST', route, { status: 'running' }, bearer(API_TOKEN));
    expect(withPublic.status).toBe(401);
    expect(withPublic.body.detail).toMatch(/internal bearer token/);
    const viaTrpc = await fetch(`${svc.url}/api/trpc/batch.updateItem`, {
      method: 'POST',
      headers: { ...bearer(API_TOKEN), 'content-type': 'application/json' },
      body: JSON.stringify({ itemId, status: 'running' }),
    });
    expect(viaTrpc.status).toBe(401);
    const withInternal = await api(svc.url, 'POST', route, { status: 'running' }, bearer(INTERNAL_TOKEN));
    expect(withInternal.status).toBe(200);
    expect(withInternal.body.status).toBe('running');
  });

  it('/health stays open; /metrics needs a token when configured; /docs stays open by default', async () => {
    expect((await api(svc.url, 'GET', '/health')).status).toBe(200);
    expect((await api(svc.url, 'GET', '/metrics')).status).toBe(401);
    const metrics = await fetch(`${svc.url}/metrics`, { headers: bearer(API_TOKEN) });
    expect(metrics.status).toBe(200);
    expect((await api(svc.url, 'GET', '/openapi.json')).status).toBe(200);
    expect((await fetch(`${svc.url}/docs/`)).status).toBe(200);
  });
});

describe('paths stay inside the workspace', () => {
  it('skips files and folders that are symlinks out of it, and refuses paths that leave it', async () => {
    await symlink('/etc/hostname', path.join(svc.workspace, 'datasets', 'os_img', 'escape.jpg'));
    await symlink(os.tmpdir(), path.join(svc.workspace, 'datasets', 'outside'));
    const sync = await api(svc.url, 'POST', '/api/workspace/sync', undefined, bearer(API_TOKEN));
    expect(sync.status).toBe(200);
    expect(sync.body.datasets.map((d: { name: string }) => d.name)).toEqual(['os_img']);
    const { rows } = await svc.pool.query<{ path: string }>(`select path from core_schema.images where path like '%escape%'`);
    expect(rows).toEqual([]);

    for (const imagePath of ['datasets/os_img/escape.jpg', '../outside.jpg', '/etc/hostname', 'datasets/os_img/../../../etc/hostname']) {
      const refused = await api(
        svc.url,
        'POST',
        '/api/perspectives/batch/create',
        { type: 'MULTI_PERSPECTIVE', perspectives: ['art_critic'], imagePaths: [imagePath], config: CONFIG },
        bearer(API_TOKEN),
      );
      expect(refused.status, imagePath).toBe(400);
      expect(refused.body.errors[0].path).toBe('imagePaths.0');
    }
  });

  it('refuses to resolve a stored path whose file became a symlink out of the workspace', async () => {
    await symlink('/etc/hostname', path.join(svc.workspace, 'datasets', 'os_img', 'swapped.jpg'));
    await expect(resolveInWorkspace(svc.workspace, 'datasets/os_img/swapped.jpg')).rejects.toThrow(/leaves the workspace/);
    await expect(resolveInWorkspace(svc.workspace, IMAGES[0])).resolves.toBe(path.join(await realpath(svc.workspace), IMAGES[0]));
  });
});

describe('headers', () => {
  it('sends security headers and CORS for the configured origin only', async () => {
    const allowed = await fetch(`${svc.url}/health`, { headers: { origin: 'http://ui.example:32200' } });
    expect(allowed.headers.get('access-control-allow-origin')).toBe('http://ui.example:32200');
    expect(allowed.headers.get('x-content-type-options')).toBe('nosniff');
    expect(allowed.headers.get('content-security-policy')).toContain("default-src 'self'");
    expect(allowed.headers.get('x-powered-by')).toBeNull();
    const other = await fetch(`${svc.url}/health`, { headers: { origin: 'http://evil.example' } });
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
    const preflight = await fetch(`${svc.url}/api/perspectives/batch/create`, {
      method: 'OPTIONS',
      headers: { origin: 'http://ui.example:32200', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe('http://ui.example:32200');
  });
});

describe('metrics', () => {
  it('counts requests by route template and status, never by id, and reports queue depth', async () => {
    const created = await api(
      svc.url,
      'POST',
      '/api/perspectives/batch/create',
      { type: 'MULTI_PERSPECTIVE', perspectives: ['art_critic'], imagePaths: IMAGES.slice(0, 3), config: CONFIG },
      bearer(API_TOKEN),
    );
    const jobId = created.body.jobId as string;
    for (let i = 0; i < 3; i++) await api(svc.url, 'GET', `/api/perspectives/batch/status/${jobId}`, undefined, bearer(API_TOKEN));
    await api(svc.url, 'GET', '/api/perspectives/batch/status/00000000-0000-4000-8000-000000000009', undefined, bearer(API_TOKEN));

    const text = await (await fetch(`${svc.url}/metrics`, { headers: bearer(API_TOKEN) })).text();
    expect(text).not.toContain(jobId);
    const value = (line: string) => Number(text.split('\n').find((l) => l.startsWith(line))?.split(' ').at(-1));
    expect(value('graphcap_http_requests_total{method="GET",route="/api/perspectives/batch/status/{jobId}",status="200"}')).toBe(3);
    expect(value('graphcap_http_requests_total{method="GET",route="/api/perspectives/batch/status/{jobId}",status="404"}')).toBe(1);
    expect(value('graphcap_http_request_duration_seconds_count{method="GET",route="/api/perspectives/batch/status/{jobId}"}')).toBe(4);
    const { rows } = await svc.pool.query<{ n: number }>(
      `select coalesce(sum(total_images - processed_images - failed_images - cancelled_images), 0)::int as n
       from job_queue.caption_jobs where not archived`,
    );
    expect(value('graphcap_job_items{status="pending"}') + value('graphcap_job_items{status="running"}')).toBe(rows[0]!.n);
    expect(value('graphcap_jobs{status="pending"}')).toBeGreaterThanOrEqual(1);
    expect(text).toMatch(/graphcap_db_pool_connections\{state="total"\} \d+/);
  });
});
