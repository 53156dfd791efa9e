/**
 * Items written after their create (job_item_chunks, see the schema): a create writes its first
 * JOB_ITEM_CHUNK items and one chunk row per further JOB_ITEM_CHUNK items; the item writer
 * (src/jobs/item-writer.ts) turns the rows into items. Until then the items count in the job's
 * total, and whatever must see every queued item of an image or perspective (image and
 * perspective deletes, BACKFILL) reads the chunk rows too; whatever changes all of a job's items
 * (cancel, a broken dependency) writes the rest first.
 *
 * Locks: a writer locks the job row FOR KEY SHARE, then the chunk row; cancel holds the job row
 * FOR UPDATE before it writes the rest, so the two never hold what the other waits for.
 */
import { sql, type SQL } from 'drizzle-orm';
import type { Db } from './client.js';
import { notifyWork } from './channels.js';

/**
 * Item ids in insertion order: UUIDv7 (RFC 9562) with a counter, so that a job's items land at the
 * right edge of the primary key; random ids put each item on another page of it (a WAL full-page
 * image each after a checkpoint). k: the statement's time in milliseconds and 48 random bits, taken
 * once; n, the item's 0-based place in the job (below 2^26, as MAX_JOB_ITEMS is), fills the 12
 * bits after the version and the 14 after the variant. Built in SQL: uuidv7() is PostgreSQL 18's
 * only, and it, like gen_random_uuid(), draws random bytes per row.
 */
export const ITEM_ID_PARTS = sql`(select lpad(to_hex((extract(epoch from clock_timestamp()) * 1000)::bigint), 12, '0') as ms,
                                         right(gen_random_uuid()::text, 12) as rand)`;
export function itemId(n: SQL): SQL {
  return sql`(k.ms || to_hex((7 << 28) | ((${n} >> 14) << 16) | ((8 | ((${n} >> 12) & 3)) << 12) | (${n} & 4095)) || k.rand)::uuid`;
}

/** The job's items from `chunks` (rows of job_item_chunks, deleted by the same statement), in order. */
function insertChunks(chunks: SQL): SQL {
  return sql`
    with c as (${chunks}),
    gone as (delete from job_queue.job_item_chunks d using c where d.job_id = c.job_id and d.first_item = c.first_item),
    listed as (select c.job_id, c.first_item + x.ord - 1 as n, x.image_id, x.path, x.perspective
               from c cross join unnest(c.image_ids, c.image_paths, c.perspectives) with ordinality as x(image_id, path, perspective, ord)),
    inserted as (
      insert into job_queue.job_items (id, job_id, image_id, image_path, perspective)
      select ${itemId(sql`listed.n`)}, listed.job_id, listed.image_id, listed.path, listed.perspective
      from listed cross join ${ITEM_ID_PARTS} as k
      order by listed.n
      returning 1)
    select count(*)::int as n from inserted`;
}

/**
 * Writes one chunk: the first of the job whose chunks are oldest, unless another replica is
 * writing that job's first chunk (then the next job's). Returns how many items it wrote, 0 when
 * no chunk is left to take. The dispatchers are told, as by a create. A chunk that fails does not
 * hold up the other jobs': its error is thrown only when no other chunk could be written.
 */
export async function writeNextChunk(db: Db): Promise<number> {
  const { rows: candidates } = await db.execute<{ jobId: string; firstItem: number }>(sql`
    select job_id as "jobId", min(first_item) as "firstItem" from job_queue.job_item_chunks
    group by job_id order by min(created_at) limit 10`);
  let failure: unknown;
  for (const { jobId, firstItem } of candidates) {
    const written = await db.transaction(async (tx) => {
      const { rows: job } = await tx.execute(sql`select 1 from job_queue.caption_jobs where job_id = ${jobId} for key share`);
      if (job.length === 0) return 0;
      const { rows } = await tx.execute<{ n: number }>(
        insertChunks(sql`select * from job_queue.job_item_chunks
                         where job_id = ${jobId} and first_item = ${firstItem} for update skip locked`),
      );
      const n = rows[0]?.n ?? 0;
      if (n > 0) await notifyWork(tx);
      return n;
    }).catch((error: unknown) => {
      failure ??= error;
      return 0;
    });
    if (written > 0) return written;
  }
  if (failure !== undefined) throw failure;
  return 0;
}

/** Writes every chunk left of the job, inside the caller's transaction, which holds the job row FOR UPDATE. */
export async function writeRemainingChunks(tx: Db, jobId: string): Promise<void> {
  await tx.execute(insertChunks(sql`select * from job_queue.job_item_chunks where job_id = ${jobId} order by first_item for update`));
}

/** Items in chunk rows, all jobs together (a gauge of the writers' backlog). */
export async function countUnwrittenItems(db: Db): Promise<number> {
  const { rows } = await db.execute<{ n: number }>(
    sql`select coalesce(sum(cardinality(image_ids)), 0)::int as n from job_queue.job_item_chunks`,
  );
  return rows[0]?.n ?? 0;
}

/** The (image, perspective) pairs queued in chunks, as a relation `(image_id, perspective)`. */
export const CHUNKED_ITEMS = sql`(select u.image_id, u.perspective from job_queue.job_item_chunks c
  cross join unnest(c.image_ids, c.perspectives) as u(image_id, perspective))`;
