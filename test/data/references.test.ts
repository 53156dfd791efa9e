/**
 * job_items' references to its job and its image, kept by statement-level triggers (migration 0006)
 * rather than foreign keys: the same guarantees, checked by plain SQL and under concurrency.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'drizzle-orm';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countRows, createJob, finishItem, IMAGES, itemIds } from '../helpers/fixtures.js';
import { getOk, qs } from '../helpers/data.js';
import { api, startTestService, type TestService } from '../helpers/service.js';

let svc: TestService;
beforeAll(async () => {
  svc = await startTestService();
});
afterAll(async () => svc?.close());

async function imageId(path: string): Promise<string> {
  const page = await getOk(svc.url, `/api/images${qs({ pathContains: path.split('/').pop()! })}`);
  return page.items[0].imageId;
}

/** Runs `fn` on a client of its own inside a transaction that stays open until `release` is called. */
async function openTransaction() {
  const client = new pg.Client({ connectionString: svc.database.url });
  await client.connect();
  await client.query('begin');
  return {
    client,
    async end(how: 'commit' | 'rollback') {
      await client.query(how);
      await client.end();
    },
  };
}

const sqlState = async (run: () => Promise<unknown>) =>
  run().then(
    () => 'ok',
    (error: { code?: string; cause?: { code?: string } }) => error.cause?.code ?? error.code,
  );

describe('job_items references', () => {
  it('refuses items of a job or an image that does not exist (23503, as a foreign key would)', async () => {
    const job = await createJob(svc.url, {});
    const image = await imageId(IMAGES[0]);
    const insert = (jobId: string, imageIdOrNull: string | null) =>
      svc.db.execute(sql`insert into job_queue.job_items (job_id, image_id, image_path, perspective)
                         values (${jobId}, ${imageIdOrNull}, 'x.jpg', 'art_critic')`);
    expect(await sqlState(() => insert('00000000-0000-4000-8000-000000000000', image))).toBe('23503');
    expect(await sqlState(() => insert(job.jobId, '00000000-0000-4000-8000-000000000000'))).toBe('23503');
    // One bad row among good ones refuses the whole statement.
    expect(
      await sqlState(() =>
        svc.db.execute(sql`insert into job_queue.job_items (job_id, image_id, image_path, perspective)
                           values (${job.jobId}, ${image}, 'a.jpg', 'art_critic'),
                                  (${job.jobId}, '00000000-0000-4000-8000-000000000000', 'b.jpg', 'art_critic')`),
      ),
    ).toBe('23503');
    const [first] = await itemIds(svc.db, job.jobId);
    expect(
      await sqlState(() => svc.db.execute(sql`update job_queue.job_items set image_id = gen_random_uuid() where id = ${first!}`)),
    ).toBe('23503');
    expect(
      await sqlState(() => svc.db.execute(sql`update job_queue.job_items set job_id = gen_random_uuid() where id = ${first!}`)),
    ).toBe('23503');
    // Referenced keys cannot change.
    expect(await sqlState(() => svc.db.execute(sql`update core_schema.images set id = gen_random_uuid() where id = ${image}`))).toBe('23503');
    expect(
      await sqlState(() => svc.db.execute(sql`update job_queue.caption_jobs set job_id = gen_random_uuid() where job_id = ${job.jobId}`)),
    ).toBe('23503');
    expect(await sqlState(() => insert(job.jobId, null))).toBe('ok');
  });

  it('deleting a job deletes its items; deleting an image keeps its finished items without it', async () => {
    const job = await createJob(svc.url, { imagePaths: [IMAGES[2], IMAGES[3]] });
    expect(await countRows(svc.db, `job_queue.job_items where job_id = '${job.jobId}'`)).toBe(2);
    await svc.db.execute(sql`delete from job_queue.caption_jobs where job_id = ${job.jobId}`);
    expect(await countRows(svc.db, `job_queue.job_items where job_id = '${job.jobId}'`)).toBe(0);

    const finished = await createJob(svc.url, { imagePaths: [IMAGES[4]] });
    const [item] = await itemIds(svc.db, finished.jobId);
    await finishItem(svc.url, item!, 'failed');
    const image = await imageId(IMAGES[4]);
    await svc.db.execute(sql`delete from core_schema.images where id = ${image}`);
    const { rows } = await svc.db.execute<{ imageId: string | null; imagePath: string }>(
      sql`select image_id as "imageId", image_path as "imagePath" from job_queue.job_items where id = ${item!}`,
    );
    expect(rows).toEqual([{ imageId: null, imagePath: IMAGES[4] }]);
  });

  it('an image deletion waits for a transaction writing items that use it, then sees them (409)', async () => {
    const job = await createJob(svc.url, { imagePaths: [IMAGES[0]] });
    const image = await imageId(IMAGES[1]);
    // Another writer adds a pending item using the image and has not committed yet.
    const tx = await openTransaction();
    await tx.client.query(
      `insert into job_queue.job_items (job_id, image_id, image_path, perspective) values ($1, $2, $3, 'art_critic')`,
      [job.jobId, image, IMAGES[1]],
    );
    let answered = false;
    const deletion = api(svc.url, 'DELETE', `/api/images/${image}`).finally(() => (answered = true));
    await sleep(300);
    expect(answered).toBe(false);
    await tx.end('commit');
    const response = await deletion;
    expect(response.status).toBe(409);
    expect(await countRows(svc.db, `core_schema.images where id = '${image}'`)).toBe(1);

    // Plain SQL deletes wait too, and then unlink what committed meanwhile.
    const [item] = await itemIds(svc.db, job.jobId);
    await finishItem(svc.url, item!, 'failed');
    const image0 = await imageId(IMAGES[0]);
    const writer = await openTransaction();
    await writer.client.query(`update job_queue.job_items set status = 'cancelled' where job_id = $1 and image_id = $2`, [job.jobId, image]);
    await writer.client.query(
      `insert into job_queue.job_items (job_id, image_id, image_path, perspective, status) values ($1, $2, $3, 'art_critic', 'cancelled')`,
      [job.jobId, image0, IMAGES[0]],
    );
    const deleter = await openTransaction();
    let deleted = false;
    const plain = deleter.client.query(`delete from core_schema.images where id = $1`, [image0]).then(() => (deleted = true));
    await sleep(300);
    expect(deleted).toBe(false);
    await writer.end('commit');
    await plain;
    await deleter.end('commit');
    const { rows } = await svc.db.execute<{ n: number }>(
      sql`select count(*)::int as n from job_queue.job_items where image_id = ${image0}`,
    );
    expect(rows[0]!.n).toBe(0);
  });

  it('a writer whose image was deleted meanwhile is refused (23503), not left pointing at nothing', async () => {
    const job = await createJob(svc.url, { imagePaths: [IMAGES[5]] });
    const [item] = await itemIds(svc.db, job.jobId);
    await finishItem(svc.url, item!, 'failed');
    const image = await imageId(IMAGES[6]!);
    const deleter = await openTransaction();
    await deleter.client.query(`delete from core_schema.images where id = $1`, [image]);
    const writer = await openTransaction();
    const attempt = writer.client
      .query(`insert into job_queue.job_items (job_id, image_id, image_path, perspective) values ($1, $2, $3, 'art_critic')`, [
        job.jobId,
        image,
        IMAGES[6]!,
      ])
      .then(
        () => 'ok',
        (error: { code?: string }) => error.code,
      );
    await sleep(300);
    await deleter.end('commit');
    expect(await attempt).toBe('23503');
    await writer.end('rollback');
  });
});
