/**
 * The database side of writing captions back to graphcap's captions.jsonl files
 * (src/jobs/caption-exporter.ts): the captions waiting (captions.export_pending, set for every
 * caption the queue stores), taken by one replica at a time, and marked written with their line's
 * key, so the workspace import does not take them for new.
 */
import { sql } from 'drizzle-orm';
import type { Db, DbTime } from './client.js';
import { pgArray } from './sql.js';

/** One exporter at a time across replicas: two writing one file would interleave their rewrites. */
const EXPORT_LOCK_ID = 7_245_004;

export type PendingExport = {
  id: string;
  imagePath: string;
  perspective: string;
  version: string;
  model: string | null;
  provider: string | null;
  result: Record<string, unknown>;
  createdAt: DbTime;
};

/**
 * In the caller's transaction: this replica's turn to export (undefined while another holds it),
 * and if so the oldest captions waiting, `limit` at most, but those of the files `waiting` for a
 * retry.
 */
export async function takePendingExports(
  tx: Db,
  limit: number,
  waiting: readonly { folder: string; perspective: string }[] = [],
): Promise<PendingExport[] | undefined> {
  const { rows: locked } = await tx.execute<{ ok: boolean }>(sql`select pg_try_advisory_xact_lock(${EXPORT_LOCK_ID}) as ok`);
  if (!locked[0]?.ok) return undefined;
  // The files waiting for a retry: their captions do not hold up the others'.
  const skip = waiting.length
    ? sql`and not exists (select 1 from jsonb_to_recordset(${JSON.stringify(waiting)}::jsonb) as w(folder text, perspective text)
                          where w.perspective = p.name and w.folder = regexp_replace(i.path, '/[^/]*$', ''))`
    : sql``;
  const { rows } = await tx.execute<PendingExport>(sql`
    select c.id, i.path as "imagePath", p.name as perspective, c.perspective_version as version, c.model, c.provider,
           c.result, c.created_at as "createdAt"
    from core_schema.captions c
    join core_schema.images i on i.id = c.image_id
    join core_schema.perspectives p on p.id = c.perspective_id
    where c.export_pending ${skip}
    order by c.created_at, c.id
    limit ${limit}`);
  return rows;
}

/**
 * Marks captions written (or given up on), each with its line's key unless a caption has that key
 * already (the same content, imported from the file).
 */
export async function markExported(tx: Db, written: readonly { id: string; key: string | null }[]): Promise<void> {
  if (written.length === 0) return;
  await tx.execute(sql`
    update core_schema.captions c
    set export_pending = false,
        import_key = case when w.key is null or c.import_key is not null
                            or exists (select 1 from core_schema.captions o where o.import_key = w.key) then c.import_key
                          else w.key end
    from jsonb_to_recordset(${JSON.stringify(written)}::jsonb) as w(id uuid, key text)
    where c.id = w.id`);
}

/** With write-back off: the waiting captions are let go, `limit` at a time, so nothing piles up. */
export async function dropPendingExports(db: Db, limit: number): Promise<number> {
  const result = await db.execute(sql`
    update core_schema.captions set export_pending = false
    where id in (select id from core_schema.captions where export_pending order by created_at, id limit ${limit})`);
  return result.rowCount ?? 0;
}

export async function countPendingExports(db: Db): Promise<number> {
  const { rows } = await db.execute<{ n: number }>(sql`select count(*)::int as n from core_schema.captions where export_pending`);
  return rows[0]?.n ?? 0;
}

/**
 * Queues the newest caption of each (image, perspective) of a dataset for writing, for the
 * perspectives given (all when none): an export on demand. Returns how many.
 */
export async function queueDatasetExport(db: Db, datasetId: string, perspectives: readonly string[] | undefined): Promise<number> {
  const chosen = perspectives?.length ? sql`and p.name = any(${pgArray(perspectives)}::text[])` : sql``;
  const result = await db.execute(sql`
    update core_schema.captions c set export_pending = true
    where c.id in (
      select distinct on (c2.image_id, c2.perspective_id) c2.id
      from core_schema.dataset_images di
      join core_schema.captions c2 on c2.image_id = di.image_id
      join core_schema.perspectives p on p.id = c2.perspective_id
      where di.dataset_id = ${datasetId} ${chosen}
      order by c2.image_id, c2.perspective_id, c2.created_at desc, c2.id desc)
      and not c.export_pending`);
  return result.rowCount ?? 0;
}
