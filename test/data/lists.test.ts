/**
 * Every list's filters, sorts and pagination against a brute-force computation over the same rows
 * (read straight from the tables), and the 400s for unknown sort keys and bad filters.
 */
import { sql } from 'drizzle-orm';
import { TRPCClientError } from '@trpc/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createJob, finishItem, IMAGES, itemIds } from '../helpers/fixtures.js';
import { bruteSort, getOk, page, qs, type Key } from '../helpers/data.js';
import { api, startTestService, type TestService } from '../helpers/service.js';

let svc: TestService;

/** Microsecond timestamps as sortable text, so ties and order are PostgreSQL's own. */
const US = (column: string) => sql.raw(`to_char(${column} at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')`);

type ImageTruth = { id: string; path: string; format: string | null; sizeBytes: number | null; width: number | null; height: number | null; createdAt: string; updatedAt: string; datasets: string[] };
type DatasetTruth = { id: string; name: string; createdAt: string; updatedAt: string; imageCount: number };
type PerspectiveTruth = { id: string; name: string; displayName: string; module: string; priority: number; tags: string[]; enabled: boolean; deprecated: boolean; createdAt: string; updatedAt: string };
type CaptionTruth = { id: string; imageId: string; imagePath: string; perspectiveId: string; perspective: string; revision: number | null; jobId: string | null; model: string | null; provider: string | null; createdAt: string; createdIso: string };

async function imagesTruth(): Promise<ImageTruth[]> {
  const { rows } = await svc.db.execute<ImageTruth>(sql`
    select i.id, i.path, i.format, i.size_bytes as "sizeBytes", i.width, i.height, ${US('i.created_at')} as "createdAt",
           ${US('i.updated_at')} as "updatedAt",
           coalesce(array(select dataset_id::text from core_schema.dataset_images where image_id = i.id), '{}') as datasets
    from core_schema.images i`);
  return rows;
}

async function datasetsTruth(): Promise<DatasetTruth[]> {
  const { rows } = await svc.db.execute<DatasetTruth>(sql`
    select d.id, d.name, ${US('d.created_at')} as "createdAt", ${US('d.updated_at')} as "updatedAt",
           (select count(*)::int from core_schema.dataset_images where dataset_id = d.id) as "imageCount"
    from core_schema.datasets d`);
  return rows;
}

async function perspectivesTruth(): Promise<PerspectiveTruth[]> {
  const { rows } = await svc.db.execute<PerspectiveTruth>(sql`
    select id, name, display_name as "displayName", module, priority, tags, enabled, deprecated,
           ${US('created_at')} as "createdAt", ${US('updated_at')} as "updatedAt"
    from core_schema.perspectives`);
  return rows;
}

async function captionsTruth(): Promise<CaptionTruth[]> {
  const { rows } = await svc.db.execute<CaptionTruth>(sql`
    select c.id, c.image_id as "imageId", i.path as "imagePath", c.perspective_id as "perspectiveId", p.name as perspective,
           c.perspective_revision as revision, c.job_id as "jobId", c.model, c.provider, ${US('c.created_at')} as "createdAt",
           to_char(c.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as "createdIso"
    from core_schema.captions c join core_schema.images i on i.id = c.image_id join core_schema.perspectives p on p.id = c.perspective_id`);
  return rows;
}

/** Reads every page of `route` with `limit` and checks each one, and one page past the end, against `expected` ids. */
async function expectPages(route: string, params: Record<string, any>, expected: string[], idField: string, limit: number) {
  const pages = Math.max(1, Math.ceil(expected.length / limit));
  for (let p = 1; p <= pages + 1; p++) {
    const body = await getOk(svc.url, `${route}${qs({ ...params, page: p, limit })}`);
    const label = `${route} ${JSON.stringify(params)} page ${p}`;
    expect(body.total, label).toBe(expected.length);
    expect({ page: body.page, limit: body.limit }, label).toEqual({ page: p, limit });
    expect(body.items.map((i: Record<string, string>) => i[idField]), label).toEqual(page(expected, p, limit));
  }
}

async function expectBadRequest(route: string, field: string) {
  const response = await api(svc.url, 'GET', route);
  expect(response.status, `${route}: ${JSON.stringify(response.body)}`).toBe(400);
  expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  expect(response.body.errors?.map((e: { path: string }) => e.path) ?? [], route).toContain(field);
}

/** A small deterministic generator, so the seeded data is the same on every run. */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

let jobId: string;

beforeAll(async () => {
  svc = await startTestService();
  // 30 more images (records only) with ties and nulls in every sortable column.
  await svc.db.execute(sql`
    insert into core_schema.images (path, format, size_bytes, width, height, content_hash, created_at, updated_at)
    select 'datasets/synthetic/' || case when k % 7 = 0 then 'Cow-' else 'img-' end || lpad(k::text, 2, '0') || '.x',
           (array['jpg', 'png', 'webp', null])[k % 4 + 1],
           case when k % 5 = 0 then null else 1000 * (k % 7) end,
           case when k % 6 = 0 then null else 100 + (k % 4) * 10 end,
           case when k % 6 = 1 then null else 50 + (k % 3) * 10 end,
           md5(k::text),
           timestamptz '2025-01-01 00:00:00+00' + (k % 10) * interval '1 hour',
           timestamptz '2025-02-01 00:00:00+00' + k * interval '1 minute'
    from generate_series(0, 29) k`);
  const synthetic = (await imagesTruth()).filter((i) => i.path.startsWith('datasets/synthetic/')).sort((a, b) => (a.path < b.path ? -1 : 1));
  const fixture = (await imagesTruth()).filter((i) => i.path.startsWith('datasets/os_img/'));
  const datasets: [string, string[]][] = [
    ['alpha', [...synthetic.filter((_, k) => k % 2 === 0), fixture[0]!, fixture[1]!].map((i) => i.id)],
    ['Beta', synthetic.filter((_, k) => k % 3 === 0).map((i) => i.id)],
    ['gamma', []],
    ['delta set', synthetic.slice(0, 5).map((i) => i.id)],
  ];
  for (const [name, imageIds] of datasets) {
    const created = await api(svc.url, 'POST', '/api/datasets', { name, imageIds });
    expect(created.status, JSON.stringify(created.body)).toBe(200);
  }
  for (const p of [
    { name: 'zeta_custom', module: 'custom', tags: ['a', 'b'], prompt: 'z', priority: 50 },
    { name: 'eta_custom', module: 'custom', tags: ['b'], prompt: 'e', priority: 5, deprecated: true, replacement: 'zeta_custom' },
    { name: 'Theta', displayName: 'ahead', module: 'extra', prompt: 't', enabled: false, priority: 30 },
  ]) {
    const created = await api(svc.url, 'POST', '/api/perspectives', p);
    expect(created.status, JSON.stringify(created.body)).toBe(200);
  }
  // Captions: from a job (item endpoint), through the API, and 150 written straight into the table.
  const job = await createJob(svc.url, { perspectives: ['art_critic'], imagePaths: [IMAGES[0], IMAGES[1]] });
  jobId = job.jobId;
  for (const id of await itemIds(svc.db, jobId)) await finishItem(svc.url, id, 'completed', { model: 'm-a', provider: 'openai' });
  for (const image of fixture.slice(2, 5)) {
    const created = await api(svc.url, 'POST', '/api/captions', { imageId: image.id, perspective: 'storytelling', result: { text: 'x' } });
    expect(created.status, JSON.stringify(created.body)).toBe(200);
  }
  const images = (await imagesTruth()).sort((a, b) => (a.id < b.id ? -1 : 1));
  const perspectives = (await perspectivesTruth()).sort((a, b) => (a.id < b.id ? -1 : 1));
  const random = rng(7);
  const rows = Array.from({ length: 150 }, (_, n) => ({
    image: images[Math.floor(random() * images.length)]!.id,
    perspective: perspectives[Math.floor(random() * 8)]!.id,
    model: [null, 'm-a', 'm-b', 'M-c'][n % 4]!,
    provider: ['openai', 'gemini', null][n % 3]!,
    minute: n % 40,
    revision: n % 5 === 0 ? 2 : 1,
  }));
  await svc.db.execute(sql`
    insert into core_schema.captions (image_id, perspective_id, perspective_version, perspective_revision, model, provider, result, created_at)
    select r.image, r.perspective, '1', r.revision, r.model, r.provider, jsonb_build_object('n', r.ord),
           timestamptz '2025-06-01 00:00:00+00' + r.minute * interval '1 minute'
    from jsonb_to_recordset(${JSON.stringify(rows.map((r, ord) => ({ ...r, ord })))}::jsonb)
         as r(image uuid, perspective uuid, model text, provider text, minute int, revision int, ord int)`);
});
afterAll(async () => svc?.close());

const ORDERS = ['asc', 'desc'] as const;

describe('images list', () => {
  const keys: Record<string, (i: ImageTruth) => Key> = {
    path: (i) => i.path,
    createdAt: (i) => i.createdAt,
    updatedAt: (i) => i.updatedAt,
    sizeBytes: (i) => i.sizeBytes,
    width: (i) => i.width,
    height: (i) => i.height,
    format: (i) => i.format,
  };

  it('filters, sorts (nulls last, ties by path) and pages like a brute-force computation', async () => {
    const all = await imagesTruth();
    const { rows: pairs } = await svc.db.execute<{ imageId: string; name: string }>(sql`
      select distinct c.image_id as "imageId", p.name from core_schema.captions c join core_schema.perspectives p on p.id = c.perspective_id`);
    const captioned = (name: string) => new Set(pairs.filter((p) => p.name === name).map((p) => p.imageId));
    const alpha = (await datasetsTruth()).find((d) => d.name === 'alpha')!;
    const cases: [Record<string, any>, (i: ImageTruth) => boolean][] = [
      [{}, () => true],
      [{ datasetId: alpha.id }, (i) => i.datasets.includes(alpha.id)],
      [{ format: ['png', 'webp'] }, (i) => i.format === 'png' || i.format === 'webp'],
      [{ pathContains: 'cow' }, (i) => i.path.toLowerCase().includes('cow')],
      [{ withCaption: 'art_critic' }, (i) => captioned('art_critic').has(i.id)],
      [{ withoutCaption: 'art_critic', format: 'jpg' }, (i) => !captioned('art_critic').has(i.id) && i.format === 'jpg'],
      [{ datasetId: alpha.id, withoutCaption: 'storytelling' }, (i) => i.datasets.includes(alpha.id) && !captioned('storytelling').has(i.id)],
    ];
    for (const [params, keep] of cases) {
      for (const [sort, key] of Object.entries(keys)) {
        for (const order of ORDERS) {
          const expected = bruteSort(all.filter(keep), key, [(i) => i.path], order).map((i) => i.id);
          await expectPages('/api/images', { ...params, sort, order }, expected, 'imageId', 9);
        }
      }
    }
  });

  it('lists a dataset’s images the same way', async () => {
    const all = await imagesTruth();
    const beta = (await datasetsTruth()).find((d) => d.name === 'Beta')!;
    const expected = bruteSort(all.filter((i) => i.datasets.includes(beta.id) && i.format !== null), (i) => i.width, [(i) => i.path], 'desc');
    await expectPages(`/api/datasets/${beta.id}/images`, { sort: 'width', order: 'desc', format: ['jpg', 'png', 'webp'] }, expected.map((i) => i.id), 'imageId', 4);
  });

  it('refuses unknown sort keys and bad filters with 400, naming the field', async () => {
    await expectBadRequest('/api/images?sort=name', 'sort');
    await expectBadRequest('/api/images?order=up', 'order');
    await expectBadRequest('/api/images?page=0', 'page');
    await expectBadRequest('/api/images?limit=101', 'limit');
    await expectBadRequest('/api/images?limit=ten', 'limit');
    await expectBadRequest('/api/images?format=JPG', 'format.0');
    await expectBadRequest('/api/images?datasetId=os_img', 'datasetId');
    await expectBadRequest('/api/images?withCaption=no_such_perspective', 'withCaption');
    await expectBadRequest('/api/images?withoutCaption=not%20a%20name', 'withoutCaption');
    await expectBadRequest('/api/datasets/not-a-uuid/images', 'datasetId');
    const unknownDataset = await api(svc.url, 'GET', '/api/datasets/00000000-0000-4000-8000-000000000000/images');
    expect(unknownDataset.status).toBe(404);
  });

  it('answers the typed client the same as REST, and refuses its bad input as BAD_REQUEST', async () => {
    const rest = await getOk(svc.url, `/api/images${qs({ sort: 'sizeBytes', order: 'desc', limit: 5, page: 2 })}`);
    expect(await svc.trpc.images.list.query({ sort: 'sizeBytes', order: 'desc', limit: 5, page: 2 })).toEqual(rest);
    const error = await svc.trpc.images.list.query({ sort: 'name' as never }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TRPCClientError);
    expect((error as TRPCClientError<never>).data).toMatchObject({ code: 'BAD_REQUEST', httpStatus: 400 });
  });
});

describe('datasets list', () => {
  it('filters by name, sorts by name (code point order), dates and image count, and pages', async () => {
    const all = await datasetsTruth();
    const keys: Record<string, (d: DatasetTruth) => Key> = {
      name: (d) => d.name,
      createdAt: (d) => d.createdAt,
      updatedAt: (d) => d.updatedAt,
      imageCount: (d) => d.imageCount,
    };
    const cases: [Record<string, any>, (d: DatasetTruth) => boolean][] = [
      [{}, () => true],
      [{ name: 'alpha' }, (d) => d.name === 'alpha'],
      [{ nameContains: 'A' }, (d) => d.name.toLowerCase().includes('a')],
    ];
    for (const [params, keep] of cases) {
      for (const [sort, key] of Object.entries(keys)) {
        for (const order of ORDERS) {
          const expected = bruteSort(all.filter(keep), key, [(d) => d.name], order).map((d) => d.id);
          await expectPages('/api/datasets', { ...params, sort, order }, expected, 'datasetId', 2);
        }
      }
    }
    const byName = await getOk(svc.url, `/api/datasets${qs({ sort: 'name' })}`);
    expect(byName.items.map((d: { name: string }) => d.name)).toEqual(['Beta', 'alpha', 'delta set', 'gamma', 'os_img']);
  });

  it('refuses unknown sort keys and bad filters with 400', async () => {
    await expectBadRequest('/api/datasets?sort=size', 'sort');
    await expectBadRequest(`/api/datasets?nameContains=${'x'.repeat(129)}`, 'nameContains');
    await expectBadRequest('/api/datasets?limit=0', 'limit');
  });
});

describe('perspectives list (served from the in-memory cache)', () => {
  it('filters by module, tags, enabled, deprecated and name, sorts and pages like a brute-force computation', async () => {
    const all = await perspectivesTruth();
    const keys: Record<string, (p: PerspectiveTruth) => Key> = {
      name: (p) => p.name,
      displayName: (p) => p.displayName,
      module: (p) => p.module,
      priority: (p) => p.priority,
      createdAt: (p) => p.createdAt,
      updatedAt: (p) => p.updatedAt,
    };
    const cases: [Record<string, any>, (p: PerspectiveTruth) => boolean][] = [
      [{}, () => true],
      [{ module: ['custom', 'core'] }, (p) => p.module === 'custom' || p.module === 'core'],
      [{ tag: 'b' }, (p) => p.tags.includes('b')],
      [{ tag: ['a', 'b'] }, (p) => p.tags.includes('a') && p.tags.includes('b')],
      [{ enabled: 'false' }, (p) => !p.enabled],
      [{ enabled: 'true', deprecated: 'false' }, (p) => p.enabled && !p.deprecated],
      [{ deprecated: 'true' }, (p) => p.deprecated],
      [{ nameContains: 'CAPTION' }, (p) => p.name.toLowerCase().includes('caption')],
    ];
    for (const [params, keep] of cases) {
      for (const [sort, key] of Object.entries(keys)) {
        for (const order of ORDERS) {
          const expected = bruteSort(all.filter(keep), key, [(p) => p.name], order).map((p) => p.id);
          await expectPages('/api/perspectives', { ...params, sort, order }, expected, 'perspectiveId', 6);
        }
      }
    }
  });

  it('refuses unknown sort keys and bad filters with 400', async () => {
    await expectBadRequest('/api/perspectives?sort=revision', 'sort');
    await expectBadRequest('/api/perspectives?enabled=maybe', 'enabled');
    await expectBadRequest('/api/perspectives?deprecated=1', 'deprecated');
    await expectBadRequest('/api/perspectives?order=DESC', 'order');
  });
});

describe('captions list', () => {
  it('filters by image, perspective, revision, job, model, provider and time, sorts and pages like a brute-force computation', async () => {
    const all = await captionsTruth();
    // The seeded 155, and the example workspace's 49 (7 perspectives × 7 images, imported from its captions.jsonl).
    expect(all.length).toBe(155 + 49);
    const keys: Record<string, ((c: CaptionTruth) => Key) | null> = {
      createdAt: null,
      perspective: (c) => c.perspective,
      imagePath: (c) => c.imagePath,
      model: (c) => c.model,
      provider: (c) => c.provider,
    };
    const someImage = all[17]!.imageId;
    const somePerspective = all[42]!.perspectiveId;
    const from = '2025-06-01T00:10:00.000Z';
    const to = '2025-06-01T00:25:00.000Z';
    const cases: [Record<string, any>, (c: CaptionTruth) => boolean][] = [
      [{}, () => true],
      [{ imageId: someImage }, (c) => c.imageId === someImage],
      [{ perspectiveId: somePerspective }, (c) => c.perspectiveId === somePerspective],
      [{ perspective: ['art_critic', 'storytelling'] }, (c) => c.perspective === 'art_critic' || c.perspective === 'storytelling'],
      [{ perspectiveRevision: 2 }, (c) => c.revision === 2],
      [{ jobId }, (c) => c.jobId === jobId],
      [{ model: 'm-a', provider: 'openai' }, (c) => c.model === 'm-a' && c.provider === 'openai'],
      [{ createdFrom: from, createdTo: to }, (c) => c.createdIso >= from && c.createdIso < to],
      [{ provider: 'gemini', createdFrom: from }, (c) => c.provider === 'gemini' && c.createdIso >= from],
    ];
    for (const [params, keep] of cases) {
      for (const [sort, key] of Object.entries(keys)) {
        for (const order of ORDERS) {
          const ties = [(c: CaptionTruth) => c.createdAt, (c: CaptionTruth) => c.id];
          const expected = key
            ? bruteSort(all.filter(keep), key, ties, order)
            : bruteSort(all.filter(keep), ties[0]!, [ties[1]!], order);
          await expectPages('/api/captions', { ...params, sort, order }, expected.map((c) => c.id), 'captionId', 40);
        }
      }
    }
  });

  it('lists a perspective’s captions the same way', async () => {
    const all = await captionsTruth();
    const storytelling = all.find((c) => c.perspective === 'storytelling')!.perspectiveId;
    const expected = bruteSort(all.filter((c) => c.perspectiveId === storytelling), (c) => c.model, [(c) => c.createdAt, (c) => c.id], 'asc');
    await expectPages(`/api/perspectives/${storytelling}/captions`, { sort: 'model' }, expected.map((c) => c.id), 'captionId', 7);
  });

  it('refuses unknown sort keys and bad filters with 400', async () => {
    await expectBadRequest('/api/captions?sort=result', 'sort');
    await expectBadRequest('/api/captions?createdFrom=yesterday', 'createdFrom');
    await expectBadRequest(`/api/captions${qs({ createdFrom: '2025-06-02T00:00:00Z', createdTo: '2025-06-01T00:00:00Z' })}`, 'createdFrom');
    await expectBadRequest('/api/captions?perspectiveRevision=0', 'perspectiveRevision');
    await expectBadRequest('/api/captions?jobId=42', 'jobId');
    await expectBadRequest('/api/captions?imageId=123', 'imageId');
    await expectBadRequest('/api/captions?perspective=a&perspective=not%20a%20name', 'perspective.1');
    await expectBadRequest('/api/perspectives/not-a-uuid/captions', 'perspectiveId');
  });
});
