/**
 * Perspectives: import from the library with a revision per definition change, the API (list from
 * an in-memory cache, get, create, update, delete, versions), lookups by name for the queue.
 */
import { createHash } from 'node:crypto';
import { inArray, sql } from 'drizzle-orm';
import { ConflictError, NotFoundError } from '../errors.js';
import { hashDefinition, type PerspectiveDefinition } from '../workspace/library.js';
import type { Db, DbTime } from './client.js';
import { CHUNKED_ITEMS } from './item-chunks.js';
import { flushCaptionChanges, recordDataEvent, type ChangeSource } from './data-events.js';
import { pgArray } from './sql.js';
import { dir, pageOf, type Order, type Page } from './lists.js';
import { perspectives } from './schema.js';

export interface PerspectiveSyncCounts {
  added: number;
  /** Definition or enablement changed. */
  updated: number;
  unchanged: number;
  /** Library perspectives whose file is gone: detached from the library and disabled. */
  removed: number;
  changes: { added: string[]; updated: string[]; removed: string[] };
}

type ExistingRow = {
  id: string;
  definitionHash: string;
  enabled: boolean;
  sourcePath: string | null;
};

/**
 * Brings the table in line with the library. A new perspective starts at revision 1; a changed
 * definition (by content hash, whatever its `version` says) becomes the next revision and is kept
 * in perspective_versions, so captions made earlier still name the definition they were made
 * with. A module's enablement changes `enabled` without a new revision. Library perspectives whose
 * file is gone are detached (source_path null) and disabled, never deleted: their captions stay.
 * `removals` false (no library folder at all) skips that last step.
 */
export async function syncLibraryPerspectives(
  db: Db,
  definitions: PerspectiveDefinition[],
  options: { removals: boolean; skippedFiles: string[] },
): Promise<PerspectiveSyncCounts> {
  const counts: PerspectiveSyncCounts = { added: 0, updated: 0, unchanged: 0, removed: 0, changes: { added: [], updated: [], removed: [] } };
  for (const d of definitions) {
    const values = sql`${d.displayName}, ${d.version}, ${d.module}, ${d.description}, ${d.prompt},
      ${JSON.stringify(d.schemaFields)}::jsonb, ${pgArray(d.tags)}::text[], ${d.priority}, ${d.deprecated}, ${d.replacement},
      ${d.enabled}, ${JSON.stringify(d.definition)}::jsonb, ${d.definitionHash}, ${d.sourcePath}`;
    const { rows: inserted } = await db.execute<{ id: string }>(sql`
      insert into core_schema.perspectives
        (name, display_name, version, module, description, prompt, schema_fields, tags, priority, deprecated, replacement,
         enabled, definition, definition_hash, source_path)
      values (${d.name}, ${values})
      on conflict (name) do nothing
      returning id`);
    if (inserted[0]) {
      await recordVersion(db, inserted[0].id);
      await recordPerspectiveEvent(db, inserted[0].id, 'CREATED', 'library', { newRevision: true });
      counts.added += 1;
      counts.changes.added.push(d.name);
      continue;
    }
    const { rows } = await db.execute<ExistingRow>(sql`
      select id, definition_hash as "definitionHash", enabled, source_path as "sourcePath"
      from core_schema.perspectives where name = ${d.name} for update`);
    const row = rows[0]!;
    if (row.definitionHash !== d.definitionHash) {
      await db.execute(sql`
        update core_schema.perspectives
        set (display_name, version, module, description, prompt, schema_fields, tags, priority, deprecated, replacement,
             enabled, definition, definition_hash, source_path) = (${values}),
            revision = revision + 1, updated_at = now()
        where id = ${row.id}`);
      await recordVersion(db, row.id);
      await recordPerspectiveEvent(db, row.id, 'UPDATED', 'library', { newRevision: true, changes: ['definition'] });
    } else if (row.enabled !== d.enabled || row.sourcePath !== d.sourcePath) {
      await db.execute(sql`
        update core_schema.perspectives set enabled = ${d.enabled}, source_path = ${d.sourcePath}, updated_at = now()
        where id = ${row.id}`);
      const changes = [...(row.enabled !== d.enabled ? ['enabled'] : []), ...(row.sourcePath !== d.sourcePath ? ['sourcePath'] : [])];
      await recordPerspectiveEvent(db, row.id, 'UPDATED', 'library', { newRevision: false, changes });
    } else {
      counts.unchanged += 1;
      continue;
    }
    counts.updated += 1;
    counts.changes.updated.push(d.name);
  }
  if (options.removals) {
    const { rows } = await db.execute<{ id: string; name: string }>(sql`
      update core_schema.perspectives set source_path = null, enabled = false, updated_at = now()
      where source_path is not null
        and name <> all(${pgArray(definitions.map((d) => d.name))}::text[])
        and source_path <> all(${pgArray(options.skippedFiles)}::text[])
      returning id, name`);
    for (const { id } of rows) {
      await recordPerspectiveEvent(db, id, 'UPDATED', 'library', { newRevision: false, changes: ['enabled', 'sourcePath'] });
    }
    counts.removed = rows.length;
    counts.changes.removed = rows.map((r) => r.name).sort();
  }
  return counts;
}

/** A perspective event with its name and current revision (`newRevision`: this change made it). */
async function recordPerspectiveEvent(
  tx: Db,
  id: string,
  change: 'CREATED' | 'UPDATED',
  source: ChangeSource,
  data: { newRevision: boolean; changes?: string[] },
): Promise<void> {
  const { rows } = await tx.execute<{ name: string; revision: number }>(
    sql`select name, revision from core_schema.perspectives where id = ${id}`,
  );
  await recordDataEvent(tx, { entity: 'perspective', change, source, ids: [id], data: { ...rows[0], ...data } });
}

/** Copies the perspective's current definition into perspective_versions under its revision. */
async function recordVersion(tx: Db, id: string): Promise<void> {
  await tx.execute(sql`
    insert into core_schema.perspective_versions (perspective_id, revision, version, definition, definition_hash, source_path)
    select id, revision, version, definition, definition_hash, source_path from core_schema.perspectives where id = ${id}
    on conflict do nothing`);
}

export async function findPerspectivesByName(db: Db, names: string[]) {
  if (names.length === 0) return [];
  return db
    .select({ id: perspectives.id, name: perspectives.name, version: perspectives.version, enabled: perspectives.enabled })
    .from(perspectives)
    .where(inArray(perspectives.name, names));
}

export async function listEnabledPerspectiveNames(db: Db): Promise<string[]> {
  const rows = await db
    .select({ name: perspectives.name })
    .from(perspectives)
    .where(sql`${perspectives.enabled}`)
    .orderBy(perspectives.name);
  return rows.map((r) => r.name);
}

// ---------------------------------------------------------------------------------------------
// The API

export type PerspectiveRow = {
  id: string;
  name: string;
  displayName: string;
  version: string;
  revision: number;
  module: string;
  description: string | null;
  prompt: string;
  schemaFields: Record<string, unknown>[];
  tags: string[];
  priority: number;
  deprecated: boolean;
  replacement: string | null;
  enabled: boolean;
  sourcePath: string | null;
  definition: Record<string, unknown>;
  definitionHash: string;
  createdAt: DbTime;
  updatedAt: DbTime;
};

const PERSPECTIVE_COLUMNS = sql.raw(`
  p.id, p.name, p.display_name as "displayName", p.version, p.revision, p.module, p.description, p.prompt,
  p.schema_fields as "schemaFields", p.tags, p.priority, p.deprecated, p.replacement, p.enabled,
  p.source_path as "sourcePath", p.definition, p.definition_hash as "definitionHash",
  p.created_at as "createdAt", p.updated_at as "updatedAt"`);

export const PERSPECTIVE_SORT_KEYS = ['name', 'displayName', 'module', 'priority', 'createdAt', 'updatedAt'] as const;
export type PerspectiveSortKey = (typeof PERSPECTIVE_SORT_KEYS)[number];

export interface ListPerspectivesInput {
  module?: string[];
  /** Perspectives carrying every one of these tags. */
  tag?: string[];
  enabled?: boolean;
  deprecated?: boolean;
  nameContains?: string;
  sort: PerspectiveSortKey;
  order: Order;
  page: number;
  limit: number;
}

// ---- The cache of the whole table

/**
 * The perspective list is read on every screen of the UI and changes rarely, so each process
 * keeps the whole table (tens to hundreds of rows) in memory and filters, sorts and pages it there.
 * Before each use it asks PostgreSQL for the table's fingerprint: an md5 over every row's id and
 * xmin (the transaction that wrote that row version). Any insert, update or delete, by this
 * process, another replica or plain SQL, changes it. (max(updated_at) and count(*) would not do:
 * a transaction that began earlier but commits later writes an older updated_at.) The check reads
 * only the small heap of this table; the rows, their jsonb and the mapping are what is saved.
 */
interface CachedRow {
  row: PerspectiveRow;
  /** Microseconds since the epoch: sorts by time with PostgreSQL's precision, not a Date's. */
  createdUs: number;
  updatedUs: number;
}

interface CachedTable {
  fingerprint: string;
  rows: CachedRow[];
}

const caches = new WeakMap<Db, CachedTable>();
const stats = new WeakMap<Db, { hits: number; loads: number }>();

const fingerprintOf = (rows: { id: string; xmin: string }[]) =>
  createHash('md5')
    .update([...rows].sort((a, b) => (a.id < b.id ? -1 : 1)).map((r) => `${r.id}:${r.xmin}`).join(','))
    .digest('hex');

async function cachedPerspectives(db: Db): Promise<CachedRow[]> {
  const counter = stats.get(db) ?? { hits: 0, loads: 0 };
  stats.set(db, counter);
  const cached = caches.get(db);
  if (cached) {
    const { rows } = await db.execute<{ fingerprint: string }>(sql`
      select md5(coalesce(string_agg(id::text || ':' || xmin::text, ',' order by id), '')) as fingerprint
      from core_schema.perspectives`);
    if (rows[0]?.fingerprint === cached.fingerprint) {
      counter.hits += 1;
      return cached.rows;
    }
  }
  // One statement: the rows and the fingerprint come from the same snapshot.
  const { rows } = await db.execute<PerspectiveRow & { xmin: string; createdUs: number; updatedUs: number }>(sql`
    select ${PERSPECTIVE_COLUMNS}, p.xmin::text as xmin,
           (extract(epoch from p.created_at) * 1000000)::int8 as "createdUs",
           (extract(epoch from p.updated_at) * 1000000)::int8 as "updatedUs"
    from core_schema.perspectives p`);
  const fingerprint = fingerprintOf(rows);
  const table = rows.map(({ xmin: _xmin, createdUs, updatedUs, ...row }) => ({ row: row as PerspectiveRow, createdUs, updatedUs }));
  caches.set(db, { fingerprint, rows: table });
  counter.loads += 1;
  return table;
}

/** How often this process's perspective list was served from memory, and how often loaded. */
export function perspectiveCacheStats(db: Db): { hits: number; loads: number } {
  return { ...(stats.get(db) ?? { hits: 0, loads: 0 }) };
}

const compareText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** A page of perspectives, from the cache; ties broken by name (code point order, like the SQL lists). */
export async function listPerspectives(db: Db, input: ListPerspectivesInput): Promise<Page<PerspectiveRow>> {
  const all = await cachedPerspectives(db);
  const needle = input.nameContains?.toLowerCase();
  const matching = all.filter(
    ({ row: p }) =>
      (!input.module?.length || input.module.includes(p.module)) &&
      (!input.tag?.length || input.tag.every((t) => p.tags.includes(t))) &&
      (input.enabled === undefined || p.enabled === input.enabled) &&
      (input.deprecated === undefined || p.deprecated === input.deprecated) &&
      (!needle || p.name.toLowerCase().includes(needle)),
  );
  const key: (a: CachedRow, b: CachedRow) => number = {
    name: () => 0,
    displayName: (a: CachedRow, b: CachedRow) => compareText(a.row.displayName, b.row.displayName),
    module: (a: CachedRow, b: CachedRow) => compareText(a.row.module, b.row.module),
    priority: (a: CachedRow, b: CachedRow) => a.row.priority - b.row.priority,
    createdAt: (a: CachedRow, b: CachedRow) => a.createdUs - b.createdUs,
    updatedAt: (a: CachedRow, b: CachedRow) => a.updatedUs - b.updatedUs,
  }[input.sort];
  const sign = input.order === 'desc' ? -1 : 1;
  const sorted = matching.sort((a, b) => sign * (key(a, b) || compareText(a.row.name, b.row.name)));
  const start = (input.page - 1) * input.limit;
  return { items: sorted.slice(start, start + input.limit).map((c) => c.row), total: sorted.length };
}

export async function getPerspective(db: Db, id: string): Promise<PerspectiveRow> {
  const { rows } = await db.execute<Record<string, unknown>>(
    sql`select ${PERSPECTIVE_COLUMNS} from core_schema.perspectives p where p.id = ${id}`,
  );
  if (!rows[0]) throw new NotFoundError(`perspective ${id} not found`);
  return rows[0] as unknown as PerspectiveRow;
}

/** The fields a perspective is made of, as the API takes them. */
export interface PerspectiveFields {
  displayName: string;
  version: string;
  module: string;
  description: string | null;
  prompt: string;
  schemaFields: Record<string, unknown>[];
  tags: string[];
  priority: number;
  deprecated: boolean;
  replacement: string | null;
}

/** The definition in graphcap's file format (snake_case), as the library would hold it. */
function definitionOf(name: string, f: PerspectiveFields, base: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ...base,
    name,
    display_name: f.displayName,
    version: f.version,
    prompt: f.prompt,
    schema_fields: f.schemaFields,
    module: f.module,
    tags: f.tags,
    priority: f.priority,
    deprecated: f.deprecated,
    replacement: f.replacement,
    description: f.description,
  };
}

const fieldValues = (f: PerspectiveFields) => sql`${f.displayName}, ${f.version}, ${f.module}, ${f.description}, ${f.prompt},
  ${JSON.stringify(f.schemaFields)}::jsonb, ${pgArray(f.tags)}::text[], ${f.priority}, ${f.deprecated}, ${f.replacement}`;

/** Creates a perspective outside the library (revision 1); 409 when the name is taken. */
export async function createPerspective(
  db: Db,
  input: PerspectiveFields & { name: string; enabled: boolean },
): Promise<PerspectiveRow> {
  return db.transaction(async (tx) => {
    const definition = definitionOf(input.name, input);
    const { rows } = await tx.execute<{ id: string }>(sql`
      insert into core_schema.perspectives
        (display_name, version, module, description, prompt, schema_fields, tags, priority, deprecated, replacement,
         name, enabled, definition, definition_hash)
      values (${fieldValues(input)}, ${input.name}, ${input.enabled}, ${JSON.stringify(definition)}::jsonb, ${hashDefinition(definition)})
      on conflict (name) do nothing
      returning id`);
    const id = rows[0]?.id;
    if (!id) throw new ConflictError(`a perspective named ${JSON.stringify(input.name)} exists already`);
    await recordVersion(tx, id);
    await recordPerspectiveEvent(tx, id, 'CREATED', 'api', { newRevision: true });
    return getPerspective(tx, id);
  });
}

/**
 * Changes a perspective made through the API. A changed definition becomes a new revision;
 * `enabled` alone does not. Library perspectives are refused (409): their file is their source,
 * and the next import would undo the change.
 */
export async function updatePerspective(
  db: Db,
  id: string,
  input: Partial<PerspectiveFields> & { enabled?: boolean },
): Promise<PerspectiveRow> {
  return db.transaction(async (tx) => {
    const { rows } = await tx.execute<PerspectiveRow>(
      sql`select ${PERSPECTIVE_COLUMNS} from core_schema.perspectives p where p.id = ${id} for update`,
    );
    const current = rows[0];
    if (!current) throw new NotFoundError(`perspective ${id} not found`);
    refuseLibrary(current, 'changed');
    const { enabled, ...changes } = input;
    const fields: PerspectiveFields = {
      displayName: changes.displayName ?? current.displayName,
      version: changes.version ?? current.version,
      module: changes.module ?? current.module,
      description: changes.description === undefined ? current.description : changes.description,
      prompt: changes.prompt ?? current.prompt,
      schemaFields: changes.schemaFields ?? current.schemaFields,
      tags: changes.tags ?? current.tags,
      priority: changes.priority ?? current.priority,
      deprecated: changes.deprecated ?? current.deprecated,
      replacement: changes.replacement === undefined ? current.replacement : changes.replacement,
    };
    const definition = definitionOf(current.name, fields, current.definition);
    const hash = hashDefinition(definition);
    if (hash !== current.definitionHash) {
      await tx.execute(sql`
        update core_schema.perspectives
        set (display_name, version, module, description, prompt, schema_fields, tags, priority, deprecated, replacement)
              = (${fieldValues(fields)}),
            definition = ${JSON.stringify(definition)}::jsonb, definition_hash = ${hash}, revision = revision + 1,
            updated_at = now()
        where id = ${id}`);
      await recordVersion(tx, id);
    }
    if (enabled !== undefined && enabled !== current.enabled) {
      await tx.execute(sql`update core_schema.perspectives set enabled = ${enabled}, updated_at = now() where id = ${id}`);
    }
    const newRevision = hash !== current.definitionHash;
    const changed = [...(newRevision ? ['definition'] : []), ...(enabled !== undefined && enabled !== current.enabled ? ['enabled'] : [])];
    if (changed.length > 0) await recordPerspectiveEvent(tx, id, 'UPDATED', 'api', { newRevision, changes: changed });
    return getPerspective(tx, id);
  });
}

/**
 * Deletes a perspective made through the API, with its captions and versions. Refused (409) for
 * library perspectives and while pending or running job items use it.
 */
export async function deletePerspective(db: Db, id: string): Promise<void> {
  await db.transaction(async (tx) => {
    const { rows } = await tx.execute<PerspectiveRow>(
      sql`select ${PERSPECTIVE_COLUMNS} from core_schema.perspectives p where p.id = ${id} for update`,
    );
    const current = rows[0];
    if (!current) throw new NotFoundError(`perspective ${id} not found`);
    refuseLibrary(current, 'deleted');
    const { rows: active } = await tx.execute<{ n: number }>(sql`
      select (select count(*) from job_queue.job_items where perspective = ${current.name} and status in ('pending', 'running'))
           + (select count(*) from ${CHUNKED_ITEMS} q where q.perspective = ${current.name}) as n`);
    if ((active[0]?.n ?? 0) > 0) {
      throw new ConflictError(`perspective ${current.name} is used by ${active[0]!.n} pending or running job item(s)`);
    }
    // Its captions go with it: said first.
    const { rows: captions } = await tx.execute<{ id: string }>(sql`select id from core_schema.captions where perspective_id = ${id}`);
    await flushCaptionChanges(tx, captions.map((c) => c.id));
    await tx.execute(sql`delete from core_schema.perspectives where id = ${id}`);
    await recordDataEvent(tx, { entity: 'caption', change: 'DELETED', source: 'api', ids: captions.map((c) => c.id) });
    await recordDataEvent(tx, { entity: 'perspective', change: 'DELETED', source: 'api', ids: [id], data: { name: current.name } });
  });
}

function refuseLibrary(row: PerspectiveRow, what: string): void {
  if (row.sourcePath) {
    throw new ConflictError(
      `perspective ${row.name} comes from ${row.sourcePath}: it can only be ${what} there (then sync the workspace)`,
    );
  }
}

// ---- Versions

export type PerspectiveVersionRow = {
  perspectiveId: string;
  revision: number;
  version: string;
  definition: Record<string, unknown>;
  definitionHash: string;
  sourcePath: string | null;
  createdAt: DbTime;
};

const VERSION_COLUMNS = sql.raw(`
  v.perspective_id as "perspectiveId", v.revision, v.version, v.definition, v.definition_hash as "definitionHash",
  v.source_path as "sourcePath", v.created_at as "createdAt"`);

/** A page of the perspective's revisions; 404 for an unknown perspective. */
export async function listPerspectiveVersions(
  db: Db,
  id: string,
  input: { order: Order; page: number; limit: number },
): Promise<Page<PerspectiveVersionRow>> {
  await getPerspective(db, id);
  return pageOf<PerspectiveVersionRow>(db, {
    select: VERSION_COLUMNS,
    from: sql`from core_schema.perspective_versions v where v.perspective_id = ${id}`,
    orderBy: sql`v.revision ${dir(input.order)}`,
    page: input,
  });
}

export async function getPerspectiveVersion(db: Db, id: string, revision: number): Promise<PerspectiveVersionRow> {
  const { rows } = await db.execute<Record<string, unknown>>(sql`
    select ${VERSION_COLUMNS} from core_schema.perspective_versions v where v.perspective_id = ${id} and v.revision = ${revision}`);
  if (!rows[0]) throw new NotFoundError(`perspective ${id} has no revision ${revision}`);
  return rows[0] as unknown as PerspectiveVersionRow;
}
