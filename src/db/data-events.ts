/**
 * Data change events: what happened to images, datasets, perspectives, captions and providers,
 * written to the outbox (src/db/outbox.ts) in the transaction of the change. One stream per entity
 * type (`data:image` ...), so a consumer gets the events of any one entity in the order they
 * happened. An event lists the ids it is about, at most IDS_PER_EVENT: a bulk change (a workspace
 * sync, an import, a job's captions) is a few events, not one per row. README, "Data change events".
 */
import { sql, type SQL } from 'drizzle-orm';
import { currentRequestId } from '../logger.js';
import type { Db } from './client.js';
import { EVENTS_CHANNEL } from './outbox.js';
import { pgArray } from './sql.js';

export const DATA_ENTITIES = ['image', 'dataset', 'perspective', 'caption', 'provider'] as const;
export type DataEntity = (typeof DATA_ENTITIES)[number];
export const DATA_CHANGES = ['CREATED', 'UPDATED', 'DELETED', 'MEMBERS_CHANGED'] as const;
export type DataChange = (typeof DATA_CHANGES)[number];

/** What made the change: a request (`api`), a job's item, a workspace sync, a caption import ... */
export const CHANGE_SOURCES = ['api', 'job', 'sync', 'import', 'library', 'config'] as const;
export type ChangeSource = (typeof CHANGE_SOURCES)[number];

/** Most ids one event lists; a bigger change is split into several events. */
export const IDS_PER_EVENT = 1000;

export const dataStream = (entity: DataEntity) => `data:${entity}`;
export const dataEventType = (entity: DataEntity, change: DataChange) => `${entity.toUpperCase()}_${change}`;

export interface DataEvent {
  entity: DataEntity;
  change: DataChange;
  source: ChangeSource;
  ids: readonly string[];
  /** The job that caused it (the envelope's jobId). */
  jobId?: string | null;
  /** Merged into every event's data (e.g. `name`, `changes`, `datasetId`). */
  data?: Record<string, unknown>;
}

/** Writes the events of a change, IDS_PER_EVENT ids per event; nothing when there are no ids. */
export async function recordDataEvent(tx: Db, event: DataEvent): Promise<void> {
  if (event.ids.length === 0) return;
  await tx.execute(sql`
    with written as (
      ${insertDataEvents({ ...event, ids: sql`(select unnest(${pgArray(event.ids)}::uuid[]) as id)` })}
      returning 1)
    select pg_notify(${EVENTS_CHANNEL}, '') where exists (select 1 from written)`);
}

/**
 * The INSERT of a change's events from `ids`, a relation with a uuid column `id`: one event per
 * IDS_PER_EVENT ids, in id order. A fragment, so a change can write its events in its own statement
 * (with a NOTIFY on EVENTS_CHANNEL, see notifyEventsOf).
 */
export function insertDataEvents(event: Omit<DataEvent, 'ids'> & { ids: SQL }): SQL {
  const data = sql`jsonb_build_object('entity', ${event.entity}::text, 'source', ${event.source}::text) || ${JSON.stringify(event.data ?? {})}::jsonb`;
  return sql`
    insert into job_queue.outbox (type, stream, job_id, data, request_id)
    select ${dataEventType(event.entity, event.change)}, ${dataStream(event.entity)}, ${event.jobId ?? null}::uuid,
           ${data} || jsonb_build_object('ids', jsonb_agg(c.id order by c.id)), ${currentRequestId() ?? null}
    from (select x.id, (row_number() over (order by x.id) - 1) / ${IDS_PER_EVENT} as chunk from ${event.ids} x) c
    group by c.chunk
    order by c.chunk`;
}

/** A SELECT that sends the NOTIFY live readers wake on, if `cte` (a data-modifying CTE's name) wrote a row. */
export const notifyEventsOf = (cte: string) =>
  sql`select pg_notify(${EVENTS_CHANNEL}, '') where exists (select 1 from ${sql.identifier(cte)})`;

// ---------------------------------------------------------------------------------------------
// Captions of jobs: staged per commit, announced in roll-ups

/**
 * The INSERT that stages the captions `stored` (a relation with id and job_id) for announcement,
 * one row per job; a fragment for the dispatcher's statement.
 */
export const stageCaptionChanges = (stored: SQL) => sql`
  insert into job_queue.caption_changes (job_id, caption_ids)
  select s.job_id, array_agg(s.id) from ${stored} s group by s.job_id`;

/**
 * Announces staged captions: CAPTION_CREATED events per job, IDS_PER_EVENT ids each, from at most
 * `limit` staged rows (SKIP LOCKED: replicas share the work). Returns how many captions.
 */
export async function rollUpCaptionChanges(db: Db, limit = 10_000): Promise<number> {
  return announceStaged(db, sql`id in (select id from job_queue.caption_changes order by id limit ${limit} for update skip locked)`);
}

/**
 * Announces, now, the staged captions among `captionIds` (and those staged with them): a change
 * or a delete of a caption a job just stored must come after its CAPTION_CREATED.
 */
export async function flushCaptionChanges(tx: Db, captionIds: readonly string[]): Promise<void> {
  if (captionIds.length === 0) return;
  await announceStaged(tx, sql`caption_ids && ${pgArray(captionIds)}::uuid[]`);
}

/**
 * Takes the staged rows `which` selects and writes their CAPTION_CREATED events, per job,
 * IDS_PER_EVENT ids each, in one statement. Returns how many captions.
 */
async function announceStaged(db: Db, which: SQL): Promise<number> {
  const { rows } = await db.execute<{ n: number }>(sql`
    with taken as (
      delete from job_queue.caption_changes where ${which}
      returning job_id, caption_ids
    ), ids as (
      select job_id, unnest(caption_ids) as id from taken
    ), written as (
      insert into job_queue.outbox (type, stream, job_id, data)
      select ${dataEventType('caption', 'CREATED')}, ${dataStream('caption')}, c.job_id,
             jsonb_build_object('entity', 'caption', 'source', 'job', 'ids', jsonb_agg(c.id order by c.id))
      from (select job_id, id, (row_number() over (partition by job_id order by id) - 1) / ${IDS_PER_EVENT} as chunk
            from ids) c
      group by c.job_id, c.chunk
      order by c.job_id, c.chunk
      returning 1
    ), notified as (${notifyEventsOf('written')})
    select (select count(*) from ids)::int as n, (select count(*) from notified)::int as notified`);
  return rows[0]?.n ?? 0;
}

// ---------------------------------------------------------------------------------------------
// Dataset membership

/**
 * DATASET_MEMBERS_CHANGED for one dataset: `added` and `removed` image ids, IDS_PER_EVENT per event
 * (an event lists either added or removed images; the other list is empty).
 */
export async function recordMembershipChange(
  tx: Db,
  p: { datasetId: string; source: ChangeSource; added?: readonly string[]; removed?: readonly string[] },
): Promise<void> {
  const added = p.added ?? [];
  const removed = p.removed ?? [];
  if (added.length + removed.length === 0) return;
  await tx.execute(sql`
    with written as (
      ${insertMembershipEvents(p.source, sql`(
        select ${p.datasetId}::uuid as dataset_id, unnest(${pgArray(added)}::uuid[]) as image_id, true as added
        union all
        select ${p.datasetId}::uuid, unnest(${pgArray(removed)}::uuid[]), false)`)}
      returning 1)
    ${notifyEventsOf('written')}`);
}

/**
 * The INSERT of DATASET_MEMBERS_CHANGED events from `members`, a relation (dataset_id, image_id,
 * added): per dataset, the added images then the removed ones, IDS_PER_EVENT per event.
 */
export function insertMembershipEvents(source: ChangeSource, members: SQL): SQL {
  return sql`
    insert into job_queue.outbox (type, stream, data, request_id)
    select ${dataEventType('dataset', 'MEMBERS_CHANGED')}, ${dataStream('dataset')},
           jsonb_build_object('entity', 'dataset', 'source', ${source}::text, 'ids', jsonb_build_array(c.dataset_id),
                              'datasetId', c.dataset_id,
                              'added', case when c.added then jsonb_agg(c.image_id order by c.image_id) else '[]' end,
                              'removed', case when c.added then '[]' else jsonb_agg(c.image_id order by c.image_id) end),
           ${currentRequestId() ?? null}
    from (select m.dataset_id, m.image_id, m.added,
                 (row_number() over (partition by m.dataset_id, m.added order by m.image_id) - 1) / ${IDS_PER_EVENT} as chunk
          from ${members} m) c
    group by c.dataset_id, c.added, c.chunk
    order by c.dataset_id, c.added desc, c.chunk`;
}
