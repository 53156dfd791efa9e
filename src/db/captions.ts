/**
 * Captions: the structured result of one perspective on one image, with the perspective's version
 * and revision, model, provider, and the job and item that made it. Coverage (which (image,
 * perspective) pairs have one), the latest per pair, and the API's list, get, create, update, delete.
 */
import { sql, type SQL } from 'drizzle-orm';
import { InvalidInputError, NotFoundError } from '../errors.js';
import type { Db, DbTime } from './client.js';
import { flushCaptionChanges, insertDataEvents, notifyEventsOf, recordDataEvent } from './data-events.js';
import { pgArray } from './sql.js';
import { allOf, dir, pageOf, textKey, type Order, type Page } from './lists.js';

export interface CoverageInput {
  /** Image ids to look at, or a dataset. */
  images: { ids: string[] } | { datasetId: string };
  perspectives: { id: string; name: string }[];
  /** How many missing pairs to list. */
  missingLimit: number;
}

export interface Coverage {
  imageCount: number;
  totalPairs: number;
  captioned: number;
  missing: number;
  byPerspective: { perspective: string; captioned: number; missing: number }[];
  missingPairs: { imageId: string; imagePath: string; perspective: string }[];
}

/**
 * Caption coverage of images × perspectives. Each pair is one index probe on
 * captions (image_id, perspective_id, created_at), so the cost follows the pairs asked about, not
 * the size of the captions table.
 */
export async function captionCoverage(db: Db, input: CoverageInput): Promise<Coverage> {
  const images: SQL =
    'ids' in input.images
      ? sql`(select id, path from core_schema.images where id = any(${pgArray(input.images.ids)}::uuid[]))`
      : sql`(select im.id, im.path from core_schema.dataset_images di
             join core_schema.images im on im.id = di.image_id where di.dataset_id = ${input.images.datasetId})`;
  const pairs = sql`
    select i.id as image_id, i.path, p.name, p.ord,
           exists (select 1 from core_schema.captions c where c.image_id = i.id and c.perspective_id = p.id) as has
    from ${images} i
    cross join unnest(${pgArray(input.perspectives.map((p) => p.name))}::text[],
                      ${pgArray(input.perspectives.map((p) => p.id))}::uuid[]) with ordinality as p(name, id, ord)`;
  const { rows: per } = await db.execute<{ perspective: string; captioned: number; missing: number; images: number }>(sql`
    with pairs as (${pairs})
    select name as perspective, count(*) filter (where has) as captioned, count(*) filter (where not has) as missing,
           count(*) as images
    from pairs group by name, ord order by ord`);
  const { rows: missing } = await db.execute<{ imageId: string; imagePath: string; perspective: string }>(sql`
    with pairs as (${pairs})
    select image_id as "imageId", path as "imagePath", name as perspective
    from pairs where not has order by path, ord limit ${input.missingLimit}`);
  const captioned = per.reduce((s, r) => s + r.captioned, 0);
  const missingCount = per.reduce((s, r) => s + r.missing, 0);
  return {
    imageCount: per[0]?.images ?? 0,
    totalPairs: captioned + missingCount,
    captioned,
    missing: missingCount,
    byPerspective: per.map(({ perspective, captioned, missing }) => ({ perspective, captioned, missing })),
    missingPairs: missing,
  };
}

// ---------------------------------------------------------------------------------------------
// The API

export type CaptionRow = {
  id: string;
  imageId: string;
  imagePath: string;
  perspectiveId: string;
  perspective: string;
  perspectiveVersion: string;
  perspectiveRevision: number | null;
  model: string | null;
  provider: string | null;
  result: Record<string, unknown>;
  rawText: string | null;
  jobId: string | null;
  itemId: string | null;
  createdAt: DbTime;
};

const CAPTION_FROM = sql.raw(`from core_schema.captions c
  join core_schema.images i on i.id = c.image_id
  join core_schema.perspectives p on p.id = c.perspective_id`);

const CAPTION_COLUMNS = sql.raw(`
  c.id, c.image_id as "imageId", i.path as "imagePath", c.perspective_id as "perspectiveId", p.name as perspective,
  c.perspective_version as "perspectiveVersion", c.perspective_revision as "perspectiveRevision", c.model, c.provider,
  c.result, c.raw_text as "rawText", c.job_id as "jobId", c.item_id as "itemId", c.created_at as "createdAt"`);

export const CAPTION_SORT_KEYS = ['createdAt', 'perspective', 'imagePath', 'model', 'provider'] as const;
export type CaptionSortKey = (typeof CAPTION_SORT_KEYS)[number];

export interface ListCaptionsInput {
  imageId?: string;
  perspectiveId?: string;
  /** Perspective names. */
  perspective?: string[];
  perspectiveRevision?: number;
  jobId?: string;
  model?: string;
  provider?: string;
  createdFrom?: string;
  createdTo?: string;
  sort: CaptionSortKey;
  order: Order;
  page: number;
  limit: number;
}

/**
 * A page of captions. Ties (and nulls, always last) are broken by creation time, then id. The
 * default order (createdAt) pages through captions_created_idx; the image, perspective and job
 * filters have indexes of their own. (At a million captions: a page in ~10 ms; the unfiltered total
 * counts the whole table, ~0.1 s.)
 */
export async function listCaptions(db: Db, input: ListCaptionsInput): Promise<Page<CaptionRow>> {
  const where: SQL[] = [];
  if (input.imageId) where.push(sql`c.image_id = ${input.imageId}`);
  if (input.perspectiveId) where.push(sql`c.perspective_id = ${input.perspectiveId}`);
  if (input.perspective?.length) where.push(sql`p.name = any(${pgArray(input.perspective)}::text[])`);
  if (input.perspectiveRevision !== undefined) where.push(sql`c.perspective_revision = ${input.perspectiveRevision}`);
  if (input.jobId) where.push(sql`c.job_id = ${input.jobId}`);
  if (input.model !== undefined) where.push(sql`c.model = ${input.model}`);
  if (input.provider !== undefined) where.push(sql`c.provider = ${input.provider}`);
  if (input.createdFrom) where.push(sql`c.created_at >= ${input.createdFrom}::timestamptz`);
  if (input.createdTo) where.push(sql`c.created_at < ${input.createdTo}::timestamptz`);
  const d = dir(input.order);
  const key = {
    createdAt: null,
    perspective: textKey(sql`p.name`),
    imagePath: textKey(sql`i.path`),
    model: textKey(sql`c.model`),
    provider: textKey(sql`c.provider`),
  }[input.sort];
  // Every caption has its image and perspective (foreign keys): the count joins only what a filter reads.
  const countJoin = input.perspective?.length ? sql`join core_schema.perspectives p on p.id = c.perspective_id` : sql``;
  return pageOf<CaptionRow>(db, {
    select: CAPTION_COLUMNS,
    from: sql`${CAPTION_FROM} where ${allOf(where)}`,
    countFrom: sql`from core_schema.captions c ${countJoin} where ${allOf(where)}`,
    orderBy: sql`${key ? sql`${key} ${d} nulls last, ` : sql``}c.created_at ${d}, c.id ${d}`,
    page: input,
  });
}

export async function getCaption(db: Db, id: string): Promise<CaptionRow> {
  const { rows } = await db.execute<Record<string, unknown>>(sql`select ${CAPTION_COLUMNS} ${CAPTION_FROM} where c.id = ${id}`);
  if (!rows[0]) throw new NotFoundError(`caption ${id} not found`);
  return rows[0] as unknown as CaptionRow;
}

/**
 * The newest caption of each perspective for one image (optionally only some perspectives), by
 * perspective name: one index range on captions (image_id, perspective_id, created_at desc).
 */
export async function latestCaptionsOfImage(db: Db, imageId: string, perspectiveNames?: string[]): Promise<CaptionRow[]> {
  const only = perspectiveNames?.length ? sql`and p.name = any(${pgArray(perspectiveNames)}::text[])` : sql``;
  const { rows } = await db.execute<Record<string, unknown>>(sql`
    select * from (
      select distinct on (c.perspective_id) ${CAPTION_COLUMNS} ${CAPTION_FROM}
      where c.image_id = ${imageId} ${only}
      order by c.perspective_id, c.created_at desc, c.id desc
    ) latest order by perspective collate "C"`);
  return rows as unknown as CaptionRow[];
}

export interface CaptionInput {
  imageId: string;
  perspectiveId?: string;
  perspective?: string;
  result: Record<string, unknown>;
  rawText?: string | null;
  model?: string | null;
  provider?: string | null;
}

/**
 * Stores a caption made outside the queue (no job, no item), with the perspective's current
 * version and revision. Unknown images or perspectives are a 400 naming the field.
 */
export async function createCaption(db: Db, input: CaptionInput): Promise<CaptionRow> {
  const perspective = input.perspectiveId
    ? sql`p.id = ${input.perspectiveId}`
    : sql`p.name = ${input.perspective ?? ''}`;
  const { rows } = await db.execute<{ id: string }>(sql`
    with created as (
      insert into core_schema.captions (image_id, perspective_id, perspective_version, perspective_revision, model, provider, result, raw_text)
      select i.id, p.id, p.version, p.revision, ${input.model ?? null}, ${input.provider ?? null},
             ${JSON.stringify(input.result)}::jsonb, ${input.rawText ?? null}
      from core_schema.images i, core_schema.perspectives p
      where i.id = ${input.imageId} and ${perspective}
      returning id
    ), written as (
      ${insertDataEvents({ entity: 'caption', change: 'CREATED', source: 'api', ids: sql`created` })}
      returning 1
    ), notified as (${notifyEventsOf('written')})
    select id from created, (select count(*) from notified) n`);
  if (!rows[0]) {
    const { rows: found } = await db.execute<{ image: boolean; perspective: boolean }>(sql`
      select exists (select 1 from core_schema.images where id = ${input.imageId}) as image,
             exists (select 1 from core_schema.perspectives p where ${perspective}) as perspective`);
    const errors = [
      ...(found[0]?.image ? [] : [{ path: 'imageId', message: `unknown image ${input.imageId}` }]),
      ...(found[0]?.perspective
        ? []
        : [{ path: input.perspectiveId ? 'perspectiveId' : 'perspective', message: `unknown perspective ${input.perspectiveId ?? JSON.stringify(input.perspective)}` }]),
    ];
    throw new InvalidInputError(errors.map((e) => `${e.path}: ${e.message}`).join('; '), errors);
  }
  return getCaption(db, rows[0].id);
}

/** Corrects a caption's result, raw text, model or provider; what made it and when stay. */
export async function updateCaption(
  db: Db,
  id: string,
  input: { result?: Record<string, unknown>; rawText?: string | null; model?: string | null; provider?: string | null },
): Promise<CaptionRow> {
  const keep = (column: string, value: unknown, json = false) =>
    value === undefined ? sql.raw(column) : json ? sql`${JSON.stringify(value)}::jsonb` : sql`${value}`;
  const changes = Object.entries(input).filter(([, v]) => v !== undefined).map(([k]) => k);
  await db.transaction(async (tx) => {
    // A caption a job just stored is announced first: its CAPTION_CREATED comes before this.
    await flushCaptionChanges(tx, [id]);
    const result = await tx.execute(sql`
      update core_schema.captions
      set result = ${keep('result', input.result, true)}, raw_text = ${keep('raw_text', input.rawText)},
          model = ${keep('model', input.model)}, provider = ${keep('provider', input.provider)}
      where id = ${id}`);
    if (!result.rowCount) throw new NotFoundError(`caption ${id} not found`);
    await recordDataEvent(tx, { entity: 'caption', change: 'UPDATED', source: 'api', ids: [id], data: { changes } });
  });
  return getCaption(db, id);
}

export async function deleteCaption(db: Db, id: string): Promise<void> {
  await db.transaction(async (tx) => {
    await flushCaptionChanges(tx, [id]);
    const result = await tx.execute(sql`delete from core_schema.captions where id = ${id}`);
    if (!result.rowCount) throw new NotFoundError(`caption ${id} not found`);
    await recordDataEvent(tx, { entity: 'caption', change: 'DELETED', source: 'api', ids: [id] });
  });
}
