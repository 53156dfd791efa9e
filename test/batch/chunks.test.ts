/**
 * Items written after the create (job_item_chunks and the item writer). The service here polls
 * only once every 10 minutes and has no dispatcher; the jobs are made with the database's
 * createJob, which (unlike the HTTP create) does not wake the writer: so the chunk rows stay
 * until a test writes them, and each test sees the state it sets up.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { failJobsWithBrokenDependencies } from '../../src/db/dispatch.js';
import { writeNextChunk } from '../../src/db/item-chunks.js';
import { createJob, type CreateJobInput } from '../../src/db/jobs.js';
import { CONFIG, DATASET, IMAGES } from '../helpers/fixtures.js';
import { waitFor } from '../helpers/jobs.js';
import { api, startTestService, type TestService } from '../helpers/service.js';

const CHUNK = 3;
const B = '/api/perspectives/batch';

let svc: TestService;
beforeAll(async () => {
  svc = await startTestService({ env: { POLL_INTERVAL_MS: '600000', JOB_ITEM_CHUNK: String(CHUNK) } });
});
afterAll(async () => svc?.close());

/** A job of every fixture image × `perspectives`, its first CHUNK items written. */
function create(perspectives: string[], more: Partial<CreateJobInput> = {}) {
  return createJob(
    svc.db,
    { type: 'MULTI_PERSPECTIVE', perspectives, imagePaths: [...IMAGES], priority: 100, config: CONFIG, ...more },
    { maxItems: 1000, chunkItems: CHUNK },
  );
}

async function items(jobId: string) {
  const { rows } = await svc.db.execute<{ id: string; imagePath: string; perspective: string; status: string }>(sql`
    select id, image_path as "imagePath", perspective, status from job_queue.job_items where job_id = ${jobId} order by seq`);
  return rows;
}

async function chunks(jobId: string) {
  const { rows } = await svc.db.execute<{ firstItem: number; n: number }>(sql`
    select first_item as "firstItem", cardinality(image_ids) as n from job_queue.job_item_chunks where job_id = ${jobId} order by first_item`);
  return rows;
}

/** Every pair in the job's order: images by path, then perspectives as listed. */
function expectedPairs(perspectives: string[]) {
  return [...IMAGES].sort().flatMap((path) => perspectives.map((perspective) => ({ imagePath: path, perspective })));
}

async function unwrittenGauge(): Promise<number> {
  const text = await (await fetch(`${svc.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('graphcap_job_items_unwritten '));
  return Number(line?.split(' ')[1]);
}

async function writeAll(): Promise<number[]> {
  const written: number[] = [];
  for (let n; (n = await writeNextChunk(svc.db)) > 0; ) written.push(n);
  return written;
}

describe('items written after the create', () => {
  it('the create writes the first chunk and keeps the rest as chunk rows; the writer turns them into items, in order', async () => {
    const perspectives = ['art_critic', 'storytelling'];
    const job = await create(perspectives);
    expect(job.totalImages).toBe(14);
    expect(await items(job.jobId)).toHaveLength(CHUNK);
    expect(await chunks(job.jobId)).toEqual([3, 6, 9, 12].map((firstItem) => ({ firstItem, n: firstItem === 12 ? 2 : 3 })));
    expect(await unwrittenGauge()).toBe(11);
    // The job's figures count every item from the start.
    const status = await api(svc.url, 'GET', `${B}/status/${job.jobId}`);
    expect(status.body.job).toMatchObject({ totalImages: 14, progress: 0 });

    expect(await writeAll()).toEqual([3, 3, 3, 2]);
    const written = await items(job.jobId);
    expect(written.map(({ imagePath, perspective }) => ({ imagePath, perspective }))).toEqual(expectedPairs(perspectives));
    expect(written.every((i) => i.status === 'pending')).toBe(true);
    // Ids ascend in the job's order across chunks (UUIDv7 with the item's place as counter).
    const ids = written.map((i) => i.id);
    expect(ids).toEqual([...ids].sort());
    expect(new Set(ids).size).toBe(14);
    expect(await chunks(job.jobId)).toEqual([]);
    expect(await unwrittenGauge()).toBe(0);
  });

  it('a service that starts writes what a create left (a crash after the create loses nothing)', async () => {
    const job = await create(['art_critic']);
    expect(await chunks(job.jobId)).not.toEqual([]);
    await svc.restart();
    await waitFor('the items written', async () => (await items(job.jobId)).length === 7, 10_000);
    expect((await items(job.jobId)).map((i) => i.imagePath)).toEqual([...IMAGES].sort());
    expect(await chunks(job.jobId)).toEqual([]);
  });

  it('a chunk that cannot be written does not hold up the other jobs', async () => {
    const broken = await create(['art_critic']);
    // Its next chunk names an image that does not exist (only plain SQL could do that), and is the oldest.
    await svc.db.execute(sql`
      update job_queue.job_item_chunks set image_ids[1] = gen_random_uuid(), created_at = now() - interval '1 hour'
      where job_id = ${broken.jobId} and first_item = 3`);
    try {
      const fine = await create(['storytelling']);
      const error = await (async () => {
        while ((await writeNextChunk(svc.db)) > 0);
      })().then(
        () => undefined,
        (e: unknown) => e as Error & { cause?: { code?: string; message?: string } },
      );
      // Thrown once the broken chunk is all that is left: the other job's items are all written.
      expect(error?.cause).toMatchObject({ code: '23503', message: expect.stringContaining('reference to images') });
      expect(await items(fine.jobId)).toHaveLength(7);
      expect(await chunks(broken.jobId)).toEqual([{ firstItem: 3, n: 3 }, { firstItem: 6, n: 1 }]);
    } finally {
      await svc.db.execute(sql`delete from job_queue.job_item_chunks where job_id = ${broken.jobId}`);
    }
  });

  it('a cancel cancels the items not yet written, as items', async () => {
    const job = await create(['art_critic', 'storytelling']);
    const cancelled = await api(svc.url, 'POST', `${B}/cancel/${job.jobId}`);
    expect(cancelled.status).toBe(200);
    expect(cancelled.body).toMatchObject({ status: 'cancelled', totalImages: 14, cancelledImages: 14 });
    const all = await items(job.jobId);
    expect(all).toHaveLength(14);
    expect(all.every((i) => i.status === 'cancelled')).toBe(true);
    expect(await chunks(job.jobId)).toEqual([]);
    expect(await writeAll()).toEqual([]);
  });

  it('a cancel while the writer writes: neither waits for the other forever, and every item ends cancelled', async () => {
    const all = ['art_critic', 'storytelling', 'graph_caption', 'poetic_metaphor', 'time_tags', 'style_preset', 'locality_graph'];
    const job = await create(all);
    expect(job.totalImages).toBe(49);
    const [written, cancelled] = await Promise.all([writeAll(), api(svc.url, 'POST', `${B}/cancel/${job.jobId}`)]);
    expect(cancelled.status).toBe(200);
    expect(cancelled.body).toMatchObject({ status: 'cancelled', cancelledImages: 49 });
    const items49 = await items(job.jobId);
    expect(items49).toHaveLength(49);
    expect(items49.every((i) => i.status === 'cancelled')).toBe(true);
    expect(written.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(46);
    expect(await chunks(job.jobId)).toEqual([]);
  });

  it('a job whose dependency did not complete fails with its unwritten items cancelled', async () => {
    const first = await create(['art_critic']);
    const second = await create(['storytelling'], { type: 'DEPENDENCY_CHAIN', dependsOn: [first.jobId] });
    expect((await api(svc.url, 'POST', `${B}/cancel/${first.jobId}`)).status).toBe(200);
    expect(await failJobsWithBrokenDependencies(svc.db)).toEqual([{ jobId: second.jobId, error: expect.stringContaining(first.jobId) }]);
    const all = await items(second.jobId);
    expect(all.map((i) => i.status)).toEqual(Array(7).fill('cancelled'));
    expect(await chunks(second.jobId)).toEqual([]);
  });

  it('an image or a perspective used only by items not yet written cannot be deleted', async () => {
    const perspective = { name: 'chunk_only', prompt: 'Describe it.', schemaFields: [{ name: 'text', type: 'str' }] };
    const made = await api(svc.url, 'POST', '/api/perspectives', perspective);
    expect(made.status).toBe(200);
    // An image of this job only, the last in path order: in its last chunk.
    const last = 'datasets/os_img/zz-only-here.jpg';
    const { rows } = await svc.db.execute<{ id: string }>(sql`insert into core_schema.images (path) values (${last}) returning id`);
    const imageId = rows[0]!.id;
    const job = await create(['chunk_only'], { imagePaths: [...IMAGES, last] });
    expect((await items(job.jobId)).map((i) => i.imagePath)).not.toContain(last);

    const refusedImage = await api(svc.url, 'DELETE', `/api/images/${imageId}`);
    expect(refusedImage.status).toBe(409);
    expect(refusedImage.body.detail).toMatch(/is used by 1 pending or running/);
    // Its first chunk written, the perspective is used by written items and chunk rows alike.
    await svc.db.execute(sql`update job_queue.job_items set status = 'cancelled' where job_id = ${job.jobId}`);
    const refusedPerspective = await api(svc.url, 'DELETE', `/api/perspectives/${made.body.perspectiveId}`);
    expect(refusedPerspective.status).toBe(409);
    expect(refusedPerspective.body.detail).toMatch(/used by 5 pending or running/);

    expect((await api(svc.url, 'POST', `${B}/cancel/${job.jobId}`)).status).toBe(200);
    expect((await api(svc.url, 'DELETE', `/api/perspectives/${made.body.perspectiveId}`)).status).toBe(200);
  });

  it('BACKFILL leaves out the pairs that are queued in chunk rows', async () => {
    // Perspectives the example workspace has no captions for.
    const perspectives = ['locality_graph', 'style_preset', 'time_tags'];
    const queued = await create(perspectives);
    expect((await chunks(queued.jobId)).length).toBeGreaterThan(0);
    const backfill = await createJob(
      svc.db,
      { type: 'BACKFILL', perspectives: [...perspectives, 'custom_caption'], datasetName: DATASET, priority: 100, config: CONFIG },
      { maxItems: 1000, chunkItems: 1000 },
    );
    // Not vacuous: some pairs queued only in chunk rows have no caption yet.
    const { rows: open } = await svc.db.execute<{ n: number }>(sql`
      select count(*)::int as n from job_queue.job_item_chunks c
      cross join unnest(c.image_ids, c.perspectives) as u(image_id, perspective)
      join core_schema.perspectives p on p.name = u.perspective
      where c.job_id = ${queued.jobId}
        and not exists (select 1 from core_schema.captions k where k.image_id = u.image_id and k.perspective_id = p.id)`);
    expect(open[0]!.n).toBeGreaterThan(0);
    // Only the perspective the first job does not have, less the pairs captioned already.
    const backfilled = await items(backfill.jobId);
    expect(backfilled.length).toBeGreaterThan(0);
    expect(new Set(backfilled.map((i) => i.perspective))).toEqual(new Set(['custom_caption']));
    expect((await api(svc.url, 'POST', `${B}/cancel/${queued.jobId}`)).status).toBe(200);
    expect((await api(svc.url, 'POST', `${B}/cancel/${backfill.jobId}`)).status).toBe(200);
  });
});
