/**
 * The generated TypeScript client (clients/typescript: openapi-typescript types + openapi-fetch)
 * against the live service over HTTP, with a bearer token as a real deployment would have.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import { createGraphcapClient, type GraphcapClient, type Health, type Job, type Problem, type Provider } from '../../clients/typescript/src/index.js';
import { CONFIG, DATASET, IMAGES } from '../helpers/fixtures.js';
import { startTestService, type TestService } from '../helpers/service.js';

const TOKEN = 'typescript-client-test-token-0123456789';
let svc: TestService;
let api: GraphcapClient;

beforeAll(async () => {
  svc = await startTestService({ env: { API_TOKEN: TOKEN, SECRETS_KEY: '12'.repeat(32) } });
  api = createGraphcapClient(svc.url, { token: TOKEN });
});
afterAll(async () => svc?.close());

describe('the generated TypeScript client', () => {
  let job: Job;

  it('creates a job', async () => {
    const { data, error, response } = await api.POST('/api/perspectives/batch/create', {
      body: {
        type: 'MULTI_PERSPECTIVE',
        perspectives: ['art_critic', 'storytelling'],
        imagePaths: [IMAGES[0], IMAGES[1]],
        config: { ...CONFIG, temperature: 0.5 },
        userId: 'ts-client',
      },
    });
    expect(error).toBeUndefined();
    expect(response.status).toBe(200);
    expectTypeOf(data!).toEqualTypeOf<Job>();
    job = data!;
    expect(job).toMatchObject({ type: 'MULTI_PERSPECTIVE', status: 'pending', totalImages: 4, userId: 'ts-client' });
    expect(job.config).toMatchObject({ provider: CONFIG.provider, temperature: 0.5, hasProviderConfig: false });
  });

  it('reads its status with a page of items', async () => {
    const { data, error } = await api.GET('/api/perspectives/batch/status/{jobId}', {
      params: { path: { jobId: job.jobId }, query: { limit: 3 } },
    });
    expect(error).toBeUndefined();
    expect(data!.job.jobId).toBe(job.jobId);
    expect(data!.items).toMatchObject({ total: 4, page: 1, limit: 3 });
    expect(data!.items.items).toHaveLength(3);
    expect(data!.items.items.every((item) => item.status === 'pending')).toBe(true);
  });

  it('lists jobs with repeated query parameters', async () => {
    const other = await api.POST('/api/perspectives/batch/create', {
      body: { type: 'DATASET_PERSPECTIVE', datasetName: DATASET, perspectives: ['art_critic'], config: CONFIG, userId: 'other' },
    });
    expect(other.error).toBeUndefined();
    const { data, error } = await api.GET('/api/perspectives/batch/list', {
      params: { query: { status: ['pending', 'running'], userId: 'ts-client' } },
    });
    expect(error).toBeUndefined();
    expect(data!.total).toBe(1);
    expect(data!.items.map((j) => j.jobId)).toEqual([job.jobId]);
  });

  it('lists the job’s items filtered by perspective', async () => {
    const { data, error } = await api.GET('/api/perspectives/batch/items/{jobId}/list', {
      params: { path: { jobId: job.jobId }, query: { perspective: 'storytelling' } },
    });
    expect(error).toBeUndefined();
    expect(data!.total).toBe(2);
    expect(data!.items.map((i) => [i.imagePath, i.perspective])).toEqual([
      [IMAGES[0], 'storytelling'],
      [IMAGES[1], 'storytelling'],
    ]);
  });

  it('cancels the job with a body-less POST', async () => {
    const { data, error } = await api.POST('/api/perspectives/batch/cancel/{jobId}', {
      params: { path: { jobId: job.jobId } },
    });
    expect(error).toBeUndefined();
    expect(data!.status).toBe('cancelled');
  });

  it('gets a typed problem for an unknown job (404)', async () => {
    const jobId = randomUUID();
    const { data, error, response } = await api.GET('/api/perspectives/batch/status/{jobId}', {
      params: { path: { jobId } },
    });
    expect(data).toBeUndefined();
    expect(response.status).toBe(404);
    expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expectTypeOf(error!).toEqualTypeOf<Problem>();
    expect(error).toMatchObject({ status: 404, code: 'NOT_FOUND', title: 'Not Found' });
    expect(error!.detail).toContain(jobId);
  });

  it('gets a typed problem naming each failing field (400)', async () => {
    const { data, error, response } = await api.POST('/api/perspectives/batch/create', {
      // Typed input: only values the schema allows compile, so a bad one takes a cast.
      body: { type: 'MULTI_PERSPECTIVE', perspectives: [], imagePaths: [IMAGES[0]], config: { provider: '', model: 'm' } } as never,
    });
    expect(data).toBeUndefined();
    expect(response.status).toBe(400);
    expect(error).toMatchObject({ status: 400, code: 'BAD_REQUEST' });
    expect(error!.errors!.map((e) => e.path).sort()).toEqual(['config.provider', 'perspectives']);
  });

  it('gets a 401 problem without the token', async () => {
    const anonymous = createGraphcapClient(svc.url);
    const { error, response } = await anonymous.GET('/api/perspectives/batch/statistics');
    expect(response.status).toBe(401);
    expect(error).toMatchObject({ status: 401 });
  });

  it('reads /health and /api/health without a token', async () => {
    for (const route of ['/health', '/api/health'] as const) {
      const { data, response } = await createGraphcapClient(svc.url).GET(route);
      expect(response.status).toBe(200);
      expectTypeOf(data!).toEqualTypeOf<Health>();
      expect(data).toMatchObject({ status: 'ok', service: 'graphcap-data-service', database: 'ok', workspace: { state: 'ok' } });
    }
  });

  it('manages providers, whose key it never gets back', async () => {
    const key = 'sk-ts-PLANTED-0123456789';
    const created = await api.POST('/api/providers', {
      body: { name: 'ts-provider', kind: 'openai', environment: 'local', baseUrl: 'http://127.0.0.1:9/v1', apiKey: key, models: [{ name: 'm1' }] },
    });
    expect(created.error).toBeUndefined();
    expectTypeOf(created.data!).toEqualTypeOf<Provider>();
    expect(created.data).toMatchObject({ name: 'ts-provider', hasApiKey: true, models: [{ name: 'm1', isEnabled: true }], source: 'api' });
    const id = created.data!.providerId;
    const changed = await api.PATCH('/api/providers/{providerId}', { params: { path: { providerId: id } }, body: { apiKey: null, isEnabled: false } });
    expect(changed.data).toMatchObject({ hasApiKey: false, isEnabled: false });
    const listed = await api.GET('/api/providers', { params: { query: { isEnabled: false } } });
    expect(listed.data!.items.map((p) => p.name)).toEqual(['ts-provider']);
    expect(JSON.stringify([created.data, changed.data, listed.data])).not.toContain(key);
    const deleted = await api.DELETE('/api/providers/{providerId}', { params: { path: { providerId: id } } });
    expect(deleted.data).toEqual({ deleted: true, providerId: id });
  });
});
