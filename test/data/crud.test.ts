/**
 * Get, create, update and delete of images, datasets, perspectives and captions, the relationships,
 * and the integrity rules: 409 where a delete or change would break something, and a refused
 * delete leaves every row in place. Also: the batch routes still answer beside /api/perspectives/*.
 */
import { chmod, copyFile, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { sql } from 'drizzle-orm';
import { TRPCClientError } from '@trpc/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderOpenApiDocument } from '../../scripts/write-openapi.js';
import { countRows, createJob, finishItem, IMAGES, itemIds } from '../helpers/fixtures.js';
import { getOk, qs } from '../helpers/data.js';
import { api, startTestService, type TestService } from '../helpers/service.js';

let svc: TestService;
beforeAll(async () => {
  svc = await startTestService();
  await chmod(path.join(svc.workspace, 'datasets'), 0o755);
  await mkdir(path.join(svc.workspace, 'uploads'));
});
afterAll(async () => svc?.close());

const UNKNOWN = '00000000-0000-4000-8000-000000000001';
const ws = (relative: string) => path.join(svc.workspace, relative);

async function expectProblem(response: Awaited<ReturnType<typeof api>>, status: number, detail?: RegExp) {
  expect(response.status, JSON.stringify(response.body)).toBe(status);
  expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  if (detail) expect(response.body.detail).toMatch(detail);
  return response.body;
}

async function ok(response: Awaited<ReturnType<typeof api>>) {
  expect(response.status, JSON.stringify(response.body)).toBe(200);
  return response.body;
}

async function imageByPath(p: string) {
  const found = (await getOk(svc.url, `/api/images${qs({ pathContains: p })}`)).items.find((i: { path: string }) => i.path === p);
  if (!found) throw new Error(`no image ${p}`);
  return found;
}

/** Every row that hangs off images, datasets and perspectives: a refused delete must leave all of them. */
async function snapshot() {
  const tables = [
    'core_schema.images',
    'core_schema.datasets',
    'core_schema.dataset_images',
    'core_schema.perspectives',
    'core_schema.perspective_versions',
    'core_schema.captions',
    'job_queue.job_items',
    'job_queue.job_archives',
  ];
  const counts: Record<string, number> = {};
  for (const t of tables) counts[t] = await countRows(svc.db, t);
  const { rows } = await svc.db.execute<{ n: number }>(sql`select count(*)::int as n from job_queue.job_items where image_id is null`);
  counts.orphanItems = rows[0]!.n;
  return counts;
}

const caption = (imageId: string, perspective: string, result: Record<string, unknown> = { text: 'x' }) =>
  api(svc.url, 'POST', '/api/captions', { imageId, perspective, result, model: 'm', provider: 'p' });

describe('images', () => {
  it('registers a workspace file with its metadata; refuses duplicates, missing files and paths outside', async () => {
    await copyFile(ws(IMAGES[3]), ws('uploads/cow.jpg'));
    const created = await ok(await api(svc.url, 'POST', '/api/images', { path: 'uploads/cow.jpg' }));
    const cow = await imageByPath(IMAGES[3]);
    expect(created).toMatchObject({ path: 'uploads/cow.jpg', format: 'jpg', width: 640, height: 512, sizeBytes: cow.sizeBytes, contentHash: cow.contentHash, datasetIds: [] });
    expect(await getOk(svc.url, `/api/images/${created.imageId}`)).toEqual(created);
    expect(await svc.trpc.images.get.query({ imageId: created.imageId })).toEqual(created);

    const before = await snapshot();
    await expectProblem(await api(svc.url, 'POST', '/api/images', { path: 'uploads/cow.jpg' }), 409, /registered already/);
    await expectProblem(await api(svc.url, 'POST', '/api/images', { path: 'uploads/none.jpg' }), 400, /no such file/);
    await expectProblem(await api(svc.url, 'POST', '/api/images', { path: '../etc/passwd.jpg' }), 400, /\.\./);
    await expectProblem(await api(svc.url, 'POST', '/api/images', { path: 'NOTICE.md' }), 400, /not an image/);
    await copyFile(ws(IMAGES[3]), ws('uploads/cow2.jpg'));
    const unknownDataset = await expectProblem(await api(svc.url, 'POST', '/api/images', { path: 'uploads/cow2.jpg', datasetIds: [UNKNOWN] }), 400);
    expect(unknownDataset.errors).toEqual([{ path: 'datasetIds.0', message: `unknown dataset ${UNKNOWN}` }]);
    expect(await snapshot()).toEqual(before);

    await expectProblem(await api(svc.url, 'GET', `/api/images/${UNKNOWN}`), 404);
    await expectProblem(await api(svc.url, 'GET', '/api/images/cow'), 400, /imageId/);
  });

  it('follows a renamed file, re-reads a changed one, and refuses a taken path', async () => {
    await copyFile(ws(IMAGES[6]!), ws('uploads/owl.jpg'));
    const owl = await ok(await api(svc.url, 'POST', '/api/images', { path: 'uploads/owl.jpg' }));
    await ok(await caption(owl.imageId, 'art_critic'));
    await copyFile(ws('uploads/owl.jpg'), ws('uploads/owl-renamed.jpg'));
    const moved = await ok(await api(svc.url, 'PATCH', `/api/images/${owl.imageId}`, { path: 'uploads/owl-renamed.jpg' }));
    expect(moved).toMatchObject({ imageId: owl.imageId, path: 'uploads/owl-renamed.jpg', contentHash: owl.contentHash });
    expect((await getOk(svc.url, `/api/captions${qs({ imageId: owl.imageId })}`)).items[0].imagePath).toBe('uploads/owl-renamed.jpg');

    await copyFile(ws(IMAGES[4]), ws('uploads/owl-renamed.jpg'));
    const reread = await ok(await api(svc.url, 'PATCH', `/api/images/${owl.imageId}`, {}));
    expect(reread).toMatchObject({ path: 'uploads/owl-renamed.jpg', width: 428, height: 640 });
    expect(reread.contentHash).not.toBe(owl.contentHash);

    await expectProblem(await api(svc.url, 'PATCH', `/api/images/${owl.imageId}`, { path: 'uploads/cow.jpg' }), 409, /registered already/);
    await expectProblem(await api(svc.url, 'PATCH', `/api/images/${UNKNOWN}`, {}), 404);
  });

  it('answers with the latest caption of each perspective', async () => {
    // Perspectives the example workspace has no captions for.
    const image = await imageByPath(IMAGES[5]!);
    const first = await ok(await caption(image.imageId, 'time_tags', { v: 1 }));
    const second = await ok(await caption(image.imageId, 'time_tags', { v: 2 }));
    const art = await ok(await caption(image.imageId, 'style_preset', { v: 3 }));
    const latest = await getOk(svc.url, `/api/images/${image.imageId}/latest-captions`);
    expect(latest.image).toEqual(await getOk(svc.url, `/api/images/${image.imageId}`));
    // One caption per perspective, the newest; beside these two, the example workspace's imported ones.
    const perspectives = latest.captions.map((c: { perspective: string }) => c.perspective);
    expect(new Set(perspectives).size).toBe(perspectives.length);
    expect(latest.captions.filter((c: { perspective: string }) => ['style_preset', 'time_tags'].includes(c.perspective))).toEqual([art, second]);
    expect(first.captionId).not.toBe(second.captionId);
    const only = await getOk(svc.url, `/api/images/${image.imageId}/latest-captions${qs({ perspective: 'time_tags' })}`);
    expect(only.captions).toEqual([second]);
    await expectProblem(await api(svc.url, 'GET', `/api/images/${UNKNOWN}/latest-captions`), 404);
  });

  it('refuses to delete an image that pending or running items use (409), and deletes nothing', async () => {
    const image = await imageByPath(IMAGES[2]);
    await ok(await caption(image.imageId, 'art_critic'));
    const job = await createJob(svc.url, { perspectives: ['art_critic', 'storytelling'], imagePaths: [IMAGES[2]] });
    const [running] = await itemIds(svc.db, job.jobId);
    await ok(await api(svc.url, 'POST', `/api/perspectives/batch/items/${running}`, { status: 'running' }));
    const before = await snapshot();
    await expectProblem(await api(svc.url, 'DELETE', `/api/images/${image.imageId}`), 409, /pending or running/);
    expect(await snapshot()).toEqual(before);
    const error = await svc.trpc.images.delete.mutate({ imageId: image.imageId }).catch((e: unknown) => e);
    expect((error as TRPCClientError<never>).data).toMatchObject({ code: 'CONFLICT', httpStatus: 409 });
    await ok(await api(svc.url, 'POST', `/api/perspectives/batch/cancel/${job.jobId}`));
  });

  it('deletes an image with its captions and memberships; finished items, live and archived, keep their path', async () => {
    const image = await imageByPath(IMAGES[1]);
    const other = await imageByPath(IMAGES[0]);
    await ok(await caption(image.imageId, 'art_critic'));
    // One finished job that stays live, one that is archived; both used the image.
    const live = await createJob(svc.url, { perspectives: ['art_critic'], imagePaths: [IMAGES[1], IMAGES[0]] });
    for (const id of await itemIds(svc.db, live.jobId)) await finishItem(svc.url, id, 'failed');
    const archived = await createJob(svc.url, { perspectives: ['storytelling'], imagePaths: [IMAGES[1]] });
    for (const id of await itemIds(svc.db, archived.jobId)) await finishItem(svc.url, id, 'completed');
    await ok(await api(svc.url, 'POST', `/api/perspectives/batch/archive/${archived.jobId}`));
    const otherCaptions = (await getOk(svc.url, `/api/captions${qs({ imageId: other.imageId, limit: 100 })}`)).total;

    const before = await snapshot();
    expect(await ok(await api(svc.url, 'DELETE', `/api/images/${image.imageId}`))).toEqual({ deleted: true, imageId: image.imageId });
    const after = await snapshot();
    expect(after['core_schema.images']).toBe(before['core_schema.images']! - 1);
    expect(after['core_schema.dataset_images']).toBe(before['core_schema.dataset_images']! - 1);
    const { rows } = await svc.db.execute<{ n: number }>(sql`select count(*)::int as n from core_schema.captions where image_id = ${image.imageId}`);
    expect(rows[0]!.n).toBe(0);
    expect(after['job_queue.job_items']).toBe(before['job_queue.job_items']);
    expect(after['job_queue.job_archives']).toBe(before['job_queue.job_archives']);
    await expectProblem(await api(svc.url, 'GET', `/api/images/${image.imageId}`), 404);
    expect((await getOk(svc.url, `/api/captions${qs({ imageId: other.imageId, limit: 100 })}`)).total).toBe(otherCaptions);

    const liveItems = (await getOk(svc.url, `/api/perspectives/batch/items/${live.jobId}/list`)).items;
    expect(liveItems.map((i: { imageId: string | null; imagePath: string }) => [i.imageId, i.imagePath])).toEqual([
      [other.imageId, IMAGES[0]],
      [null, IMAGES[1]],
    ]);
    const archivedItems = (await getOk(svc.url, `/api/perspectives/batch/items/${archived.jobId}/list`)).items;
    expect(archivedItems.map((i: { imageId: string | null; imagePath: string; result: unknown }) => [i.imageId, i.imagePath, i.result])).toEqual([
      [null, IMAGES[1], null],
    ]);
    await ok(await api(svc.url, 'POST', `/api/perspectives/batch/restore/${archived.jobId}`));
    // Only the failed item whose image still exists goes back to the queue.
    expect((await ok(await api(svc.url, 'POST', `/api/perspectives/batch/retry-failed/${live.jobId}`))).retried).toBe(1);
    await expectProblem(await api(svc.url, 'DELETE', `/api/images/${image.imageId}`), 404);
  });
});

describe('datasets', () => {
  it('creates, renames, describes, adds and removes images; 409 for taken names and folder-fed datasets', async () => {
    const [a, b] = [await imageByPath(IMAGES[4]), await imageByPath(IMAGES[5]!)];
    const created = await ok(await api(svc.url, 'POST', '/api/datasets', { name: 'favourites', description: 'best', imageIds: [a.imageId] }));
    expect(created).toMatchObject({ name: 'favourites', description: 'best', imageCount: 1 });
    expect(await svc.trpc.datasets.get.query({ datasetId: created.datasetId })).toEqual(created);
    expect((await getOk(svc.url, `/api/images/${a.imageId}`)).datasetIds).toContain(created.datasetId);

    const before = await snapshot();
    await expectProblem(await api(svc.url, 'POST', '/api/datasets', { name: 'favourites' }), 409, /exists already/);
    await expectProblem(await api(svc.url, 'POST', '/api/datasets', { name: '../up' }), 400, /name/);
    await expectProblem(await api(svc.url, 'POST', '/api/datasets', { name: 'x', imageIds: [UNKNOWN] }), 400, /unknown image/);
    const conflict = await svc.trpc.datasets.create.mutate({ name: 'favourites' }).catch((e: unknown) => e);
    expect((conflict as TRPCClientError<never>).data).toMatchObject({ code: 'CONFLICT' });
    expect(await snapshot()).toEqual(before);

    const renamed = await ok(await api(svc.url, 'PATCH', `/api/datasets/${created.datasetId}`, { name: 'top', description: null }));
    expect(renamed).toMatchObject({ name: 'top', description: null, imageCount: 1 });
    await expectProblem(await api(svc.url, 'PATCH', `/api/datasets/${created.datasetId}`, { name: 'os_img' }), 409, /exists already/);
    const osImg = (await getOk(svc.url, `/api/datasets${qs({ name: 'os_img' })}`)).items[0];
    await expectProblem(await api(svc.url, 'PATCH', `/api/datasets/${osImg.datasetId}`, { name: 'renamed' }), 409, /folder/);
    expect(await ok(await api(svc.url, 'PATCH', `/api/datasets/${osImg.datasetId}`, { description: 'pixabay' }))).toMatchObject({ name: 'os_img', description: 'pixabay' });
    await expectProblem(await api(svc.url, 'PATCH', `/api/datasets/${created.datasetId}`, {}), 400, /name or description/);

    const added = await ok(await api(svc.url, 'POST', `/api/datasets/${created.datasetId}/images`, { imageIds: [a.imageId, b.imageId] }));
    expect(added).toMatchObject({ added: 1, dataset: { imageCount: 2 } });
    await expectProblem(await api(svc.url, 'POST', `/api/datasets/${created.datasetId}/images`, { imageIds: [UNKNOWN] }), 400, /unknown image/);
    const members = await getOk(svc.url, `/api/datasets/${created.datasetId}/images`);
    expect(members.items.map((i: { imageId: string }) => i.imageId).sort()).toEqual([a.imageId, b.imageId].sort());
    expect(await ok(await api(svc.url, 'DELETE', `/api/datasets/${created.datasetId}/images/${a.imageId}`))).toMatchObject({ imageCount: 1 });
    await expectProblem(await api(svc.url, 'DELETE', `/api/datasets/${created.datasetId}/images/${a.imageId}`), 404, /not in dataset/);
    expect(await getOk(svc.url, `/api/images/${a.imageId}`)).toMatchObject({ imageId: a.imageId });
    await expectProblem(await api(svc.url, 'GET', `/api/datasets/${UNKNOWN}`), 404);
  });

  it('deletes a dataset and keeps its images by default', async () => {
    const image = await imageByPath(IMAGES[4]);
    const dataset = await ok(await api(svc.url, 'POST', '/api/datasets', { name: 'temporary', imageIds: [image.imageId] }));
    const before = await snapshot();
    expect(await ok(await api(svc.url, 'DELETE', `/api/datasets/${dataset.datasetId}`))).toEqual({
      deleted: true,
      datasetId: dataset.datasetId,
      deletedImages: 0,
      keptImages: 1,
    });
    const after = await snapshot();
    expect(after).toEqual({
      ...before,
      'core_schema.datasets': before['core_schema.datasets']! - 1,
      'core_schema.dataset_images': before['core_schema.dataset_images']! - 1,
    });
    await expectProblem(await api(svc.url, 'GET', `/api/datasets/${dataset.datasetId}`), 404);
  });

  it('with deleteImages, deletes only the images no other dataset uses, or nothing at all when one is in use', async () => {
    await mkdir(ws('uploads/set'));
    for (const name of ['one.jpg', 'two.jpg']) await copyFile(ws(IMAGES[6]!), ws(`uploads/set/${name}`));
    await writeFile(ws('uploads/set/notes.txt'), 'not an image');
    const one = await ok(await api(svc.url, 'POST', '/api/images', { path: 'uploads/set/one.jpg' }));
    const two = await ok(await api(svc.url, 'POST', '/api/images', { path: 'uploads/set/two.jpg' }));
    const shared = await imageByPath(IMAGES[5]!);
    const dataset = await ok(await api(svc.url, 'POST', '/api/datasets', { name: 'doomed', imageIds: [one.imageId, two.imageId, shared.imageId] }));
    await ok(await caption(one.imageId, 'art_critic'));

    // `two` is in a pending job: the whole delete is refused.
    const job = await createJob(svc.url, { perspectives: ['art_critic'], imagePaths: ['uploads/set/two.jpg'] });
    const before = await snapshot();
    await expectProblem(await api(svc.url, 'DELETE', `/api/datasets/${dataset.datasetId}?deleteImages=true`), 409, /pending or running/);
    expect(await snapshot()).toEqual(before);
    expect(await getOk(svc.url, `/api/datasets/${dataset.datasetId}`)).toMatchObject({ imageCount: 3 });

    await ok(await api(svc.url, 'POST', `/api/perspectives/batch/cancel/${job.jobId}`));
    expect(await ok(await api(svc.url, 'DELETE', `/api/datasets/${dataset.datasetId}?deleteImages=true`))).toEqual({
      deleted: true,
      datasetId: dataset.datasetId,
      deletedImages: 2,
      keptImages: 1,
    });
    await expectProblem(await api(svc.url, 'GET', `/api/images/${one.imageId}`), 404);
    await expectProblem(await api(svc.url, 'GET', `/api/images/${two.imageId}`), 404);
    expect(await getOk(svc.url, `/api/images/${shared.imageId}`)).toMatchObject({ imageId: shared.imageId });
    const { rows } = await svc.db.execute<{ n: number }>(
      sql`select count(*)::int as n from core_schema.captions where image_id in (${one.imageId}, ${two.imageId})`,
    );
    expect(rows[0]!.n).toBe(0);
  });
});

describe('perspectives', () => {
  const body = { name: 'product_shot', prompt: 'Describe the product.', schemaFields: [{ name: 'product', type: 'str' }], tags: ['commerce'] };

  it('creates one at revision 1; a changed definition is the next revision, enabled alone is not', async () => {
    const created = await ok(await api(svc.url, 'POST', '/api/perspectives', body));
    expect(created).toMatchObject({ ...body, displayName: 'product_shot', version: '1', revision: 1, module: 'custom', priority: 50, enabled: true, deprecated: false, source: 'api', sourcePath: null });
    expect(created.definition).toMatchObject({ name: 'product_shot', prompt: body.prompt, schema_fields: body.schemaFields, display_name: 'product_shot' });
    await expectProblem(await api(svc.url, 'POST', '/api/perspectives', body), 409, /exists already/);
    await expectProblem(await api(svc.url, 'POST', '/api/perspectives', { ...body, name: 'p2', priority: '5' }), 400, /priority/);
    await expectProblem(await api(svc.url, 'POST', '/api/perspectives', { ...body, name: 'p2', deprecated: 'yes' }), 400, /deprecated/);
    await expectProblem(await api(svc.url, 'POST', '/api/perspectives', { ...body, name: 'bad name' }), 400, /name/);

    const id = created.perspectiveId;
    const withCaption = await ok(await caption((await imageByPath(IMAGES[0])).imageId, 'product_shot'));
    const changed = await ok(await api(svc.url, 'PATCH', `/api/perspectives/${id}`, { prompt: 'Describe the product and its price.', version: '1.1' }));
    expect(changed).toMatchObject({ revision: 2, version: '1.1', prompt: 'Describe the product and its price.' });
    const same = await ok(await api(svc.url, 'PATCH', `/api/perspectives/${id}`, { prompt: 'Describe the product and its price.' }));
    expect(same).toMatchObject({ revision: 2 });
    const disabled = await ok(await api(svc.url, 'PATCH', `/api/perspectives/${id}`, { enabled: false }));
    expect(disabled).toMatchObject({ revision: 2, enabled: false });
    await expectProblem(await api(svc.url, 'PATCH', `/api/perspectives/${id}`, {}), 400, /at least one/);

    const versions = await getOk(svc.url, `/api/perspectives/${id}/versions`);
    expect(versions.items.map((v: { revision: number; version: string }) => [v.revision, v.version])).toEqual([[2, '1.1'], [1, '1']]);
    expect((await getOk(svc.url, `/api/perspectives/${id}/versions/1`)).definition.prompt).toBe(body.prompt);
    await expectProblem(await api(svc.url, 'GET', `/api/perspectives/${id}/versions/3`), 404);
    await expectProblem(await api(svc.url, 'GET', `/api/perspectives/${id}/versions/zero`), 400, /revision/);
    expect(await getOk(svc.url, `/api/captions/${withCaption.captionId}`)).toMatchObject({ perspectiveRevision: 1, perspectiveVersion: '1' });
    expect(await svc.trpc.perspectives.get.query({ perspectiveId: id })).toEqual(disabled);
  });

  it('refuses to change or delete a library perspective (409)', async () => {
    const art = (await getOk(svc.url, `/api/perspectives${qs({ nameContains: 'art_critic' })}`)).items[0];
    await expectProblem(await api(svc.url, 'PATCH', `/api/perspectives/${art.perspectiveId}`, { priority: 1 }), 409, /perspective_library\/core\/art_critic\.json/);
    await expectProblem(await api(svc.url, 'DELETE', `/api/perspectives/${art.perspectiveId}`), 409, /perspective_library/);
    expect(await getOk(svc.url, `/api/perspectives/${art.perspectiveId}`)).toEqual(art);
  });

  it('deletes one made through the API with its revisions and captions, but not while pending items use it', async () => {
    const created = await ok(await api(svc.url, 'POST', '/api/perspectives', { ...body, name: 'short_lived' }));
    await ok(await caption((await imageByPath(IMAGES[0])).imageId, 'short_lived'));
    const job = await createJob(svc.url, { perspectives: ['short_lived'], imagePaths: [IMAGES[0]] });
    const before = await snapshot();
    await expectProblem(await api(svc.url, 'DELETE', `/api/perspectives/${created.perspectiveId}`), 409, /pending or running/);
    expect(await snapshot()).toEqual(before);
    await ok(await api(svc.url, 'POST', `/api/perspectives/batch/cancel/${job.jobId}`));
    expect(await ok(await api(svc.url, 'DELETE', `/api/perspectives/${created.perspectiveId}`))).toEqual({ deleted: true, perspectiveId: created.perspectiveId });
    const after = await snapshot();
    expect(after['core_schema.perspectives']).toBe(before['core_schema.perspectives']! - 1);
    expect(after['core_schema.perspective_versions']).toBe(before['core_schema.perspective_versions']! - 1);
    expect(after['core_schema.captions']).toBe(before['core_schema.captions']! - 1);
    await expectProblem(await api(svc.url, 'GET', `/api/perspectives/${created.perspectiveId}`), 404);
    await expectProblem(await api(svc.url, 'GET', `/api/perspectives/${created.perspectiveId}/captions`), 404);
  });
});

describe('captions', () => {
  it('stores one made outside the queue, corrects it, deletes it', async () => {
    const image = await imageByPath(IMAGES[6]!);
    const art = (await getOk(svc.url, `/api/perspectives${qs({ nameContains: 'art_critic' })}`)).items[0];
    const byId = await ok(await api(svc.url, 'POST', '/api/captions', { imageId: image.imageId, perspectiveId: art.perspectiveId, result: { a: 1 }, rawText: 'a' }));
    expect(byId).toMatchObject({
      imageId: image.imageId,
      imagePath: image.path,
      perspectiveId: art.perspectiveId,
      perspective: 'art_critic',
      perspectiveVersion: art.version,
      perspectiveRevision: art.revision,
      result: { a: 1 },
      rawText: 'a',
      model: null,
      provider: null,
      jobId: null,
      itemId: null,
    });
    expect(await getOk(svc.url, `/api/captions/${byId.captionId}`)).toEqual(byId);

    await expectProblem(await api(svc.url, 'POST', '/api/captions', { imageId: image.imageId, result: {} }), 400, /perspectiveId or perspective/);
    await expectProblem(await api(svc.url, 'POST', '/api/captions', { imageId: image.imageId, perspective: 'art_critic', perspectiveId: art.perspectiveId, result: {} }), 400);
    const unknown = await expectProblem(await api(svc.url, 'POST', '/api/captions', { imageId: UNKNOWN, perspective: 'nope', result: {} }), 400);
    expect(unknown.errors.map((e: { path: string }) => e.path)).toEqual(['imageId', 'perspective']);

    const corrected = await ok(await api(svc.url, 'PATCH', `/api/captions/${byId.captionId}`, { result: { a: 2 }, model: 'human', rawText: null }));
    expect(corrected).toEqual({ ...byId, result: { a: 2 }, model: 'human', rawText: null });
    await expectProblem(await api(svc.url, 'PATCH', `/api/captions/${byId.captionId}`, {}), 400, /at least one/);
    await expectProblem(await api(svc.url, 'PATCH', `/api/captions/${UNKNOWN}`, { model: 'x' }), 404);

    expect(await svc.trpc.captions.delete.mutate({ captionId: byId.captionId })).toEqual({ deleted: true, captionId: byId.captionId });
    await expectProblem(await api(svc.url, 'GET', `/api/captions/${byId.captionId}`), 404);
    await expectProblem(await api(svc.url, 'DELETE', `/api/captions/${byId.captionId}`), 404);
  });
});

describe('the batch routes beside /api/perspectives/*', () => {
  it('still answer, and the data routes take only UUIDs where the batch segment is', async () => {
    const job = await createJob(svc.url, { perspectives: ['storytelling'], imagePaths: [IMAGES[0]] });
    const list = await getOk(svc.url, '/api/perspectives/batch/list');
    expect(list.items.map((j: { jobId: string }) => j.jobId)).toContain(job.jobId);
    expect(await getOk(svc.url, '/api/perspectives/batch/statistics')).toHaveProperty('jobs');
    expect(await getOk(svc.url, `/api/perspectives/batch/status/${job.jobId}`)).toMatchObject({ job: { jobId: job.jobId } });
    expect((await getOk(svc.url, `/api/perspectives/batch/items/${job.jobId}/list`)).total).toBe(1);
    expect(await ok(await api(svc.url, 'POST', '/api/perspectives/batch/analyze-images', { imagePaths: [IMAGES[0]], perspectives: ['storytelling'] }))).toMatchObject({ totalPairs: 1 });
    expect(await ok(await api(svc.url, 'POST', `/api/perspectives/batch/cancel/${job.jobId}`))).toMatchObject({ status: 'cancelled' });
    // `batch` alone is not a perspective id.
    await expectProblem(await api(svc.url, 'GET', '/api/perspectives/batch'), 400, /perspective id/);
    expect((await getOk(svc.url, '/api/perspectives')).total).toBeGreaterThan(0);
  });
});

describe('the OpenAPI document', () => {
  const DATA = [
    ['get', '/api/images'],
    ['post', '/api/images'],
    ['get', '/api/images/{imageId}'],
    ['patch', '/api/images/{imageId}'],
    ['delete', '/api/images/{imageId}'],
    ['get', '/api/images/{imageId}/latest-captions'],
    ['get', '/api/datasets'],
    ['post', '/api/datasets'],
    ['get', '/api/datasets/{datasetId}'],
    ['patch', '/api/datasets/{datasetId}'],
    ['delete', '/api/datasets/{datasetId}'],
    ['get', '/api/datasets/{datasetId}/images'],
    ['post', '/api/datasets/{datasetId}/images'],
    ['delete', '/api/datasets/{datasetId}/images/{imageId}'],
    ['get', '/api/perspectives'],
    ['post', '/api/perspectives'],
    ['get', '/api/perspectives/{perspectiveId}'],
    ['patch', '/api/perspectives/{perspectiveId}'],
    ['delete', '/api/perspectives/{perspectiveId}'],
    ['get', '/api/perspectives/{perspectiveId}/captions'],
    ['get', '/api/perspectives/{perspectiveId}/versions'],
    ['get', '/api/perspectives/{perspectiveId}/versions/{revision}'],
    ['get', '/api/captions'],
    ['post', '/api/captions'],
    ['get', '/api/captions/{captionId}'],
    ['patch', '/api/captions/{captionId}'],
    ['delete', '/api/captions/{captionId}'],
    ['post', '/api/captions/generate'],
    ['post', '/api/datasets/{datasetId}/export-captions'],
    ['get', '/api/providers'],
    ['post', '/api/providers'],
    ['get', '/api/providers/{providerId}'],
    ['patch', '/api/providers/{providerId}'],
    ['delete', '/api/providers/{providerId}'],
  ] as const;

  it('covers every data endpoint, with its schemas and problem-details errors', () => {
    type Operation = { summary?: string; description?: string; tags?: string[]; responses: Record<string, { content?: Record<string, unknown> }> };
    const doc = JSON.parse(renderOpenApiDocument()) as { paths: Record<string, Record<string, Operation>> };
    const documented = Object.entries(doc.paths).flatMap(([p, ops]) =>
      Object.keys(ops).filter(() => /^\/api\/(images|datasets|captions|providers|perspectives(?!\/batch))/.test(p)).map((m) => `${m} ${p}`),
    );
    expect(documented.sort()).toEqual(DATA.map(([m, p]) => `${m} ${p}`).sort());
    for (const [method, route] of DATA) {
      const operation = doc.paths[route]![method]!;
      expect(operation.summary, route).toBeTruthy();
      expect(operation.description, route).toBeTruthy();
      expect(operation.tags?.[0], route).toBe(route.split('/')[2]);
      expect(operation.responses['200']?.content?.['application/json'], route).toBeDefined();
      const errors = Object.entries(operation.responses).filter(([status]) => Number(status) >= 400);
      expect(errors.map(([status]) => status), route).toContain('400');
      for (const [, response] of errors) expect(response.content?.['application/problem+json'], route).toBeDefined();
    }
  });
});
