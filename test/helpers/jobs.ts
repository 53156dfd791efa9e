/** Helpers for the dispatcher tests: wait for a condition, read jobs, items and captions from the database. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'drizzle-orm';
import type { Db } from '../../src/db/client.js';
import { pgArray } from '../../src/db/sql.js';
import { FIXTURE_ANALYSIS } from '../stand-ins/bridge.js';

/**
 * Polls `probe` until it returns something truthy, and returns that; fails after `timeoutMs` with
 * the last value seen. A deadline, not a timing assertion: it only bounds a hung test.
 */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  timeoutMs = 60_000,
  intervalMs = 50,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

export interface JobState {
  status: string;
  totalImages: number;
  processedImages: number;
  failedImages: number;
  cancelledImages: number;
  progress: number;
  error: string | null;
  startedAt: Date | null;
  completedAt: Date | null;
}

export async function jobState(db: Db, jobId: string): Promise<JobState> {
  const { rows } = await db.execute<Record<string, unknown>>(sql`
    select status, total_images as "totalImages", processed_images as "processedImages", failed_images as "failedImages",
           cancelled_images as "cancelledImages", progress, error,
           to_char(started_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as "startedAt",
           to_char(completed_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as "completedAt"
    from job_queue.caption_jobs where job_id = ${jobId}`);
  const row = rows[0];
  if (!row) throw new Error(`no job ${jobId}`);
  return {
    ...(row as unknown as JobState),
    startedAt: row.startedAt ? new Date(row.startedAt as string) : null,
    completedAt: row.completedAt ? new Date(row.completedAt as string) : null,
  };
}

const FINAL = new Set(['completed', 'partial', 'failed', 'cancelled']);

/** Waits until every job has a final status; returns their states. */
export async function waitForJobsToFinish(db: Db, jobIds: string[], timeoutMs = 60_000): Promise<JobState[]> {
  return waitFor(
    `jobs ${jobIds.join(', ')} to finish`,
    async () => {
      const states = await Promise.all(jobIds.map((id) => jobState(db, id)));
      return states.every((s) => FINAL.has(s.status)) && states;
    },
    timeoutMs,
    100,
  );
}

export type ItemState = {
  id: string;
  jobId: string;
  imagePath: string;
  perspective: string;
  status: string;
  attempts: number;
  error: string | null;
  processingTime: number | null;
  leaseOwner: string | null;
};

export async function itemStates(db: Db, jobIds: string[]): Promise<ItemState[]> {
  const { rows } = await db.execute<ItemState>(sql`
    select id, job_id as "jobId", image_path as "imagePath", perspective, status, attempts, error,
           processing_time as "processingTime", lease_owner as "leaseOwner"
    from job_queue.job_items where job_id = any(${pgArray(jobIds)}::uuid[]) order by seq`);
  return rows;
}

export type CaptionRow = {
  itemId: string;
  jobId: string;
  imagePath: string;
  perspective: string;
  perspectiveVersion: string;
  expectedVersion: string;
  model: string | null;
  provider: string | null;
  result: Record<string, unknown>;
};

/** The captions the jobs made, with their item's image and perspective. */
export async function captionsOf(db: Db, jobIds: string[]): Promise<CaptionRow[]> {
  const { rows } = await db.execute<CaptionRow>(sql`
    select c.item_id as "itemId", c.job_id as "jobId", im.path as "imagePath", p.name as perspective,
           c.perspective_version as "perspectiveVersion", p.version as "expectedVersion", c.model, c.provider, c.result
    from core_schema.captions c
    join core_schema.images im on im.id = c.image_id
    join core_schema.perspectives p on p.id = c.perspective_id
    where c.job_id = any(${pgArray(jobIds)}::uuid[])`);
  return rows;
}

/** The fixture's real captions: (image file name, perspective) → `parsed`, read straight from captions.jsonl. */
export async function fixtureCaptions(perspectives: string[]): Promise<Map<string, unknown>> {
  const captions = new Map<string, unknown>();
  for (const perspective of perspectives) {
    const text = await readFile(path.join(FIXTURE_ANALYSIS, `batch_${perspective}`, 'captions.jsonl'), 'utf8');
    for (const line of text.split('\n').filter((l) => l.trim())) {
      const entry = JSON.parse(line) as { filename: string; parsed: unknown };
      captions.set(`${path.basename(entry.filename)}|${perspective}`, entry.parsed);
    }
  }
  return captions;
}

/** Counts of values, for "exactly once" checks. */
export function countBy<T>(values: T[]): Map<T, number> {
  const counts = new Map<T, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return counts;
}

/** The application names of the dispatchers' LISTEN connections in this database, in order. */
export async function dispatcherNames(db: Db): Promise<string[]> {
  const { rows } = await db.execute<{ name: string }>(sql`
    select application_name as name from pg_stat_activity
    where datname = current_database() and application_name like 'graphcap-dispatcher%' order by 1`);
  return rows.map((r) => r.name);
}
