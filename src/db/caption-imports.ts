/**
 * The database side of importing graphcap's captions.jsonl files (src/workspace/caption-import.ts):
 * which files changed since they were read, and the captions of their lines, each once (import_key).
 */
import { sql } from 'drizzle-orm';
import type { Db } from './client.js';
import { insertDataEvents, notifyEventsOf } from './data-events.js';

/** A caption of a line, ready to store. */
export interface ImportedCaption {
  imagePath: string;
  perspective: string;
  version: string | null;
  model: string | null;
  provider: string | null;
  result: Record<string, unknown>;
  key: string;
}

/** The files among these that were read before as they are now (same size and modification time). */
export async function unchangedCaptionFiles(db: Db, files: readonly { path: string; sizeBytes: number; mtime: Date }[]): Promise<Set<string>> {
  if (files.length === 0) return new Set();
  const { rows } = await db.execute<{ path: string }>(sql`
    select f.path from core_schema.caption_files f
    join jsonb_to_recordset(${JSON.stringify(files.map((f) => ({ path: f.path, size: f.sizeBytes, mtime: f.mtime.toISOString() })))}::jsonb)
      as g(path text, size bigint, mtime timestamptz)
      on g.path = f.path and g.size = f.size_bytes and g.mtime = f.file_mtime`);
  return new Set(rows.map((r) => r.path));
}

/** Remembers files as read, with their size and modification time. */
export async function recordCaptionFiles(db: Db, files: readonly { path: string; sizeBytes: number; mtime: Date }[]): Promise<void> {
  if (files.length === 0) return;
  await db.execute(sql`
    insert into core_schema.caption_files (path, size_bytes, file_mtime)
    select g.path, g.size, g.mtime
    from jsonb_to_recordset(${JSON.stringify(files.map((f) => ({ path: f.path, size: f.sizeBytes, mtime: f.mtime.toISOString() })))}::jsonb)
      as g(path text, size bigint, mtime timestamptz)
    on conflict (path) do update set size_bytes = excluded.size_bytes, file_mtime = excluded.file_mtime, imported_at = now()`);
}

/**
 * Stores the captions, in their order (the later the newer: a later line of a file wins), each
 * once: a caption whose key is stored already (the same line, or a caption written out from here)
 * is left out. Returns how many were stored and the image paths that are no registered image.
 */
export async function importCaptions(db: Db, captions: readonly ImportedCaption[]): Promise<{ imported: number; missing: string[] }> {
  if (captions.length === 0) return { imported: 0, missing: [] };
  const { rows } = await db.execute<{ imported: number; missing: string[] }>(sql`
    with given as (
      select *, row_number() over () as ord
      from jsonb_to_recordset(${JSON.stringify(captions)}::jsonb)
        as g("imagePath" text, perspective text, version text, model text, provider text, result jsonb, key text)
    ), stored as (
      insert into core_schema.captions (image_id, perspective_id, perspective_version, model, provider, result, import_key, created_at)
      select i.id, p.id, coalesce(g.version, p.version), g.model, g.provider, g.result, g.key,
             now() + make_interval(secs => g.ord / 1000000.0)
      from given g
      join core_schema.images i on i.path = g."imagePath"
      join core_schema.perspectives p on p.name = g.perspective
      order by g.ord
      on conflict (import_key) where import_key is not null do nothing
      returning id
    ), written as (
      ${insertDataEvents({ entity: 'caption', change: 'CREATED', source: 'import', ids: sql`stored` })}
      returning 1
    ), notified as (${notifyEventsOf('written')})
    select (select count(*) from stored)::int as imported, (select count(*) from notified) as notified,
           coalesce((select array_agg(distinct g."imagePath") from given g
                     where not exists (select 1 from core_schema.images i where i.path = g."imagePath")), '{}') as missing`);
  return rows[0] ?? { imported: 0, missing: [] };
}

/** The names of every perspective (a captions file's batch folder or config_name must be one). */
export async function perspectiveNames(db: Db): Promise<Set<string>> {
  const { rows } = await db.execute<{ name: string }>(sql`select name from core_schema.perspectives`);
  return new Set(rows.map((r) => r.name));
}
