/** Captions: which (image, perspective) pairs have one and which are missing. */
import { sql, type SQL } from 'drizzle-orm';
import type { Db } from './client.js';
import { pgArray } from './jobs.js';

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
