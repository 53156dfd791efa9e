/**
 * Images: registered files of the workspace (path relative to it, format, size, dimensions, content
 * hash). Lookups by path for the queue and the import; list, get, create, update, delete for the API.
 */
import { sql, type SQL } from 'drizzle-orm';
import { ConflictError, InvalidInputError, NotFoundError } from '../errors.js';
import type { Db, DbTime } from './client.js';
import { CHUNKED_ITEMS } from './item-chunks.js';
import { flushCaptionChanges, insertDataEvents, insertMembershipEvents, notifyEventsOf, recordDataEvent, recordMembershipChange } from './data-events.js';
import { pgArray } from './sql.js';
import { allOf, dir, pageOf, textKey, type Order, type Page } from './lists.js';
import { images } from './schema.js';

export interface ImageUpsert {
  path: string;
  sizeBytes: number;
  fileMtime: Date;
  format: string | null;
  width: number | null;
  height: number | null;
  contentHash: string;
}

/**
 * The registered images among `paths`. One array parameter, not drizzle's inArray (a parameter per
 * path): PostgreSQL takes at most 65,535 parameters, so a 100,000-file dataset failed its import.
 */
export async function findImagesByPath(db: Db, paths: string[]) {
  if (paths.length === 0) return [];
  return db
    .select({
      id: images.id,
      path: images.path,
      sizeBytes: images.sizeBytes,
      fileMtime: images.fileMtime,
      contentHash: images.contentHash,
    })
    .from(images)
    .where(sql`${images.path} = any(${pgArray(paths)}::text[])`);
}

/** Advisory lock: shared by transactions that write job items, exclusive for image deletions. */
export const IMAGE_DELETE_LOCK = 7_245_002;

// ---------------------------------------------------------------------------------------------
// The API

export type ImageRow = {
  id: string;
  path: string;
  format: string | null;
  sizeBytes: number | null;
  width: number | null;
  height: number | null;
  contentHash: string | null;
  fileMtime: DbTime | null;
  datasetIds: string[];
  createdAt: DbTime;
  updatedAt: DbTime;
};

const IMAGE_COLUMNS = sql`
  i.id, i.path, i.format, i.size_bytes as "sizeBytes", i.width, i.height, i.content_hash as "contentHash",
  i.file_mtime as "fileMtime", i.created_at as "createdAt", i.updated_at as "updatedAt",
  coalesce((select array_agg(di.dataset_id::text order by di.dataset_id)
            from core_schema.dataset_images di where di.image_id = i.id), '{}') as "datasetIds"`;

export const IMAGE_SORT_KEYS = ['path', 'createdAt', 'updatedAt', 'sizeBytes', 'width', 'height', 'format'] as const;
export type ImageSortKey = (typeof IMAGE_SORT_KEYS)[number];

export interface ListImagesInput {
  datasetId?: string;
  format?: string[];
  pathContains?: string;
  /** Perspective ids: only images with (or without) a caption of it. */
  withCaption?: string;
  withoutCaption?: string;
  sort: ImageSortKey;
  order: Order;
  page: number;
  limit: number;
}

/**
 * A page of images. Ties (and nulls, always last) are broken by path. The caption filters are one
 * probe per image on captions (image_id, perspective_id, created_at).
 */
export async function listImages(db: Db, input: ListImagesInput): Promise<Page<ImageRow>> {
  const where: SQL[] = [];
  if (input.datasetId) {
    where.push(sql`exists (select 1 from core_schema.dataset_images di where di.dataset_id = ${input.datasetId} and di.image_id = i.id)`);
  }
  if (input.format?.length) where.push(sql`i.format = any(${pgArray(input.format)}::text[])`);
  if (input.pathContains) where.push(sql`strpos(lower(i.path), lower(${input.pathContains})) > 0`);
  const hasCaption = (perspectiveId: string) =>
    sql`exists (select 1 from core_schema.captions c where c.image_id = i.id and c.perspective_id = ${perspectiveId})`;
  if (input.withCaption) where.push(hasCaption(input.withCaption));
  if (input.withoutCaption) where.push(sql`not ${hasCaption(input.withoutCaption)}`);

  const d = dir(input.order);
  const key = {
    path: textKey(sql`i.path`),
    createdAt: sql`i.created_at`,
    updatedAt: sql`i.updated_at`,
    sizeBytes: sql`i.size_bytes`,
    width: sql`i.width`,
    height: sql`i.height`,
    format: textKey(sql`i.format`),
  }[input.sort];
  return pageOf<ImageRow>(db, {
    select: IMAGE_COLUMNS,
    from: sql`from core_schema.images i where ${allOf(where)}`,
    orderBy: sql`${key} ${d} nulls last, ${textKey(sql`i.path`)} ${d}`,
    page: input,
  });
}

export async function getImage(db: Db, id: string): Promise<ImageRow> {
  const { rows } = await db.execute<Record<string, unknown>>(sql`select ${IMAGE_COLUMNS} from core_schema.images i where i.id = ${id}`);
  if (!rows[0]) throw new NotFoundError(`image ${id} not found`);
  return rows[0] as unknown as ImageRow;
}

/** Registers a workspace file; 409 when its path is registered already. Optionally adds it to datasets. */
export async function createImage(db: Db, image: ImageUpsert, datasetIds: string[] = []): Promise<ImageRow> {
  return db.transaction(async (tx) => {
    await requireDatasets(tx, datasetIds, 'datasetIds');
    const { rows } = await tx.execute<{ id: string }>(sql`
      insert into core_schema.images (path, format, size_bytes, width, height, content_hash, file_mtime)
      values (${image.path}, ${image.format}, ${image.sizeBytes}, ${image.width}, ${image.height}, ${image.contentHash},
              ${image.fileMtime.toISOString()}::timestamptz)
      on conflict (path) do nothing
      returning id`);
    const id = rows[0]?.id;
    if (!id) {
      const [existing] = await findImagesByPath(tx, [image.path]);
      throw new ConflictError(`image ${JSON.stringify(image.path)} is registered already (as ${existing?.id})`);
    }
    await recordDataEvent(tx, { entity: 'image', change: 'CREATED', source: 'api', ids: [id], data: { path: image.path } });
    if (datasetIds.length > 0) {
      const { rows: added } = await tx.execute<{ datasetId: string }>(sql`
        insert into core_schema.dataset_images (dataset_id, image_id)
        select unnest(${pgArray(datasetIds)}::uuid[]), ${id} on conflict do nothing
        returning dataset_id as "datasetId"`);
      for (const { datasetId } of added) await recordMembershipChange(tx, { datasetId, source: 'api', added: [id] });
      await touchDatasets(tx, datasetIds);
    }
    return getImage(tx, id);
  });
}

/**
 * Points the image at a (new) file and its metadata. Moving it to another path is refused while
 * pending or running job items use it (they carry the old path), or when the path is taken.
 */
export async function updateImageFile(db: Db, id: string, file: ImageUpsert): Promise<ImageRow> {
  return db.transaction(async (tx) => {
    const { rows } = await tx.execute<Record<string, unknown> & { path: string }>(sql`
      select path, format, size_bytes as "sizeBytes", width, height, content_hash as "contentHash", file_mtime as "fileMtime"
      from core_schema.images where id = ${id} for update`);
    const current = rows[0];
    if (!current) throw new NotFoundError(`image ${id} not found`);
    if (current.path !== file.path) {
      const active = await countActiveItems(tx, [id]);
      if (active > 0) throw new ConflictError(`image ${id} is used by ${active} pending or running job item(s); it cannot move now`);
      const [taken] = await findImagesByPath(tx, [file.path]);
      if (taken) throw new ConflictError(`path ${JSON.stringify(file.path)} is registered already (as image ${taken.id})`);
    }
    await tx.execute(sql`
      update core_schema.images
      set path = ${file.path}, format = ${file.format}, size_bytes = ${file.sizeBytes}, width = ${file.width},
          height = ${file.height}, content_hash = ${file.contentHash}, file_mtime = ${file.fileMtime.toISOString()}::timestamptz,
          updated_at = now()
      where id = ${id}`);
    const updated = await getImage(tx, id);
    const after: Record<string, unknown> = { ...file, fileMtime: updated.fileMtime };
    const changes = Object.keys(after).filter((k) => k in current && String(current[k]) !== String(after[k]));
    await recordDataEvent(tx, { entity: 'image', change: 'UPDATED', source: 'api', ids: [id], data: { path: file.path, changes } });
    return updated;
  });
}

export async function deleteImage(db: Db, id: string): Promise<void> {
  await db.transaction(async (tx) => {
    const deleted = await deleteImagesIn(tx, [id]);
    if (deleted === 0) throw new NotFoundError(`image ${id} not found`);
  });
}

/**
 * Deletes images inside the caller's transaction, with their captions and dataset memberships;
 * returns how many. Refused (409, nothing deleted) while a pending or running job item uses one.
 * Finished items (live or archived) keep their `image_path`; their image_id becomes null.
 *
 * Lock order, the same as the dispatcher's recording and restore (items, then the image): the
 * advisory IMAGE_DELETE_LOCK first, which waits for every transaction writing job items to end
 * (job_items' reference check holds it shared instead of locking each image row), then the items
 * that reference the images, then the images; then the check for active items, which therefore
 * sees every job created meanwhile.
 */
export async function deleteImagesIn(tx: Db, ids: string[]): Promise<number> {
  if (ids.length === 0) return 0;
  const idArray = sql`${pgArray(ids)}::uuid[]`;
  // Writers of job items hold this lock shared until they commit (the reference check of
  // job_items, migration 0006, instead of a foreign key's row lock per item); the delete trigger
  // takes it too, but the count of active items below must already see their items.
  await tx.execute(sql`select pg_advisory_xact_lock(${IMAGE_DELETE_LOCK})`);
  await tx.execute(sql`select 1 from job_queue.job_items where image_id = any(${idArray}) order by id for update`);
  await tx.execute(sql`select 1 from job_queue.job_archives where image_id = any(${idArray}) order by id for update`);
  const { rows: locked } = await tx.execute<{ id: string }>(
    sql`select id from core_schema.images where id = any(${idArray}) order by id for update`,
  );
  if (locked.length === 0) return 0;
  const active = await countActiveItems(tx, ids);
  if (active > 0) {
    const which = ids.length === 1 ? `image ${ids[0]} is` : `${ids.length} images are`;
    throw new ConflictError(`${which} used by ${active} pending or running job item(s); cancel or finish those jobs first`);
  }
  await touchDatasets(tx, sql`(select dataset_id from core_schema.dataset_images where image_id = any(${idArray}))`);
  // Their captions and memberships go with them: said first, in the order of their streams.
  const { rows: captions } = await tx.execute<{ id: string }>(sql`select id from core_schema.captions where image_id = any(${idArray})`);
  await flushCaptionChanges(tx, captions.map((c) => c.id));
  await tx.execute(sql`
    with written as (
      ${insertMembershipEvents('api', sql`(
        select dataset_id, image_id, false as added from core_schema.dataset_images where image_id = any(${idArray}))`)}
      returning 1)
    ${notifyEventsOf('written')}`);
  const result = await tx.execute(sql`delete from core_schema.images where id = any(${idArray})`);
  await recordDataEvent(tx, { entity: 'caption', change: 'DELETED', source: 'api', ids: captions.map((c) => c.id) });
  await recordDataEvent(tx, { entity: 'image', change: 'DELETED', source: 'api', ids: locked.map((r) => r.id) });
  return result.rowCount ?? 0;
}

/** Pending and running items of the images, those not yet written (job_item_chunks) too. */
async function countActiveItems(tx: Db, imageIds: string[]): Promise<number> {
  const ids = sql`${pgArray(imageIds)}::uuid[]`;
  const { rows } = await tx.execute<{ n: number }>(sql`
    select (select count(*) from job_queue.job_items where image_id = any(${ids}) and status in ('pending', 'running'))
         + (select count(*) from ${CHUNKED_ITEMS} q where q.image_id = any(${ids})) as n`);
  return rows[0]?.n ?? 0;
}

/** 400 naming the field when a dataset id is unknown. */
export async function requireDatasets(db: Db, datasetIds: string[], field: string): Promise<void> {
  if (datasetIds.length === 0) return;
  const { rows } = await db.execute<{ id: string }>(
    sql`select id from core_schema.datasets where id = any(${pgArray(datasetIds)}::uuid[])`,
  );
  const known = new Set(rows.map((r) => r.id));
  const errors = datasetIds.flatMap((id, i) => (known.has(id) ? [] : [{ path: `${field}.${i}`, message: `unknown dataset ${id}` }]));
  if (errors.length > 0) throw new InvalidInputError(errors.map((e) => `${e.path}: ${e.message}`).join('; '), errors);
}

/** A dataset's membership changed: its updated_at moves (its image count is part of it). */
export async function touchDatasets(tx: Db, datasetIds: string[] | SQL): Promise<void> {
  if (Array.isArray(datasetIds) && datasetIds.length === 0) return;
  const which = Array.isArray(datasetIds) ? sql`id = any(${pgArray(datasetIds)}::uuid[])` : sql`id in ${datasetIds}`;
  await tx.execute(sql`update core_schema.datasets set updated_at = now() where ${which}`);
}

/** A re-scan found the same content under new modification times: remember them, change nothing else; one statement. */
export async function refreshImageMtimes(db: Db, rows: { id: string; fileMtime: Date }[]): Promise<void> {
  if (rows.length === 0) return;
  await db.execute(sql`
    update core_schema.images i set file_mtime = u.file_mtime
    from unnest(${pgArray(rows.map((r) => r.id))}::uuid[], ${pgArray(rows.map((r) => r.fileMtime.toISOString()))}::timestamptz[])
         as u(id, file_mtime)
    where i.id = u.id`);
}

/**
 * Inserts or refreshes images by path, with their IMAGE_CREATED and IMAGE_UPDATED events, in one
 * statement (the import writes a thousand at a time, not one).
 */
export async function upsertImages(db: Db, rows: ImageUpsert[]): Promise<void> {
  if (rows.length === 0) return;
  const column = <T extends string | number | null>(pick: (r: ImageUpsert) => T) => sql`${sql.param(rows.map(pick))}`;
  await db.execute(sql`
    with upserted as (
      insert into core_schema.images (path, size_bytes, file_mtime, format, width, height, content_hash)
      select * from unnest(${column((r) => r.path)}::text[], ${column((r) => r.sizeBytes)}::bigint[],
                           ${column((r) => r.fileMtime.toISOString())}::timestamptz[], ${column((r) => r.format)}::text[],
                           ${column((r) => r.width)}::int[], ${column((r) => r.height)}::int[], ${column((r) => r.contentHash)}::text[])
      on conflict (path) do update
      set size_bytes = excluded.size_bytes, file_mtime = excluded.file_mtime, format = excluded.format,
          width = excluded.width, height = excluded.height, content_hash = excluded.content_hash, updated_at = now()
      returning id, (xmax = 0) as created
    ), created as (
      ${insertDataEvents({ entity: 'image', change: 'CREATED', source: 'sync', ids: sql`(select id from upserted where created)` })}
      returning 1
    ), updated as (
      ${insertDataEvents({ entity: 'image', change: 'UPDATED', source: 'sync', ids: sql`(select id from upserted where not created)`, data: { changes: ['content'] } })}
      returning 1
    ), written as (select 1 from created union all select 1 from updated)
    ${notifyEventsOf('written')}`);
}
