/** Datasets and their membership (an image may belong to several datasets). */
import { eq, sql, type SQL } from 'drizzle-orm';
import { ConflictError, InvalidInputError, NotFoundError, type FieldError } from '../errors.js';
import type { Db, DbTime } from './client.js';
import { deleteImagesIn, touchDatasets } from './images.js';
import { insertMembershipEvents, notifyEventsOf, recordDataEvent, recordMembershipChange, type ChangeSource } from './data-events.js';
import { pgArray } from './sql.js';
import { DEFAULT_DATASET, type DatasetSource } from '../workspace/layout.js';
import { allOf, dir, pageOf, textKey, type Order, type Page } from './lists.js';
import { datasetImages, datasets, images } from './schema.js';

/** Returns the dataset's id, creating it (and its DATASET_CREATED) when new. */
export async function ensureDataset(db: Db, name: string, source: ChangeSource = 'sync'): Promise<string> {
  const { rows } = await db.execute<{ id: string; created: boolean }>(sql`
    insert into core_schema.datasets (name) values (${name})
    on conflict (name) do update set name = excluded.name
    returning id, (xmax = 0) as created`);
  const row = rows[0]!;
  if (row.created) await recordDataEvent(db, { entity: 'dataset', change: 'CREATED', source, ids: [row.id], data: { datasetId: row.id, name } });
  return row.id;
}

export async function findDataset(db: Db, by: { id?: string; name?: string }) {
  const where = by.id ? eq(datasets.id, by.id) : eq(datasets.name, by.name ?? '');
  const [row] = await db.select({ id: datasets.id, name: datasets.name }).from(datasets).where(where);
  return row;
}

/** The dataset's members as (imageId, path). */
export async function listDatasetMembers(db: Db, datasetId: string) {
  return db
    .select({ imageId: images.id, path: images.path })
    .from(datasetImages)
    .innerJoin(images, eq(images.id, datasetImages.imageId))
    .where(eq(datasetImages.datasetId, datasetId));
}

/**
 * Names of datasets that have members in their folders by graphcap's layout
 * (src/workspace/layout.ts): the ones folders feed, which a scan must look at even when the
 * folders are gone.
 */
export async function listFolderFedDatasetNames(db: Db): Promise<string[]> {
  const { rows } = await db.execute<{ name: string }>(sql`
    select d.name from core_schema.datasets d
    where exists (select 1 from core_schema.dataset_images di join core_schema.images i on i.id = di.image_id
                  where di.dataset_id = d.id
                    and (starts_with(i.path, 'datasets/' || d.name || '/') or starts_with(i.path, 'datasets/local/' || d.name || '/')
                         or (d.name = ${DEFAULT_DATASET} and i.path ~ '^datasets/[^/]+$')))
    order by d.name`);
  return rows.map((r) => r.name);
}

/**
 * Makes the images at `paths` (registered) members of the dataset; returns the paths that were not
 * members yet. One statement, however many paths.
 */
export async function addDatasetMembersByPath(db: Db, datasetId: string, paths: string[], source: ChangeSource = 'sync'): Promise<string[]> {
  if (paths.length === 0) return [];
  const { rows } = await db.execute<{ path: string }>(sql`
    with added as (
      insert into core_schema.dataset_images (dataset_id, image_id)
      select ${datasetId}, i.id from core_schema.images i where i.path = any(${pgArray(paths)}::text[])
      on conflict do nothing
      returning dataset_id, image_id
    ), written as (
      ${insertMembershipEvents(source, sql`(select dataset_id, image_id, true as added from added)`)}
      returning 1
    ), notified as (${notifyEventsOf('written')})
    select i.path from added a join core_schema.images i on i.id = a.image_id
    cross join (select count(*) from notified) n`);
  return rows.map((r) => r.path);
}

/** Paths (alias `i`) in one of the sources: under a recursive one's prefix, or directly in a flat one's folder. */
function inSources(sources: readonly DatasetSource[]): SQL {
  const each = sources.map((s) =>
    s.recursive
      ? sql`starts_with(i.path, ${s.prefix})`
      : sql`(starts_with(i.path, ${s.prefix}) and strpos(substr(i.path, ${s.prefix.length + 1}), '/') = 0)`,
  );
  return sql`(${sql.join(each, sql` or `)})`;
}

/**
 * Takes the members that lie in the dataset's folders (`sources`) but are not among `paths` out of
 * the dataset (a folder scan's files that are gone); returns their paths, sorted. With `keep`, only
 * counts them (a scan that cannot trust what it saw). The difference is
 * taken here, in one pass over each side: a NOT EXISTS over the array was planned as a nested loop
 * on fresh tables' estimates (100,000 × 100,000 comparisons: minutes of CPU).
 */
export async function removeDatasetMembersNotIn(
  db: Db,
  datasetId: string,
  sources: readonly DatasetSource[],
  paths: readonly string[],
  options: { source?: ChangeSource; keep?: boolean } = {},
): Promise<{ removed: string[]; kept: number }> {
  const { rows: members } = await db.execute<{ imageId: string; path: string }>(sql`
    select di.image_id as "imageId", i.path from core_schema.dataset_images di
    join core_schema.images i on i.id = di.image_id
    where di.dataset_id = ${datasetId} and ${inSources(sources)}`);
  const present = new Set(paths);
  const gone = members.filter((m) => !present.has(m.path));
  if (options.keep) return { removed: [], kept: gone.length };
  if (gone.length > 0) {
    await db.execute(sql`
      delete from core_schema.dataset_images
      where dataset_id = ${datasetId} and image_id = any(${pgArray(gone.map((m) => m.imageId))}::uuid[])`);
    await recordMembershipChange(db, { datasetId, source: options.source ?? 'sync', removed: gone.map((m) => m.imageId) });
  }
  return { removed: gone.map((m) => m.path).sort((a, b) => (a < b ? -1 : 1)), kept: 0 };
}

/** Takes the images at `paths` out of the dataset; returns the paths that were members. */
export async function removeDatasetMembersByPath(
  db: Db,
  datasetId: string,
  paths: readonly string[],
  source: ChangeSource = 'sync',
): Promise<string[]> {
  if (paths.length === 0) return [];
  const { rows } = await db.execute<{ path: string; imageId: string }>(sql`
    delete from core_schema.dataset_images di using core_schema.images i
    where di.dataset_id = ${datasetId} and i.id = di.image_id and i.path = any(${pgArray(paths)}::text[])
    returning i.path, di.image_id as "imageId"`);
  await recordMembershipChange(db, { datasetId, source, removed: rows.map((r) => r.imageId) });
  return rows.map((r) => r.path);
}

/** Adds images to the dataset (one array parameter, however many); returns those that were not members. */
async function addDatasetMembers(db: Db, datasetId: string, imageIds: readonly string[], source: ChangeSource): Promise<string[]> {
  if (imageIds.length === 0) return [];
  const { rows } = await db.execute<{ imageId: string }>(sql`
    insert into core_schema.dataset_images (dataset_id, image_id)
    select ${datasetId}, unnest(${pgArray([...new Set(imageIds)])}::uuid[])
    on conflict do nothing
    returning image_id as "imageId"`);
  const added = rows.map((r) => r.imageId);
  await recordMembershipChange(db, { datasetId, source, added });
  return added;
}

// ---------------------------------------------------------------------------------------------
// The API

export type DatasetRow = {
  id: string;
  name: string;
  description: string | null;
  imageCount: number;
  createdAt: DbTime;
  updatedAt: DbTime;
};

const DATASET_COLUMNS = sql`
  d.id, d.name, d.description, d.created_at as "createdAt", d.updated_at as "updatedAt",
  (select count(*) from core_schema.dataset_images di where di.dataset_id = d.id) as "imageCount"`;

export const DATASET_SORT_KEYS = ['name', 'createdAt', 'updatedAt', 'imageCount'] as const;
export type DatasetSortKey = (typeof DATASET_SORT_KEYS)[number];

export interface ListDatasetsInput {
  name?: string;
  nameContains?: string;
  sort: DatasetSortKey;
  order: Order;
  page: number;
  limit: number;
}

/** A page of datasets; ties broken by name. */
export async function listDatasets(db: Db, input: ListDatasetsInput): Promise<Page<DatasetRow>> {
  const where: SQL[] = [];
  if (input.name !== undefined) where.push(sql`d.name = ${input.name}`);
  if (input.nameContains) where.push(sql`strpos(lower(d.name), lower(${input.nameContains})) > 0`);
  const d = dir(input.order);
  const key = {
    name: textKey(sql`d.name`),
    createdAt: sql`d.created_at`,
    updatedAt: sql`d.updated_at`,
    imageCount: sql`"imageCount"`,
  }[input.sort];
  return pageOf<DatasetRow>(db, {
    select: DATASET_COLUMNS,
    from: sql`from core_schema.datasets d where ${allOf(where)}`,
    orderBy: sql`${key} ${d}, ${textKey(sql`d.name`)} ${d}`,
    page: input,
  });
}

export async function getDataset(db: Db, id: string): Promise<DatasetRow> {
  const { rows } = await db.execute<Record<string, unknown>>(sql`select ${DATASET_COLUMNS} from core_schema.datasets d where d.id = ${id}`);
  if (!rows[0]) throw new NotFoundError(`dataset ${id} not found`);
  return rows[0] as unknown as DatasetRow;
}

export async function createDataset(
  db: Db,
  input: { name: string; description?: string | null; imageIds?: string[] },
): Promise<DatasetRow> {
  return db.transaction(async (tx) => {
    await requireImages(tx, input.imageIds ?? [], 'imageIds');
    const { rows } = await tx.execute<{ id: string }>(sql`
      insert into core_schema.datasets (name, description) values (${input.name}, ${input.description ?? null})
      on conflict (name) do nothing returning id`);
    const id = rows[0]?.id;
    if (!id) throw new ConflictError(`a dataset named ${JSON.stringify(input.name)} exists already`);
    await recordDataEvent(tx, { entity: 'dataset', change: 'CREATED', source: 'api', ids: [id], data: { datasetId: id, name: input.name } });
    await addDatasetMembers(tx, id, input.imageIds ?? [], 'api');
    return getDataset(tx, id);
  });
}

export async function updateDataset(
  db: Db,
  id: string,
  input: { name?: string; description?: string | null },
): Promise<DatasetRow> {
  return db.transaction(async (tx) => {
    await lockDataset(tx, id);
    if (input.name !== undefined) {
      const taken = await findDataset(tx, { name: input.name });
      if (taken && taken.id !== id) throw new ConflictError(`a dataset named ${JSON.stringify(input.name)} exists already`);
    }
    await tx.execute(sql`
      update core_schema.datasets
      set name = coalesce(${input.name ?? null}, name),
          description = ${input.description === undefined ? sql`description` : input.description},
          updated_at = now()
      where id = ${id}`);
    const dataset = await getDataset(tx, id);
    const changes = Object.entries(input).filter(([, v]) => v !== undefined).map(([k]) => k);
    await recordDataEvent(tx, { entity: 'dataset', change: 'UPDATED', source: 'api', ids: [id], data: { datasetId: id, name: dataset.name, changes } });
    return dataset;
  });
}

/**
 * Deletes a dataset and its membership, in one transaction. Its images stay (with their captions,
 * and in the other datasets they belong to) unless `deleteImages`: then the images that belong to
 * no other dataset are deleted too, under the image rules (409, and nothing deleted, while a
 * pending or running job item uses one).
 */
export async function deleteDataset(
  db: Db,
  id: string,
  options: { deleteImages: boolean },
): Promise<{ deletedImages: number; keptImages: number }> {
  return db.transaction(async (tx) => {
    await lockDataset(tx, id);
    const members = (await listDatasetMembers(tx, id)).map((m) => m.imageId);
    let deletedImages = 0;
    if (options.deleteImages && members.length > 0) {
      const { rows } = await tx.execute<{ id: string }>(sql`
        select di.image_id as id from core_schema.dataset_images di
        where di.dataset_id = ${id}
          and not exists (select 1 from core_schema.dataset_images o where o.image_id = di.image_id and o.dataset_id <> ${id})`);
      deletedImages = await deleteImagesIn(tx, rows.map((r) => r.id));
    }
    const { rows: deleted } = await tx.execute<{ name: string }>(sql`delete from core_schema.datasets where id = ${id} returning name`);
    await recordDataEvent(tx, { entity: 'dataset', change: 'DELETED', source: 'api', ids: [id], data: { datasetId: id, name: deleted[0]?.name } });
    return { deletedImages, keptImages: members.length - deletedImages };
  });
}

/** Adds images to the dataset; returns how many were new members. */
export async function addImagesToDataset(db: Db, id: string, imageIds: string[]): Promise<number> {
  return db.transaction(async (tx) => {
    await lockDataset(tx, id);
    await requireImages(tx, imageIds, 'imageIds');
    const added = (await addDatasetMembers(tx, id, imageIds, 'api')).length;
    if (added > 0) await touchDatasets(tx, [id]);
    return added;
  });
}

/** Takes an image out of the dataset (the image itself stays); 404 when it is not a member. */
export async function removeImageFromDataset(db: Db, id: string, imageId: string): Promise<void> {
  await db.transaction(async (tx) => {
    await lockDataset(tx, id);
    const result = await tx.execute(
      sql`delete from core_schema.dataset_images where dataset_id = ${id} and image_id = ${imageId}`,
    );
    if (!result.rowCount) throw new NotFoundError(`image ${imageId} is not in dataset ${id}`);
    await recordMembershipChange(tx, { datasetId: id, source: 'api', removed: [imageId] });
    await touchDatasets(tx, [id]);
  });
}

async function lockDataset(tx: Db, id: string): Promise<void> {
  const { rows } = await tx.execute(sql`select 1 from core_schema.datasets where id = ${id} for update`);
  if (rows.length === 0) throw new NotFoundError(`dataset ${id} not found`);
}

/** 400 naming the field when an image id is unknown. */
async function requireImages(db: Db, imageIds: string[], field: string): Promise<void> {
  if (imageIds.length === 0) return;
  const { rows } = await db.execute<{ id: string }>(
    sql`select id from core_schema.images where id = any(${pgArray(imageIds)}::uuid[])`,
  );
  const known = new Set(rows.map((r) => r.id));
  const errors: FieldError[] = imageIds.flatMap((imageId, i) =>
    known.has(imageId) ? [] : [{ path: `${field}.${i}`, message: `unknown image ${imageId}` }],
  );
  if (errors.length > 0) throw new InvalidInputError(errors.map((e) => `${e.path}: ${e.message}`).join('; '), errors);
}
