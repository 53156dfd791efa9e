import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONFIG, countRows, createJob, DATASET, finishItem, IMAGES, inlineProvider, itemIds } from '../helpers/fixtures.js';
import { waitFor } from '../helpers/jobs.js';
import { api, startTestService, type TestService } from '../helpers/service.js';

let svc: TestService;
beforeAll(async () => {
  svc = await startTestService({ env: { SECRETS_KEY: '11'.repeat(32) } });
});
afterAll(async () => svc?.close());

const CREATE = '/api/perspectives/batch/create';

async function tableCounts() {
  return {
    jobs: await countRows(svc.db, 'job_queue.caption_jobs'),
    items: await countRows(svc.db, 'job_queue.job_items'),
    deps: await countRows(svc.db, 'job_queue.job_dependencies'),
    // Not the CAPTION_CREATED events that earlier jobs' captions become, a second after they finish.
    events: (await svc.db.execute<{ n: number }>(sql`
      select count(*)::int as n from job_queue.outbox where not (type = 'CAPTION_CREATED' and data->>'source' = 'job')`)).rows[0]!.n,
  };
}

/** Posts a create that must be refused with `status`; asserts nothing was written. */
async function expectRefused(body: unknown, status = 400) {
  const before = await tableCounts();
  const response = await api(svc.url, 'POST', CREATE, body);
  expect(response.status, JSON.stringify(response.body)).toBe(status);
  expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  expect(response.body).toMatchObject({ status, type: 'about:blank' });
  expect(typeof response.body.detail).toBe('string');
  expect(JSON.stringify(response.body)).not.toMatch(/ at .*\.ts:\d+|select |insert /i);
  expect(await tableCounts()).toEqual(before);
  return response.body as { detail: string; errors?: { path: string; message: string }[] };
}

describe('create: the four job types', () => {
  it('MULTI_PERSPECTIVE makes every image × every perspective, in order', async () => {
    const job = await createJob(svc.url, {
      perspectives: ['art_critic', 'storytelling'],
      imagePaths: [IMAGES[3], IMAGES[0], IMAGES[3]],
      priority: 7,
      userId: 'ada',
    });
    expect(job).toMatchObject({ type: 'MULTI_PERSPECTIVE', status: 'pending', priority: 7, totalImages: 4, userId: 'ada' });
    const { rows } = await svc.db.execute<{ image_path: string; perspective: string; status: string }>(
      sql`select image_path, perspective, status from job_queue.job_items where job_id = ${job.jobId} order by seq`,
    );
    expect(rows).toEqual([
      { image_path: IMAGES[0], perspective: 'art_critic', status: 'pending' },
      { image_path: IMAGES[0], perspective: 'storytelling', status: 'pending' },
      { image_path: IMAGES[3], perspective: 'art_critic', status: 'pending' },
      { image_path: IMAGES[3], perspective: 'storytelling', status: 'pending' },
    ]);
  });

  it('DATASET_PERSPECTIVE takes every image of the dataset, by name or id', async () => {
    const byName = await createJob(svc.url, { type: 'DATASET_PERSPECTIVE', imagePaths: undefined, datasetName: DATASET, perspectives: ['art_critic', 'storytelling', 'graph_caption'] });
    expect(byName.totalImages).toBe(IMAGES.length * 3);
    expect(byName.datasetId).toMatch(/^[0-9a-f-]{36}$/);
    const byId = await createJob(svc.url, { type: 'DATASET_PERSPECTIVE', imagePaths: undefined, datasetId: byName.datasetId });
    expect(byId.totalImages).toBe(IMAGES.length);
  });

  it('BACKFILL makes only the pairs with no caption and none queued', async () => {
    // Caption two images for custom_caption (the example workspace has none) through a finished job.
    const first = await createJob(svc.url, { perspectives: ['custom_caption'], imagePaths: IMAGES.slice(0, 2) });
    for (const id of await itemIds(svc.db, first.jobId)) await finishItem(svc.url, id, 'completed');
    // A queued pair is not captioned yet, but must not be queued twice.
    await createJob(svc.url, { perspectives: ['custom_caption'], imagePaths: [IMAGES[2]] });

    const backfill = await createJob(svc.url, { type: 'BACKFILL', imagePaths: undefined, datasetName: DATASET, perspectives: ['custom_caption'] });
    expect(backfill.totalImages).toBe(IMAGES.length - 3);
    const { rows } = await svc.db.execute<{ image_path: string }>(
      sql`select image_path from job_queue.job_items where job_id = ${backfill.jobId} order by image_path`,
    );
    expect(rows.map((r) => r.image_path)).toEqual(IMAGES.slice(3));
  });

  it('BACKFILL with nothing missing is refused and writes nothing', async () => {
    const job = await createJob(svc.url, { perspectives: ['time_tags'], imagePaths: [IMAGES[4]] });
    for (const id of await itemIds(svc.db, job.jobId)) await finishItem(svc.url, id, 'completed');
    const problem = await expectRefused({ type: 'BACKFILL', perspectives: ['time_tags'], imagePaths: [IMAGES[4]], config: CONFIG });
    expect(problem.detail).toMatch(/no items/);
  });

  it('DEPENDENCY_CHAIN records its dependencies and needs them', async () => {
    const a = await createJob(svc.url, {});
    const b = await createJob(svc.url, {});
    const chain = await createJob(svc.url, { type: 'DEPENDENCY_CHAIN', dependsOn: [a.jobId, b.jobId] });
    expect([...(chain.dependsOn as string[])].sort()).toEqual([a.jobId, b.jobId].sort());
    const problem = await expectRefused({ type: 'DEPENDENCY_CHAIN', perspectives: ['art_critic'], imagePaths: [IMAGES[0]], config: CONFIG });
    expect(problem.errors).toContainEqual({ path: 'dependsOn', message: 'DEPENDENCY_CHAIN needs dependsOn' });
    const unknown = '00000000-0000-4000-8000-000000000000';
    const missing = await expectRefused({ type: 'DEPENDENCY_CHAIN', dependsOn: [unknown], perspectives: ['art_critic'], imagePaths: [IMAGES[0]], config: CONFIG });
    expect(missing.errors).toContainEqual({ path: 'dependsOn.0', message: `unknown job ${unknown}` });
  });

  it('is the same operation over tRPC', async () => {
    const job = await svc.trpc.batch.create.mutate({
      type: 'MULTI_PERSPECTIVE',
      perspectives: ['art_critic'],
      imagePaths: [IMAGES[1]],
      config: CONFIG,
    });
    expect(job.totalImages).toBe(1);
    expect(job.priority).toBe(100);
    await expect(
      svc.trpc.batch.create.mutate({ type: 'MULTI_PERSPECTIVE', perspectives: ['nope'], imagePaths: [IMAGES[1]], config: CONFIG }),
    ).rejects.toMatchObject({ data: { code: 'BAD_REQUEST', errors: [{ path: 'perspectives.0' }] } });
  });
});

describe('create: idempotency and secrets', () => {
  it('a repeated idempotencyKey returns the first job and writes nothing more', async () => {
    const body = { idempotencyKey: 'nightly-2026-11-28', imagePaths: IMAGES.slice(0, 3) };
    const first = await createJob(svc.url, body);
    const before = await tableCounts();
    const again = await createJob(svc.url, body);
    expect(again.jobId).toBe(first.jobId);
    expect(await tableCounts()).toEqual(before);
    // Concurrent repeats converge on one job too.
    const racing = await Promise.all([1, 2, 3, 4].map(() => createJob(svc.url, { ...body, idempotencyKey: 'race' })));
    expect(new Set(racing.map((j) => j.jobId)).size).toBe(1);
  });

  it('providerConfig is stored but never returned', async () => {
    const job = await createJob(svc.url, { config: { ...CONFIG, providerConfig: inlineProvider('sk-very-secret'), temperature: 0.4 } });
    expect(job.config).toEqual({ ...CONFIG, temperature: 0.4, hasProviderConfig: true });
    const status = await api(svc.url, 'GET', `/api/perspectives/batch/status/${job.jobId}`);
    expect(JSON.stringify(status.body)).not.toContain('sk-very-secret');
  });
});

describe('create: refused input writes nothing', () => {
  const valid = { type: 'MULTI_PERSPECTIVE', perspectives: ['art_critic'], imagePaths: [IMAGES[0]], config: CONFIG };

  it('names unknown perspectives, images and datasets', async () => {
    const problem = await expectRefused({ ...valid, perspectives: ['art_critic', 'nope'], imagePaths: [IMAGES[0], 'datasets/os_img/missing.jpg'] });
    expect(problem.errors).toEqual([
      { path: 'perspectives.1', message: 'unknown perspective "nope"' },
      { path: 'imagePaths.1', message: expect.stringContaining('unknown image "datasets/os_img/missing.jpg"') },
    ]);
    const dataset = await expectRefused({ ...valid, type: 'DATASET_PERSPECTIVE', imagePaths: undefined, datasetName: 'no-such-set' });
    expect(dataset.errors).toEqual([{ path: 'datasetName', message: 'unknown dataset "no-such-set"' }]);
  });

  it('names unknown images when they are the only fault (found by the item insert, which is rolled back)', async () => {
    const missing = 'datasets/os_img/missing.jpg';
    const problem = await expectRefused({ ...valid, imagePaths: [IMAGES[0], missing, IMAGES[1], 'datasets\\os_img\\missing.jpg', 'datasets/os_img/gone.jpg'] });
    expect(problem.errors).toEqual([
      { path: 'imagePaths.1', message: expect.stringContaining(`unknown image "${missing}"`) },
      { path: 'imagePaths.3', message: expect.stringContaining('unknown image "datasets\\\\os_img\\\\missing.jpg"') },
      { path: 'imagePaths.4', message: expect.stringContaining('unknown image "datasets/os_img/gone.jpg"') },
    ]);
    // The same paths, registered, make a job: normalised and de-duplicated.
    const job = await createJob(svc.url, { ...valid, imagePaths: [IMAGES[0], `./${IMAGES[0]}`, IMAGES[1].replaceAll('/', '\\')] });
    expect(job.totalImages).toBe(2);
  });

  it('refuses paths that leave the workspace', async () => {
    for (const bad of ['../etc/passwd', '/etc/passwd', 'datasets/../../x.jpg', 'C:\\windows\\x.jpg', 'datasets/os_img/\0x.jpg']) {
      const problem = await expectRefused({ ...valid, imagePaths: [bad] });
      expect(problem.errors?.[0]?.path).toBe('imagePaths.0');
    }
  });

  it('names each malformed field', async () => {
    const cases: [unknown, string][] = [
      [{ ...valid, type: 'EVERYTHING' }, 'type'],
      [{ ...valid, perspectives: 'art_critic' }, 'perspectives'],
      [{ ...valid, perspectives: [] }, 'perspectives'],
      [{ ...valid, priority: 1e20 }, 'priority'],
      [{ ...valid, priority: 1.5 }, 'priority'],
      [{ ...valid, priority: '1' }, 'priority'],
      [{ ...valid, config: { provider: 'gemini' } }, 'config.model'],
      [{ ...valid, config: { ...CONFIG, temperature: 9 } }, 'config.temperature'],
      [{ ...valid, imagePaths: undefined }, 'imagePaths'],
      [{ ...valid, imagePaths: [IMAGES[0], ''] }, 'imagePaths.1'],
      [{ ...valid, imagePaths: ['x'.repeat(1025)] }, 'imagePaths.0'],
      [{ ...valid, imagePaths: [7, ''] }, 'imagePaths.1'],
      [{ ...valid, datasetName: DATASET }, 'imagePaths'],
      [{ ...valid, dependsOn: ['not-a-uuid'] }, 'dependsOn.0'],
      [{ ...valid, surprise: true }, '(input)'],
      [{ ...valid, type: undefined }, 'type'],
      [[], 'type'],
      [null, 'type'],
    ];
    for (const [body, path] of cases) {
      const problem = await expectRefused(body);
      expect(problem.errors?.map((e) => e.path), JSON.stringify(body)).toContain(path);
    }
  });

  it('answers malformed JSON, wrong media types and oversize bodies with problems', async () => {
    const badJson = await fetch(`${svc.url}${CREATE}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"type":' });
    expect(badJson.status).toBe(400);
    expect(await badJson.json()).toMatchObject({ status: 400, detail: 'request body is not valid JSON' });

    const text = await fetch(`${svc.url}${CREATE}`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello' });
    expect(text.status).toBe(415);
    expect(text.headers.get('content-type')).toMatch(/problem\+json/);

    const before = await tableCounts();
    const huge = JSON.stringify({ ...valid, imagePaths: Array.from({ length: 60_000 }, (_, i) => `datasets/os_img/${'x'.repeat(20)}${i}.jpg`) });
    expect(huge.length).toBeGreaterThan(svc.config.BODY_LIMIT_BYTES);
    const tooLarge = await fetch(`${svc.url}${CREATE}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: huge });
    expect(tooLarge.status).toBe(413);
    expect(await tooLarge.json()).toMatchObject({ status: 413, code: 'PAYLOAD_TOO_LARGE' });
    expect(await tableCounts()).toEqual(before);
  });
});

/** Waits until the item writer has written every item of the job (src/jobs/item-writer.ts). */
async function allItemsWritten(jobId: string, total: number) {
  await waitFor(`${total} items of ${jobId}`, async () => (await itemIds(svc.db, jobId)).length === total, 30_000);
  expect(await countRows(svc.db, 'job_queue.job_item_chunks')).toBe(0);
}

describe('create: a big job, its first chunk in the create and the rest just after', () => {
  it('creates a 10,000-item job with every item', async () => {
    // 2,500 registered images × 4 perspectives. Rows are inserted directly: only their paths matter here.
    await svc.db.execute(sql`
      with ds as (insert into core_schema.datasets (name) values ('big') returning id),
           im as (insert into core_schema.images (path) select 'datasets/big/' || g || '.jpg' from generate_series(1, 2500) g returning id)
      insert into core_schema.dataset_images (dataset_id, image_id) select ds.id, im.id from ds, im`);
    const job = await createJob(svc.url, {
      type: 'DATASET_PERSPECTIVE',
      imagePaths: undefined,
      datasetName: 'big',
      perspectives: ['art_critic', 'storytelling', 'graph_caption', 'poetic_metaphor'],
    });
    expect(job.totalImages).toBe(10_000);
    await allItemsWritten(job.jobId, 10_000);
    const { rows } = await svc.db.execute<{ n: number; pairs: number }>(sql`
      select count(*)::int as n, count(distinct (image_id, perspective))::int as pairs
      from job_queue.job_items where job_id = ${job.jobId}`);
    expect(rows[0]).toEqual({ n: 10_000, pairs: 10_000 });
  });

  it('gives items time-ordered ids (UUIDv7), in insertion order and after those of earlier jobs', async () => {
    // 2,500 images × 7 perspectives: 17,500 items, past 2^14, so every part of the id's counter is used.
    await svc.db.execute(sql`
      with ds as (insert into core_schema.datasets (name) values ('ordered') returning id),
           im as (insert into core_schema.images (path) select 'datasets/ordered/' || g || '.jpg' from generate_series(1, 2500) g returning id)
      insert into core_schema.dataset_images (dataset_id, image_id) select ds.id, im.id from ds, im`);
    const perspectives = ['art_critic', 'storytelling', 'graph_caption', 'poetic_metaphor', 'time_tags', 'style_preset', 'locality_graph'];
    const ids = async (jobId: string) => {
      const { rows } = await svc.db.execute<{ id: string }>(sql`select id from job_queue.job_items where job_id = ${jobId} order by seq`);
      return rows.map((r) => r.id);
    };
    const started = Date.now();
    const create = async () => {
      const { jobId } = await createJob(svc.url, { type: 'DATASET_PERSPECTIVE', imagePaths: undefined, datasetName: 'ordered', perspectives });
      await allItemsWritten(jobId, 17_500);
      return ids(jobId);
    };
    const first = await create();
    const second = await create();
    expect(first).toHaveLength(17_500);
    for (const id of [...first, ...second]) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    // Ascending in insertion order within each job, and the second job's after the first's.
    const all = [...first, ...second];
    expect(all.findIndex((id, i) => i > 0 && id <= all[i - 1]!)).toBe(-1);
    // The leading 48 bits are the creation time in milliseconds.
    const at = Number.parseInt(first[0]!.replace('-', '').slice(0, 12), 16);
    expect(at).toBeGreaterThanOrEqual(started - 1000);
    expect(at).toBeLessThanOrEqual(Date.now() + 1000);
  });

  it('refuses a job over MAX_JOB_ITEMS before writing anything', async () => {
    const small = await startTestService({ env: { MAX_JOB_ITEMS: '5' } });
    try {
      const response = await api(small.url, 'POST', CREATE, {
        type: 'DATASET_PERSPECTIVE',
        datasetName: DATASET,
        perspectives: ['art_critic'],
        config: CONFIG,
      });
      expect(response.status).toBe(400);
      expect(response.body.detail).toMatch(/7 items, more than the limit of 5/);
      // Over the limit with unknown images: the images are what is wrong.
      const unknown = await api(small.url, 'POST', CREATE, {
        type: 'MULTI_PERSPECTIVE',
        imagePaths: [...IMAGES, 'datasets/os_img/missing.jpg'],
        perspectives: ['art_critic'],
        config: CONFIG,
      });
      expect(unknown.status).toBe(400);
      expect(unknown.body.errors).toEqual([{ path: `imagePaths.${IMAGES.length}`, message: expect.stringContaining('unknown image') }]);
      expect(await countRows(small.db, 'job_queue.caption_jobs')).toBe(0);
    } finally {
      await small.close();
    }
  });
});
