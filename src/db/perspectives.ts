/** Perspectives: upsert from the library, lookups by name. */
import { inArray, sql } from 'drizzle-orm';
import type { PerspectiveDefinition } from '../workspace.js';
import type { Db } from './client.js';
import { perspectives } from './schema.js';

export interface UpsertCounts {
  added: number;
  updated: number;
  unchanged: number;
}

/**
 * Inserts new perspectives and rewrites changed ones (by definition hash or enablement); an
 * unchanged definition leaves its row untouched, so a re-import is idempotent.
 */
export async function upsertPerspectives(db: Db, definitions: PerspectiveDefinition[]): Promise<UpsertCounts> {
  const counts: UpsertCounts = { added: 0, updated: 0, unchanged: 0 };
  for (const d of definitions) {
    const values = {
      name: d.name,
      displayName: d.displayName,
      version: d.version,
      module: d.module,
      description: d.description,
      prompt: d.prompt,
      schemaFields: d.schemaFields,
      tags: d.tags,
      priority: d.priority,
      deprecated: d.deprecated,
      replacement: d.replacement,
      enabled: d.enabled,
      definition: d.definition,
      definitionHash: d.definitionHash,
      sourcePath: d.sourcePath,
    };
    const { name: _name, ...changes } = values;
    const rows = await db
      .insert(perspectives)
      .values(values)
      .onConflictDoUpdate({
        target: perspectives.name,
        set: { ...changes, updatedAt: sql`now()` },
        setWhere: sql`${perspectives.definitionHash} is distinct from excluded.definition_hash
          or ${perspectives.enabled} is distinct from excluded.enabled`,
      })
      // xmax = 0 only on a freshly inserted row version.
      .returning({ inserted: sql<boolean>`(xmax = 0)` });
    const row = rows[0];
    if (!row) counts.unchanged += 1;
    else if (row.inserted) counts.added += 1;
    else counts.updated += 1;
  }
  return counts;
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
