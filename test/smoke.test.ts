import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startTestService, type TestService } from './helpers/service.js';

let svc: TestService;
beforeAll(async () => {
  svc = await startTestService();
});
afterAll(async () => svc?.close());

describe('smoke', () => {
  it('answers health and creates a job', async () => {
    expect((await api(svc.url, 'GET', '/health')).status).toBe(200);
    const created = await api(svc.url, 'POST', '/api/perspectives/batch/create', {
      type: 'DATASET_PERSPECTIVE',
      perspectives: ['art_critic'],
      datasetName: 'os_img',
      config: { provider: 'gemini', model: 'm' },
    });
    expect(created.status).toBe(200);
    expect(created.body.totalImages).toBe(7);
    const viaTrpc = await svc.trpc.batch.status.query({ jobId: created.body.jobId });
    expect(viaTrpc.items.total).toBe(7);
  });
});
