/**
 * Conditional GETs (ETag from the body, 304 on If-None-Match, Cache-Control per resource) and the
 * in-memory perspective list, which must follow every change, including other replicas' and plain SQL.
 */
import { createHash } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { perspectiveCacheStats } from '../../src/db/perspectives.js';
import { createJob, finishItem, IMAGES, itemIds } from '../helpers/fixtures.js';
import { getOk, qs } from '../helpers/data.js';
import { api, startTestService, type TestService } from '../helpers/service.js';

let svc: TestService;
let replica: TestService;
beforeAll(async () => {
  svc = await startTestService();
  // A second replica on the same database and workspace.
  replica = await startTestService({ databaseUrl: svc.database.url, workspace: svc.workspace, env: { WORKSPACE_SYNC_ON_START: 'false' } });
});
afterAll(async () => {
  await replica?.close();
  await svc?.close();
});

async function raw(route: string, headers: Record<string, string> = {}, base = svc.url) {
  const response = await fetch(`${base}${route}`, { headers });
  return { status: response.status, headers: response.headers, text: await response.text() };
}

/** GETs the route, checks its validators, and returns its tag. */
async function tagOf(route: string, base = svc.url): Promise<string> {
  const first = await raw(route, {}, base);
  expect(first.status, first.text).toBe(200);
  const tag = first.headers.get('etag')!;
  // Strong (no W/), and the sha256 of exactly the bytes sent.
  expect(tag).toBe(`"${createHash('sha256').update(first.text).digest('base64url')}"`);
  const again = await raw(route, { 'if-none-match': tag }, base);
  expect(again.status, route).toBe(304);
  expect(again.text).toBe('');
  expect(again.headers.get('etag')).toBe(tag);
  return tag;
}

describe('conditional GETs', () => {
  it('answer If-None-Match with 304 and no body while the content is the same, 200 otherwise', async () => {
    const image = (await getOk(svc.url, '/api/images')).items[0];
    const route = `/api/images/${image.imageId}`;
    const tag = await tagOf(route);
    expect(await tagOf(route)).toBe(tag);
    const first = await raw(route);
    expect(first.headers.get('cache-control')).toBe('private, no-cache');
    expect(first.headers.get('content-type')).toMatch(/^application\/json/);
    for (const header of [`W/${tag}`, `"nope", ${tag}`, '*']) expect((await raw(route, { 'if-none-match': header })).status, header).toBe(304);
    const miss = await raw(route, { 'if-none-match': '"something-else"' });
    expect(miss.status).toBe(200);
    expect(JSON.parse(miss.text)).toEqual(image);
    // Errors and writes carry no tag.
    const missing = await raw('/api/images/00000000-0000-4000-8000-000000000001');
    expect(missing.status).toBe(404);
    expect(missing.headers.get('etag')).toBeNull();
    const created = await api(svc.url, 'POST', '/api/datasets', { name: 'tagged' });
    expect(created.headers.get('etag')).toBeNull();
  });

  it('give a new tag whenever the content changes, and only then', async () => {
    const [a, b] = (await getOk(svc.url, `/api/images${qs({ limit: 2 })}`)).items;
    const captionA = (await api(svc.url, 'POST', '/api/captions', { imageId: a.imageId, perspective: 'art_critic', result: { v: 1 } })).body;
    const dataset = (await getOk(svc.url, `/api/datasets${qs({ name: 'tagged' })}`)).items[0];
    const routes = {
      caption: `/api/captions/${captionA.captionId}`,
      captions: `/api/captions${qs({ imageId: a.imageId })}`,
      latest: `/api/images/${a.imageId}/latest-captions`,
      dataset: `/api/datasets/${dataset.datasetId}`,
      members: `/api/datasets/${dataset.datasetId}/images`,
      imageB: `/api/images/${b.imageId}`,
      perspectives: '/api/perspectives',
    };
    const tags = async () => Object.fromEntries(await Promise.all(Object.entries(routes).map(async ([k, r]) => [k, await tagOf(r)])));
    const t0 = await tags();

    // A caption of another image changes none of these.
    await api(svc.url, 'POST', '/api/captions', { imageId: b.imageId, perspective: 'storytelling', result: { v: 9 } });
    expect(await tags()).toEqual(t0);

    await api(svc.url, 'PATCH', routes.caption, { result: { v: 2 } });
    const t1 = await tags();
    expect(Object.keys(t1).filter((k) => t1[k] !== t0[k]).sort()).toEqual(['caption', 'captions', 'latest']);

    await api(svc.url, 'POST', `/api/datasets/${dataset.datasetId}/images`, { imageIds: [b.imageId] });
    const t2 = await tags();
    expect(Object.keys(t2).filter((k) => t2[k] !== t1[k]).sort()).toEqual(['dataset', 'imageB', 'members']);

    await api(svc.url, 'POST', '/api/perspectives', { name: 'tag_test', prompt: 'p' });
    const t3 = await tags();
    expect(Object.keys(t3).filter((k) => t3[k] !== t2[k])).toEqual(['perspectives']);

    // Job status moves with its items. (Not compared while running: a running job's estimated
    // completion time moves with the clock, so its tag rightly does too.)
    const job = await createJob(svc.url, { perspectives: ['art_critic'], imagePaths: [IMAGES[0], IMAGES[1]] });
    const status = `/api/perspectives/batch/status/${job.jobId}`;
    const before = await tagOf(status);
    expect(await tagOf(status)).toBe(before);
    for (const id of await itemIds(svc.db, job.jobId)) await finishItem(svc.url, id, 'completed');
    const after = await tagOf(status);
    expect(after).not.toBe(before);
    expect(await tagOf(status)).toBe(after);
    expect((await raw(status)).headers.get('cache-control')).toBe('private, no-cache');
  });

  it('let clients keep a perspective revision for a day: it never changes', async () => {
    const p = (await getOk(svc.url, `/api/perspectives${qs({ nameContains: 'tag_test' })}`)).items[0];
    const route = `/api/perspectives/${p.perspectiveId}/versions/1`;
    await tagOf(route);
    expect((await raw(route)).headers.get('cache-control')).toBe('private, max-age=86400, immutable');
  });
});

describe('the perspective list cache', () => {
  it('is served from memory while nothing changed', async () => {
    const route = `/api/perspectives${qs({ limit: 100 })}`;
    const first = await getOk(replica.url, route);
    const before = perspectiveCacheStats(replica.service.database.api.db);
    for (let i = 0; i < 3; i++) expect(await getOk(replica.url, route)).toEqual(first);
    const after = perspectiveCacheStats(replica.service.database.api.db);
    expect(after.loads).toBe(before.loads);
    expect(after.hits).toBe(before.hits + 3);
  });

  it('follows changes made by another replica and by plain SQL, at once', async () => {
    const route = `/api/perspectives${qs({ nameContains: 'tag_test' })}`;
    const p = (await getOk(replica.url, route)).items[0];
    expect(p.priority).toBe(50);
    // Changed on the first replica: the second sees it on its next request.
    await api(svc.url, 'PATCH', `/api/perspectives/${p.perspectiveId}`, { priority: 7 });
    expect((await getOk(replica.url, route)).items[0]).toMatchObject({ priority: 7, revision: 2 });
    // Changed behind the service's back.
    await svc.db.execute(sql`update core_schema.perspectives set display_name = 'Tagged' where name = 'tag_test'`);
    expect((await getOk(replica.url, route)).items[0].displayName).toBe('Tagged');
    expect((await getOk(svc.url, route)).items[0].displayName).toBe('Tagged');
    // Deleted: gone from both.
    await api(replica.url, 'DELETE', `/api/perspectives/${p.perspectiveId}`);
    expect((await getOk(svc.url, route)).total).toBe(0);
    expect((await getOk(replica.url, route)).total).toBe(0);
  });
});
