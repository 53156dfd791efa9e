/** Queue figures, computed in SQL from the job counters and a recent window of finished items. */
import { sql } from 'drizzle-orm';
import type { Db, DbTime } from './client.js';
import { listProviders } from './provider-states.js';
import { JOB_STATUSES, type ItemStatus, type JobStatus } from './schema.js';

export interface QueueStatistics {
  jobs: Record<JobStatus, number> & { total: number };
  items: Record<ItemStatus, number> & { total: number };
  /** Items finished (completed or failed) in the window, and per minute over it. */
  throughput: { windowMinutes: number; finishedItems: number; itemsPerMinute: number };
  processingTime: { meanMs: number | null; p95Ms: number | null };
  /** Failed share of the items finished in the window, 0 to 1; null when none finished. */
  failureRate: number | null;
  oldestPendingJobAgeSeconds: number | null;
  /** Adaptive dispatch per (provider, model), with the calls in flight now. */
  providers: Awaited<ReturnType<typeof listProviders>>;
  /** Stored providers that refused their credentials: their jobs are paused until they are changed. */
  misconfiguredProviders: { provider: string; since: DbTime; reason: string }[];
  generatedAt: Date;
}

export interface QueueDepth {
  jobs: Record<JobStatus, number>;
  items: Record<ItemStatus, number>;
}

/**
 * Jobs and items of live (not archived) jobs by status. Item counts come from the jobs' counters
 * (not a scan of job_items) so the figure stays cheap as history grows; `running` is counted from
 * the items, a small indexed set.
 */
export async function getQueueDepth(db: Db): Promise<QueueDepth> {
  const { rows: jobRows } = await db.execute<{ status: JobStatus; n: number }>(sql`
    select status, count(*) as n from job_queue.caption_jobs where not archived group by status`);
  const { rows: counterRows } = await db.execute<{ total: number; completed: number; failed: number; cancelled: number }>(sql`
    select coalesce(sum(total_images), 0) as total, coalesce(sum(processed_images), 0) as completed,
           coalesce(sum(failed_images), 0) as failed, coalesce(sum(cancelled_images), 0) as cancelled
    from job_queue.caption_jobs where not archived`);
  const { rows: runningRows } = await db.execute<{ n: number }>(
    sql`select count(*) as n from job_queue.job_items where status = 'running'`,
  );
  const jobs = Object.fromEntries(JOB_STATUSES.map((s) => [s, 0])) as QueueDepth['jobs'];
  for (const r of jobRows) jobs[r.status] = r.n;
  const c = counterRows[0]!;
  const running = runningRows[0]?.n ?? 0;
  const items: QueueDepth['items'] = {
    pending: Math.max(0, c.total - c.completed - c.failed - c.cancelled - running),
    running,
    completed: c.completed,
    failed: c.failed,
    cancelled: c.cancelled,
  };
  return { jobs, items };
}

/** Queue figures; archived jobs are out. Throughput and timings cover the last `windowMinutes`. */
export async function getStatistics(db: Db, windowMinutes = 60): Promise<QueueStatistics> {
  const depth = await getQueueDepth(db);
  const { rows: windowRows } = await db.execute<{
    finished: number;
    failed: number;
    meanMs: number | null;
    p95Ms: number | null;
  }>(sql`
    select count(*) as finished,
           count(*) filter (where status = 'failed') as failed,
           avg(processing_time)::float8 as "meanMs",
           percentile_cont(0.95) within group (order by processing_time)::float8 as "p95Ms"
    from job_queue.job_items
    where completed_at >= now() - make_interval(mins => ${windowMinutes}) and status in ('completed', 'failed')`);
  const { rows: oldestRows } = await db.execute<{ age: number | null }>(sql`
    select extract(epoch from now() - min(created_at))::float8 as age
    from job_queue.caption_jobs where status = 'pending' and not archived`);

  const providers = await listProviders(db);
  const { rows: misconfigured } = await db.execute<{ provider: string; since: DbTime; reason: string }>(sql`
    select name as provider, misconfigured_at as since, coalesce(misconfigured_reason, '') as reason
    from core_schema.providers where misconfigured_at is not null order by name`);

  const sum = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);
  const w = windowRows[0]!;
  const age = oldestRows[0]?.age;
  return {
    jobs: { ...depth.jobs, total: sum(depth.jobs) },
    items: { ...depth.items, total: sum(depth.items) },
    throughput: {
      windowMinutes,
      finishedItems: w.finished,
      itemsPerMinute: Math.round((w.finished / windowMinutes) * 100) / 100,
    },
    processingTime: { meanMs: round(w.meanMs), p95Ms: round(w.p95Ms) },
    failureRate: w.finished > 0 ? Math.round((w.failed / w.finished) * 10_000) / 10_000 : null,
    oldestPendingJobAgeSeconds: age == null ? null : Math.round(age * 1000) / 1000,
    providers,
    misconfiguredProviders: misconfigured,
    generatedAt: new Date(),
  };
}

function round(value: number | null): number | null {
  return value == null ? null : Math.round(value * 100) / 100;
}
