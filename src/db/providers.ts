/**
 * The AI providers jobs call (graphcap's providers): CRUD, the import of the providers file, and
 * the misconfigured mark a provider gets when it refuses its credentials. API keys are stored
 * sealed (src/secrets.ts) and leave this module only as a Sealed value.
 */
import { and, asc, desc, eq, ilike, sql, type SQL } from 'drizzle-orm';
import { ConflictError, NotFoundError, type FieldError } from '../errors.js';
import type { Sealed } from '../secrets.js';
import { PROVIDERS_CHANNEL } from './channels.js';
import type { Db } from './client.js';
import { recordDataEvent, type ChangeSource } from './data-events.js';
import type { Order, Page } from './lists.js';
import { providers, type ProviderEnvironment, type ProviderModel, type ProviderSource } from './schema.js';

export type ProviderRow = typeof providers.$inferSelect;

export const PROVIDER_SORT_KEYS = ['name', 'createdAt', 'updatedAt'] as const;
export type ProviderSortKey = (typeof PROVIDER_SORT_KEYS)[number];

export interface ListProvidersInput {
  kind?: string;
  isEnabled?: boolean;
  nameContains?: string;
  sort: ProviderSortKey;
  order: Order;
  page: number;
  limit: number;
}

/** The fields a provider is made of; `apiKey` sealed. */
export interface ProviderFields {
  name: string;
  kind: string;
  environment: ProviderEnvironment;
  baseUrl: string;
  apiKey: Sealed | null;
  isEnabled: boolean;
  models: ProviderModel[];
  defaultModel: string | null;
  requestsPerMinute: number | null;
  tokensPerMinute: number | null;
}

/** Jobs that still have work and name the provider in their config. */
const activeJobsUsing = (name: string) => sql`(
  select count(*)::int from job_queue.caption_jobs j
  where j.status in ('pending', 'running', 'paused') and not j.archived and j.config->>'provider' = ${name})`;

export async function listProviders(db: Db, input: ListProvidersInput): Promise<Page<ProviderRow>> {
  const where: SQL[] = [];
  if (input.kind !== undefined) where.push(eq(providers.kind, input.kind));
  if (input.isEnabled !== undefined) where.push(eq(providers.isEnabled, input.isEnabled));
  if (input.nameContains) where.push(ilike(providers.name, `%${input.nameContains.replace(/[\\%_]/g, '\\$&')}%`));
  const column = { name: sql`${providers.name} collate "C"`, createdAt: providers.createdAt, updatedAt: providers.updatedAt }[input.sort];
  const direction = input.order === 'desc' ? desc : asc;
  const condition = where.length > 0 ? and(...where) : undefined;
  const items = await db
    .select()
    .from(providers)
    .where(condition)
    .orderBy(direction(column), direction(sql`${providers.name} collate "C"`))
    .limit(input.limit)
    .offset((input.page - 1) * input.limit);
  const [counted] = await db.select({ n: sql<number>`count(*)::int` }).from(providers).where(condition);
  return { items, total: counted?.n ?? 0 };
}

export async function getProvider(db: Db, id: string): Promise<ProviderRow> {
  const [row] = await db.select().from(providers).where(eq(providers.id, id));
  if (!row) throw new NotFoundError(`provider ${id} not found`);
  return row;
}

export async function findProviderByName(db: Db, name: string): Promise<ProviderRow | undefined> {
  const [row] = await db.select().from(providers).where(eq(providers.name, name));
  return row;
}

/** Every provider, for the dispatcher's cache of what calls need (small: a handful of rows). */
export async function loadAllProviders(db: Db): Promise<ProviderRow[]> {
  return db.select().from(providers);
}

export async function createProvider(db: Db, fields: ProviderFields, source: ProviderSource = 'api'): Promise<ProviderRow> {
  return db.transaction(async (tx) => {
    const [row] = await tx
      .insert(providers)
      .values({ ...fields, source })
      .onConflictDoNothing({ target: providers.name })
      .returning();
    if (!row) throw new ConflictError(`a provider named ${JSON.stringify(fields.name)} exists already`);
    await notifyProviderChange(tx, row.name);
    await recordProviderEvent(tx, row.id, 'CREATED', source, row.name);
    return row;
  });
}

/**
 * Changes a provider made through the API (a providers-file one is the file's: 409). Any change
 * clears the misconfigured mark: the jobs it paused may be resumed. Renaming a provider that
 * unfinished jobs name is refused (409): they would lose it.
 */
export async function updateProvider(db: Db, id: string, changes: Partial<ProviderFields>): Promise<ProviderRow> {
  return db.transaction(async (tx) => {
    const current = await lockProvider(tx, id);
    if (current.source === 'config') {
      throw new ConflictError(`provider ${current.name} is defined in the providers file (PROVIDERS_FILE): change it there and restart`);
    }
    if (changes.name !== undefined && changes.name !== current.name) {
      const used = await countActiveJobsUsing(tx, current.name);
      if (used > 0) throw new ConflictError(`provider ${current.name} is used by ${used} unfinished job(s); it cannot be renamed until they finish`);
      const taken = await findProviderByName(tx, changes.name);
      if (taken) throw new ConflictError(`a provider named ${JSON.stringify(changes.name)} exists already`);
    }
    const [row] = await tx
      .update(providers)
      .set({ ...changes, misconfiguredAt: null, misconfiguredReason: null, updatedAt: sql`now()` })
      .where(eq(providers.id, id))
      .returning();
    await notifyProviderChange(tx, current.name);
    if (row!.name !== current.name) await notifyProviderChange(tx, row!.name);
    await recordProviderEvent(tx, id, 'UPDATED', 'api', row!.name, Object.keys(changes));
    return row!;
  });
}

/** Deletes a provider; 409 while unfinished jobs name it, or when the providers file defines it. */
export async function deleteProvider(db: Db, id: string): Promise<void> {
  await db.transaction(async (tx) => {
    const current = await lockProvider(tx, id);
    if (current.source === 'config') {
      throw new ConflictError(`provider ${current.name} is defined in the providers file (PROVIDERS_FILE): remove it there and restart`);
    }
    const used = await countActiveJobsUsing(tx, current.name);
    if (used > 0) throw new ConflictError(`provider ${current.name} is used by ${used} unfinished job(s); cancel them or let them finish first`);
    await tx.delete(providers).where(eq(providers.id, id));
    await notifyProviderChange(tx, current.name);
    await recordProviderEvent(tx, id, 'DELETED', 'api', current.name);
  });
}

/**
 * What a new job may name: a stored provider that is enabled and lists the model (a provider that
 * lists none takes any), unless the job brings its own provider_config. The problems, each naming
 * its field (none: the job may use the provider).
 */
export async function providerProblems(db: Db, config: { provider: string; model: string; providerConfig?: unknown }): Promise<FieldError[]> {
  if (config.providerConfig !== undefined) return [];
  const row = await findProviderByName(db, config.provider);
  const errors: FieldError[] = [];
  if (!row) {
    errors.push({ path: 'config.provider', message: `unknown provider ${JSON.stringify(config.provider)}: create it (POST /api/providers) or give config.providerConfig` });
  } else if (!row.isEnabled) {
    errors.push({ path: 'config.provider', message: `provider ${row.name} is disabled` });
  } else if (row.models.length > 0 && !row.models.some((m) => m.isEnabled && m.name === config.model)) {
    const enabled = row.models.filter((m) => m.isEnabled).map((m) => m.name);
    errors.push({ path: 'config.model', message: `provider ${row.name} has no enabled model ${JSON.stringify(config.model)} (it has: ${enabled.join(', ') || 'none enabled'})` });
  }
  return errors;
}

export async function countActiveJobsUsing(db: Db, name: string): Promise<number> {
  const { rows } = await db.execute<{ n: number }>(sql`select ${activeJobsUsing(name)} as n`);
  return rows[0]?.n ?? 0;
}

/**
 * The provider refused its credentials: mark it, so its jobs pause (pauseJobsOfBlockedProviders)
 * and no more of its items are tried until it is changed. The first reason stays.
 */
export async function markProviderMisconfigured(db: Db, name: string, reason: string): Promise<boolean> {
  return db.transaction(async (tx) => {
    const marked = await tx
      .update(providers)
      .set({ misconfiguredAt: sql`now()`, misconfiguredReason: reason, updatedAt: sql`now()` })
      .where(and(eq(providers.name, name), sql`${providers.misconfiguredAt} is null`))
      .returning({ id: providers.id });
    if (marked.length === 0) return false;
    await notifyProviderChange(tx, name);
    // Not the reason: a provider's error text may echo what the call sent.
    await recordProviderEvent(tx, marked[0]!.id, 'UPDATED', 'job', name, ['misconfiguredAt']);
    return true;
  });
}

// ---------------------------------------------------------------------------------------------
// The providers file

/** A provider as the providers file defines it (its key already sealed, or null). */
export type ConfiguredProvider = ProviderFields;

export interface ProviderImportCounts {
  added: number;
  updated: number;
  unchanged: number;
  /** Providers of the file that are no longer in it: they become editable through the API (source api). */
  detached: number;
}

/**
 * Makes the stored providers match the file, idempotently: a provider whose fields (the key
 * compared by `sameKey`, since sealing is randomised) are unchanged is not written. A changed
 * provider loses its misconfigured mark. `sameKey` says whether a stored (sealed) key is the one
 * the file gives the provider.
 */
export async function importConfiguredProviders(
  db: Db,
  configured: readonly ConfiguredProvider[],
  sameKey: (stored: unknown, name: string) => boolean,
): Promise<ProviderImportCounts> {
  return db.transaction(async (tx) => {
    const counts: ProviderImportCounts = { added: 0, updated: 0, unchanged: 0, detached: 0 };
    const stored = new Map((await tx.select().from(providers).for('update')).map((p) => [p.name, p]));
    for (const given of configured) {
      const current = stored.get(given.name);
      if (!current) {
        const [row] = await tx.insert(providers).values({ ...given, source: 'config' }).returning({ id: providers.id });
        await recordProviderEvent(tx, row!.id, 'CREATED', 'config', given.name);
        counts.added += 1;
      } else if (current.source === 'config' && sameFields(current, given) && sameKey(current.apiKey, given.name)) {
        counts.unchanged += 1;
        continue;
      } else {
        await tx
          .update(providers)
          .set({ ...given, source: 'config', misconfiguredAt: null, misconfiguredReason: null, updatedAt: sql`now()` })
          .where(eq(providers.id, current.id));
        await recordProviderEvent(tx, current.id, 'UPDATED', 'config', given.name, ['definition']);
        counts.updated += 1;
      }
      await notifyProviderChange(tx, given.name);
    }
    const names = new Set(configured.map((c) => c.name));
    for (const p of stored.values()) {
      if (p.source !== 'config' || names.has(p.name)) continue;
      await tx.update(providers).set({ source: 'api', updatedAt: sql`now()` }).where(eq(providers.id, p.id));
      await recordProviderEvent(tx, p.id, 'UPDATED', 'config', p.name, ['source']);
      counts.detached += 1;
    }
    return counts;
  });
}

function sameFields(row: ProviderRow, given: ConfiguredProvider): boolean {
  return (
    row.kind === given.kind &&
    row.environment === given.environment &&
    row.baseUrl === given.baseUrl &&
    row.isEnabled === given.isEnabled &&
    JSON.stringify(row.models) === JSON.stringify(given.models) &&
    row.defaultModel === given.defaultModel &&
    row.requestsPerMinute === given.requestsPerMinute &&
    row.tokensPerMinute === given.tokensPerMinute &&
    row.misconfiguredAt === null
  );
}

async function lockProvider(tx: Db, id: string): Promise<ProviderRow> {
  const [row] = await tx.select().from(providers).where(eq(providers.id, id)).for('update');
  if (!row) throw new NotFoundError(`provider ${id} not found`);
  return row;
}

/** A provider event: its id, name and the names of the fields that changed; never a value (nor the key). */
async function recordProviderEvent(
  tx: Db,
  id: string,
  change: 'CREATED' | 'UPDATED' | 'DELETED',
  source: ChangeSource,
  name: string,
  changes?: string[],
): Promise<void> {
  await recordDataEvent(tx, { entity: 'provider', change, source, ids: [id], data: { name, ...(changes ? { changes } : {}) } });
}

/** Replicas drop what they cached of the provider once the change commits. */
async function notifyProviderChange(tx: Db, name: string): Promise<void> {
  await tx.execute(sql`select pg_notify(${PROVIDERS_CHANNEL}, ${name})`);
}
