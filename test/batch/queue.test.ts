import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countRows, createJob, DATASET, finishItem, IMAGES, itemIds } from '../helpers/fixtures.js';
import { api, startTestService, type TestService } from '../helpers/service.js';

let svc: TestService;
beforeAll(async () => {
  svc = await startTestService();
});
afterAll(async () => svc?.close());

const B = '/api/perspectives/batch';
const get = (route: string) => api(svc.url, 'GET', `${B}${route}`);
const post = (route: string, body?: unknown) => api(svc.url, 'POST', `${B}${route}`, body);
const UNKNOWN = '00000000-0000-4000-8000-000000000001';

async function expectProblem(response: Awaited<ReturnType<typeof api>>, status: number, detail?: RegExp) {
  expect(response.status, JSON.stringify(response.body)).toBe(status);
  expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  expect(response.body.status).toBe(status);
  if (detail) expect(response.body.detail).toMatch(detail);
}

/** A job whose items all finished: `failed` of them failed, the rest completed. */
async function finishedJob(failed: number, perspectives = ['art_critic']) {
  const job = await createJob(svc.url, { perspectives, imagePaths: IMAGES.slice(0, 3) });
  const ids = await itemIds(svc.db, job.jobId);
  for (const [i, id] of ids.entries()) await finishItem(svc.url, id, i < failed ? 'failed' : 'completed');
  return job;
}

describe('status and items', () => {
  it('returns the job with counters and a page of items; 404 and 400 otherwise', async () => {
    const job = await createJob(svc.url, { perspectives: ['art_critic', 'storytelling'], imagePaths: IMAGES.slice(0, 3) });
    const ids = await itemIds(svc.db, job.jobId);
    await finishItem(svc.url, ids[0]!, 'completed');
    await finishItem(svc.url, ids[1]!, 'failed');

    const status = await get(`/status/${job.jobId}?page=2&limit=2`);
    expect(status.status).toBe(200);
    expect(status.body.job).toMatchObject({ status: 'running', totalImages: 6, processedImages: 1, failedImages: 1, progress: 33.33 });
    expect(status.body.job.startedAt).not.toBeNull();
    expect(status.body.items).toMatchObject({ total: 6, page: 2, limit: 2 });
    expect(status.body.items.items.map((i: { itemId: string }) => i.itemId)).toEqual(ids.slice(2, 4));

    const completed = await get(`/status/${job.jobId}?itemStatus=completed`);
    expect(completed.body.items.items).toHaveLength(1);
    expect(completed.body.items.items[0]).toMatchObject({ status: 'completed', attempts: 1, processingTime: 120, result: { caption: `caption of ${ids[0]}` } });

    await expectProblem(await get(`/status/${UNKNOWN}`), 404, /not found/);
    await expectProblem(await get('/status/not-a-uuid'), 400, /jobId/);
    await expectProblem(await get(`/status/${job.jobId}?limit=101`), 400, /limit/);
    await expectProblem(await get(`/status/${job.jobId}?page=0`), 400, /page/);
    await expectProblem(await get(`/status/${job.jobId}?itemStatus=done`), 400, /itemStatus/);
  });

  it('pages through items of every status in the job’s order, filtered or not, with the right totals', async () => {
    const job = await createJob(svc.url, { perspectives: ['art_critic', 'storytelling'], imagePaths: IMAGES.slice(0, 4) });
    const ids = await itemIds(svc.db, job.jobId);
    // Statuses interleaved along the job's order: pending, completed, pending, failed, completed, ...
    const outcome = new Map<number, 'completed' | 'failed'>([[1, 'completed'], [3, 'failed'], [4, 'completed'], [6, 'failed']]);
    for (const [i, status] of outcome) await finishItem(svc.url, ids[i]!, status);
    const statusOf = (i: number) => outcome.get(i) ?? 'pending';

    const pages = async (query: string) => {
      const seen: { itemId: string; status: string }[] = [];
      for (let page = 1; ; page++) {
        const r = await get(`/status/${job.jobId}?limit=3&page=${page}${query}`);
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        seen.push(...r.body.items.items);
        if (r.body.items.items.length < 3) return { seen, total: r.body.items.total as number };
      }
    };
    const all = await pages('');
    expect(all.total).toBe(8);
    expect(all.seen.map((i) => i.itemId)).toEqual(ids);
    expect(all.seen.map((i) => i.status)).toEqual(ids.map((_, i) => statusOf(i)));

    const some = await pages('&itemStatus=pending&itemStatus=failed');
    const expected = ids.filter((_, i) => statusOf(i) !== 'completed');
    expect(some.total).toBe(expected.length);
    expect(some.seen.map((i) => i.itemId)).toEqual(expected);
    // Past the end: an empty page, the same total.
    const beyond = await get(`/status/${job.jobId}?limit=3&page=4`);
    expect(beyond.body.items).toMatchObject({ total: 8, items: [] });
  });

  it('lists items by status and perspective, and the failed ones with their errors', async () => {
    const job = await createJob(svc.url, { perspectives: ['art_critic', 'storytelling'], imagePaths: IMAGES.slice(0, 2) });
    const ids = await itemIds(svc.db, job.jobId);
    await finishItem(svc.url, ids[3]!, 'failed', { error: 'image unreadable' });

    const story = await get(`/items/${job.jobId}/list?perspective=storytelling`);
    expect(story.body.total).toBe(2);
    expect(story.body.items.every((i: { perspective: string }) => i.perspective === 'storytelling')).toBe(true);
    const both = await get(`/items/${job.jobId}/list?status=pending&status=failed`);
    expect(both.body.total).toBe(4);
    const failed = await get(`/items/${job.jobId}/failed`);
    expect(failed.body).toMatchObject({ total: 1, items: [{ itemId: ids[3], status: 'failed', error: 'image unreadable' }] });
    const viaTrpc = await svc.trpc.batch.failedItems.query({ jobId: job.jobId });
    expect(viaTrpc.items.map((i) => i.itemId)).toEqual([ids[3]]);
    await expectProblem(await get(`/items/${UNKNOWN}/list`), 404);
    await expectProblem(await get(`/items/${UNKNOWN}/failed`), 404);
  });
});

describe('the item update endpoint', () => {
  it('follows the transition rules, accepts identical repeats, stores one caption', async () => {
    const job = await createJob(svc.url, { imagePaths: [IMAGES[0]] });
    const [id] = await itemIds(svc.db, job.jobId);
    const route = `/items/${id}`;

    await expectProblem(await post(route, { status: 'completed', result: { a: 1 } }), 409, /pending to completed/);
    expect((await post(route, { status: 'running' })).body).toMatchObject({ status: 'running', attempts: 1 });
    expect((await post(route, { status: 'running' })).status).toBe(200);
    await expectProblem(await post(route, { status: 'completed' }), 400, /result/);
    const done = await post(route, { status: 'completed', result: { a: 1 }, processingTime: 42, model: 'm2' });
    expect(done.body).toMatchObject({ status: 'completed', processingTime: 42, result: { a: 1 } });
    // The same update again changes nothing; a different outcome is a conflict.
    expect((await post(route, { status: 'completed', result: { a: 1 }, processingTime: 42 })).status).toBe(200);
    await expectProblem(await post(route, { status: 'completed', result: { a: 2 } }), 409, /different outcome/);
    await expectProblem(await post(route, { status: 'running' }), 409, /completed to running/);

    const { rows } = await svc.db.execute<{ n: number; model: string; version: string }>(sql`
      select count(*)::int as n, max(model) as model, max(perspective_version) as version
      from core_schema.captions where item_id = ${id}`);
    expect(rows[0]).toEqual({ n: 1, model: 'm2', version: '1' });
    const after = await get(`/status/${job.jobId}`);
    expect(after.body.job).toMatchObject({ status: 'completed', processedImages: 1, progress: 100 });
    expect(after.body.job.completedAt).not.toBeNull();

    await expectProblem(await post(`/items/${UNKNOWN}`, { status: 'running' }), 404);
    await expectProblem(await post(route, { status: 'exploded' }), 400, /status/);
    await expectProblem(await post(route, { status: 'failed', processingTime: -1 }), 400, /processingTime/);
  });

  it('a job ends failed when every item failed and partial when some did', async () => {
    expect((await get(`/status/${(await finishedJob(3)).jobId}`)).body.job.status).toBe('failed');
    expect((await get(`/status/${(await finishedJob(1)).jobId}`)).body.job).toMatchObject({ status: 'partial', failedImages: 1, processedImages: 2, progress: 100 });
  });
});

describe('cancel', () => {
  it('cancels unfinished items and refuses a second cancel', async () => {
    const job = await createJob(svc.url, { imagePaths: IMAGES.slice(0, 3) });
    const ids = await itemIds(svc.db, job.jobId);
    await finishItem(svc.url, ids[0]!, 'completed');
    await post(`/items/${ids[1]}`, { status: 'running' });

    const cancelled = await post(`/cancel/${job.jobId}`);
    expect(cancelled.status).toBe(200);
    expect(cancelled.body).toMatchObject({ status: 'cancelled', processedImages: 1, cancelledImages: 2, queuePosition: null });
    const items = await get(`/items/${job.jobId}/list`);
    expect(items.body.items.map((i: { status: string }) => i.status)).toEqual(['completed', 'cancelled', 'cancelled']);
    // A late result for a cancelled item is refused, and nothing is recorded.
    await expectProblem(await post(`/items/${ids[1]}`, { status: 'completed', result: { late: true } }), 409);
    expect(await countRows(svc.db, `core_schema.captions where item_id = '${ids[1]}'`)).toBe(0);

    await expectProblem(await post(`/cancel/${job.jobId}`), 409, /already cancelled/);
    await expectProblem(await post(`/cancel/${UNKNOWN}`), 404);
    await expectProblem(await post('/cancel/x'), 400);
  });

  it('works over tRPC with the matching error codes', async () => {
    const job = await createJob(svc.url, {});
    expect((await svc.trpc.batch.cancel.mutate({ jobId: job.jobId })).status).toBe('cancelled');
    await expect(svc.trpc.batch.cancel.mutate({ jobId: job.jobId })).rejects.toMatchObject({ data: { code: 'CONFLICT', httpStatus: 409 } });
    await expect(svc.trpc.batch.cancel.mutate({ jobId: UNKNOWN })).rejects.toMatchObject({ data: { code: 'NOT_FOUND' } });
  });
});

describe('archive, restore and retry-failed', () => {
  it('archives only finished jobs, moving their items, and restores them', async () => {
    const pending = await createJob(svc.url, {});
    await expectProblem(await post(`/archive/${pending.jobId}`), 409, /only finished jobs/);
    await expectProblem(await post(`/restore/${pending.jobId}`), 409, /not archived/);

    const job = await finishedJob(1);
    const archived = await post(`/archive/${job.jobId}`);
    expect(archived.body).toMatchObject({ archived: true, status: 'partial' });
    expect(archived.body.archiveDate).not.toBeNull();
    expect(await countRows(svc.db, `job_queue.job_items where job_id = '${job.jobId}'`)).toBe(0);
    expect(await countRows(svc.db, `job_queue.job_archives where job_id = '${job.jobId}'`)).toBe(3);
    // Still readable, with its items and captions.
    const status = await get(`/status/${job.jobId}`);
    expect(status.body.items.total).toBe(3);
    expect(status.body.items.items.filter((i: { result: unknown }) => i.result !== null)).toHaveLength(2);
    await expectProblem(await post(`/archive/${job.jobId}`), 409, /already archived/);
    await expectProblem(await post(`/retry-failed/${job.jobId}`), 409, /archived/);

    const listed = await get('/list?archived=true');
    expect(listed.body.items.map((j: { jobId: string }) => j.jobId)).toContain(job.jobId);
    expect((await get('/list?archived=false')).body.items.map((j: { jobId: string }) => j.jobId)).not.toContain(job.jobId);

    const restored = await post(`/restore/${job.jobId}`);
    expect(restored.body).toMatchObject({ archived: false, archiveDate: null, status: 'partial' });
    expect(await countRows(svc.db, `job_queue.job_items where job_id = '${job.jobId}'`)).toBe(3);
    expect(await countRows(svc.db, `job_queue.job_archives where job_id = '${job.jobId}'`)).toBe(0);
  });

  it('retry-failed puts failed items back and the job back to pending', async () => {
    const pending = await createJob(svc.url, {});
    await expectProblem(await post(`/retry-failed/${pending.jobId}`), 409, /only partial or failed/);

    const job = await finishedJob(2);
    const retried = await post(`/retry-failed/${job.jobId}`);
    expect(retried.body).toMatchObject({ retried: 2, job: { status: 'pending', failedImages: 0, processedImages: 1 } });
    expect(retried.body.job.progress).toBeCloseTo(33.33, 2);
    const items = await get(`/items/${job.jobId}/list?status=pending`);
    expect(items.body.items.map((i: { attempts: number; error: null }) => [i.attempts, i.error])).toEqual([[0, null], [0, null]]);
    await expectProblem(await post(`/retry-failed/${job.jobId}`), 409);
  });
});

describe('queue order and reorder', () => {
  it('lists in queue order and reorders by place and by priority', async () => {
    const fresh = await startTestService();
    try {
      const url = fresh.url;
      const a = await createJob(url, { priority: 100 });
      const b = await createJob(url, { priority: 100 });
      const c = await createJob(url, { priority: 50 });
      const d = await createJob(url, { priority: 100 });
      const order = async () => (await api(url, 'GET', `${B}/list`)).body.items.map((j: { jobId: string }) => j.jobId);
      expect(await order()).toEqual([c.jobId, a.jobId, b.jobId, d.jobId]);
      expect((await api(url, 'GET', `${B}/status/${b.jobId}`)).body.job.queuePosition).toBe(3);

      // Move d to the front: it takes c's priority so it really runs first.
      const moved = await api(url, 'POST', `${B}/reorder`, { moves: [{ jobId: d.jobId, position: 1 }] });
      expect(moved.status).toBe(200);
      expect(moved.body.queue.map((q: { jobId: string; position: number }) => [q.jobId, q.position])).toEqual([
        [d.jobId, 1], [c.jobId, 2], [a.jobId, 3], [b.jobId, 4],
      ]);
      expect(await order()).toEqual([d.jobId, c.jobId, a.jobId, b.jobId]);
      // Move a to the end, then give b the lowest priority number: b first.
      await api(url, 'POST', `${B}/reorder`, { moves: [{ jobId: a.jobId, position: 99 }] });
      expect(await order()).toEqual([d.jobId, c.jobId, b.jobId, a.jobId]);
      await api(url, 'POST', `${B}/reorder`, { priorities: [{ jobId: b.jobId, priority: 1 }] });
      expect(await order()).toEqual([b.jobId, d.jobId, c.jobId, a.jobId]);

      await expectProblem(await api(url, 'POST', `${B}/reorder`, { moves: [{ jobId: UNKNOWN, position: 1 }] }), 404);
      await expectProblem(await api(url, 'POST', `${B}/reorder`, {}), 400, /at least one/);
      await expectProblem(await api(url, 'POST', `${B}/reorder`, { moves: [{ jobId: a.jobId, position: 0 }] }), 400, /position/);
      await api(url, 'POST', `${B}/cancel/${a.jobId}`);
      await expectProblem(await api(url, 'POST', `${B}/reorder`, { moves: [{ jobId: a.jobId, position: 1 }] }), 409);
      expect(await order()).toEqual([b.jobId, d.jobId, c.jobId, a.jobId]);
    } finally {
      await fresh.close();
    }
  });
});

describe('list filters', () => {
  it('filters by status, type, user, archived and creation time, and sorts', async () => {
    const fresh = await startTestService();
    try {
      const url = fresh.url;
      const list = async (query: string) => {
        const response = await api(url, 'GET', `${B}/list?${query}`);
        expect(response.status, JSON.stringify(response.body)).toBe(200);
        return response.body as { items: { jobId: string }[]; total: number };
      };
      const x = await createJob(url, { userId: 'x', priority: 3 });
      const y = await createJob(url, { userId: 'y', type: 'DATASET_PERSPECTIVE', imagePaths: undefined, datasetName: DATASET, priority: 2 });
      const z = await createJob(url, { userId: 'x', priority: 1 });
      await api(url, 'POST', `${B}/cancel/${z.jobId}`);
      await fresh.db.execute(sql`update job_queue.caption_jobs set created_at = '2020-01-01T00:00:00Z' where job_id = ${x.jobId}`);

      expect((await list('userId=x')).items.map((j) => j.jobId).sort()).toEqual([x.jobId, z.jobId].sort());
      expect((await list('status=cancelled')).items.map((j) => j.jobId)).toEqual([z.jobId]);
      expect((await list('status=cancelled&status=pending')).total).toBe(3);
      expect((await list('type=DATASET_PERSPECTIVE')).items.map((j) => j.jobId)).toEqual([y.jobId]);
      expect((await list('createdTo=2021-01-01T00:00:00Z')).items.map((j) => j.jobId)).toEqual([x.jobId]);
      expect((await list('createdFrom=2021-01-01T00:00:00Z')).total).toBe(2);
      expect((await list('sort=createdAt&order=desc')).items.at(-1)?.jobId).toBe(x.jobId);
      expect((await list('sort=priority')).items.map((j) => j.jobId)).toEqual([z.jobId, y.jobId, x.jobId]);
      const page = await list('limit=1&page=2&sort=priority');
      expect(page).toMatchObject({ total: 3, page: 2, limit: 1, items: [{ jobId: y.jobId }] });
      expect((await list('archived=false')).total).toBe(3);
      expect((await list('archived=true')).total).toBe(0);

      const viaTrpc = await fresh.trpc.batch.list.query({ userId: 'x', archived: false });
      expect(viaTrpc.total).toBe(2);

      for (const bad of ['sort=size', 'order=up', 'status=done', 'type=X', 'archived=maybe', 'createdFrom=yesterday', 'limit=0', 'limit=abc', 'page=-1']) {
        await expectProblem(await api(url, 'GET', `${B}/list?${bad}`), 400);
      }
    } finally {
      await fresh.close();
    }
  });
});

describe('statistics and analyze-images', () => {
  it('computes queue figures in SQL', async () => {
    const fresh = await startTestService();
    try {
      const url = fresh.url;
      const job = await createJob(url, { imagePaths: IMAGES.slice(0, 4) });
      const ids = await itemIds(fresh.db, job.jobId);
      await finishItem(url, ids[0]!, 'completed', { processingTime: 100 });
      await finishItem(url, ids[1]!, 'completed', { processingTime: 300 });
      await finishItem(url, ids[2]!, 'failed', { processingTime: 200 });
      await api(url, 'POST', `${B}/items/${ids[3]}`, { status: 'running' });
      await createJob(url, {});

      const stats = await api(url, 'GET', `${B}/statistics`);
      expect(stats.status).toBe(200);
      expect(stats.body.jobs).toMatchObject({ pending: 1, running: 1, total: 2 });
      expect(stats.body.items).toEqual({ pending: 2, running: 1, completed: 2, failed: 1, cancelled: 0, total: 6 });
      expect(stats.body.throughput).toEqual({ windowMinutes: 60, finishedItems: 3, itemsPerMinute: 0.05 });
      expect(stats.body.processingTime.meanMs).toBe(200);
      expect(stats.body.processingTime.p95Ms).toBe(290);
      expect(stats.body.failureRate).toBeCloseTo(1 / 3, 4);
      expect(stats.body.oldestPendingJobAgeSeconds).toBeGreaterThanOrEqual(0);
      await expectProblem(await api(url, 'GET', `${B}/statistics?windowMinutes=0`), 400);
    } finally {
      await fresh.close();
    }
  });

  it('says which captions exist and which are missing', async () => {
    const job = await createJob(svc.url, { perspectives: ['style_preset'], imagePaths: IMAGES.slice(0, 2) });
    const [first] = await itemIds(svc.db, job.jobId);
    await finishItem(svc.url, first!, 'completed');

    const analysis = await post('/analyze-images', { datasetName: DATASET, perspectives: ['style_preset', 'i2video'], missingLimit: 3 });
    expect(analysis.status).toBe(200);
    expect(analysis.body).toMatchObject({
      imageCount: 7,
      perspectives: ['style_preset', 'i2video'],
      totalPairs: 14,
      captioned: 1,
      missing: 13,
      byPerspective: [
        { perspective: 'style_preset', captioned: 1, missing: 6 },
        { perspective: 'i2video', captioned: 0, missing: 7 },
      ],
    });
    expect(analysis.body.missingPairs).toHaveLength(3);
    expect(analysis.body.missingPairs[0]).toMatchObject({ imagePath: IMAGES[0], perspective: 'i2video' });

    // Default perspectives: every enabled one; compare with a brute-force count.
    const byPath = await post('/analyze-images', { imagePaths: [IMAGES[0]] });
    const { rows } = await svc.db.execute<{ enabled: number; captioned: number }>(sql`
      select count(*)::int as enabled,
             count(*) filter (where exists (select 1 from core_schema.captions c join core_schema.images i on i.id = c.image_id
                                            where i.path = ${IMAGES[0]} and c.perspective_id = p.id))::int as captioned
      from core_schema.perspectives p where p.enabled`);
    expect(byPath.body.perspectives).toHaveLength(rows[0]!.enabled);
    expect(byPath.body.captioned).toBe(rows[0]!.captioned);
    expect(byPath.body.captioned).toBeGreaterThan(0);

    await expectProblem(await post('/analyze-images', { imagePaths: ['../x.jpg'] }), 400, /imagePaths.0/);
    await expectProblem(await post('/analyze-images', { datasetName: 'nope' }), 400, /unknown dataset/);
    await expectProblem(await post('/analyze-images', { imagePaths: [IMAGES[0]], perspectives: ['nope'] }), 400, /perspectives.0/);
    await expectProblem(await post('/analyze-images', {}), 400, /exactly one/);
  });
});
