/**
 * The job list and a job's status are not validated again on their way out in production
 * (unvalidatedInProduction in src/routers/batch.schemas.ts): here, where they are, validation must
 * return exactly what toJob and toItem built, for jobs and items in every state.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listItems } from '../../src/db/items.js';
import { getJob, listJobs } from '../../src/db/jobs.js';
import { jobPage, jobStatusOutput, toItem, toJob } from '../../src/routers/batch.schemas.js';
import { CONFIG, createJob, finishItem, IMAGES, inlineProvider, itemIds } from '../helpers/fixtures.js';
import { api, startTestService, type TestService } from '../helpers/service.js';

let svc: TestService;
beforeAll(async () => {
  svc = await startTestService({ env: { SECRETS_KEY: '22'.repeat(32) } });
});
afterAll(async () => svc?.close());

const B = '/api/perspectives/batch';
const post = (route: string, body?: unknown) => api(svc.url, 'POST', `${B}${route}`, body);

describe('list and status outputs', () => {
  it('are what output validation returns, for jobs and items in every state', async () => {
    // Pending, with every config field and a provider secret.
    await createJob(svc.url, {
      config: { ...CONFIG, maxTokens: 100, temperature: 0.5, topP: 0.9, repetitionPenalty: 1.1, globalContext: 'g', context: ['c'], resizeResolution: '512', providerConfig: inlineProvider('k') },
      userId: 'someone',
      idempotencyKey: 'outputs-1',
    });
    // Running, with a finished item (throughput and ETA), a failed one and one in flight.
    const running = await createJob(svc.url, { imagePaths: IMAGES.slice(0, 4), priority: 5 });
    const ids = await itemIds(svc.db, running.jobId);
    await finishItem(svc.url, ids[0]!, 'completed');
    await finishItem(svc.url, ids[1]!, 'failed');
    expect((await post(`/items/${ids[2]}`, { status: 'running' })).status).toBe(200);
    // Completed, then a job depending on it; paused; cancelled; archived.
    const done = await createJob(svc.url, { imagePaths: [IMAGES[4]] });
    await finishItem(svc.url, (await itemIds(svc.db, done.jobId))[0]!, 'completed');
    await createJob(svc.url, { type: 'DEPENDENCY_CHAIN', dependsOn: [done.jobId], imagePaths: [IMAGES[0]] });
    const paused = await createJob(svc.url, {});
    expect((await post(`/pause/${paused.jobId}`)).status).toBe(200);
    const cancelled = await createJob(svc.url, {});
    expect((await post(`/cancel/${cancelled.jobId}`)).status).toBe(200);
    expect((await post(`/archive/${done.jobId}`)).status).toBe(200);
    // A stored config with a field the API does not show (written by an older version, say).
    await svc.db.execute(sql`update job_queue.caption_jobs set config = config || '{"legacy": 1}' where job_id = ${paused.jobId}`);

    for (const archived of [false, true]) {
      const { items, total } = await listJobs(svc.db, { archived, sort: 'queue', order: 'asc', page: 1, limit: 20 });
      const page = { items: items.map(toJob), total, page: 1, limit: 20 };
      expect(page.items.length).toBeGreaterThan(0);
      expect(jobPage.parse(page)).toStrictEqual(page);
    }
    const statuses = new Set<string>();
    for (const jobId of [running.jobId, done.jobId, paused.jobId, cancelled.jobId]) {
      const items = await listItems(svc.db, jobId, { page: 1, limit: 20 });
      const detail = { job: toJob(await getJob(svc.db, jobId)), items: { items: items.items.map(toItem), total: items.total, page: 1, limit: 20 } };
      statuses.add(detail.job.status);
      for (const item of detail.items.items) statuses.add(`item ${item.status}`);
      expect(jobStatusOutput.parse(detail)).toStrictEqual(detail);
    }
    expect([...statuses].sort()).toEqual(
      ['cancelled', 'completed', 'item cancelled', 'item completed', 'item failed', 'item pending', 'item running', 'paused', 'running'].sort(),
    );
  });
});
