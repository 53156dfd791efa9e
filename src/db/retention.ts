/**
 * Retention: archive finished jobs after a while, delete archived jobs after a longer while. Each
 * step works in batches of jobs, one transaction per batch, with SKIP LOCKED so replicas running
 * it at the same time share the work instead of waiting on each other.
 */
import { sql } from 'drizzle-orm';
import type { Db } from './client.js';
import { pgArray } from './sql.js';
import { FINISHED_JOB_STATUSES } from './schema.js';

const FINISHED = sql.raw(`(${FINISHED_JOB_STATUSES.map((s) => `'${s}'`).join(', ')})`);
const isFinished = (status: string) => (FINISHED_JOB_STATUSES as readonly string[]).includes(status);

const ITEM_COLUMNS = sql.raw(
  `id, seq, job_id, image_id, image_path, perspective, status, attempts, next_attempt_at, lease_owner,
   lease_expires_at, error, processing_time, created_at, updated_at, started_at, completed_at`,
);

/**
 * Archives up to `batch` finished, unarchived jobs that finished (completed_at) more than
 * `olderThanDays` ago: their items move to job_archives, as the archive endpoint does. Returns the
 * jobs and items archived.
 */
export async function archiveFinishedJobs(db: Db, olderThanDays: number, batch: number): Promise<{ jobs: number; items: number }> {
  return db.transaction(async (tx) => {
    const { rows } = await tx.execute<{ jobId: string }>(sql`
      select job_id as "jobId" from job_queue.caption_jobs
      where not archived and status in ${FINISHED}
        and coalesce(completed_at, updated_at) < now() - make_interval(days => ${olderThanDays})
      order by completed_at nulls first, job_id
      limit ${batch}
      for update skip locked`);
    if (rows.length === 0) return { jobs: 0, items: 0 };
    const ids = sql`${pgArray(rows.map((r) => r.jobId))}::uuid[]`;
    const moved = await tx.execute(sql`
      with moved as (delete from job_queue.job_items where job_id = any(${ids}) returning ${ITEM_COLUMNS})
      insert into job_queue.job_archives (${ITEM_COLUMNS}) select ${ITEM_COLUMNS} from moved`);
    await tx.execute(sql`
      update job_queue.caption_jobs set archived = true, archive_date = now(), updated_at = now()
      where job_id = any(${ids})`);
    return { jobs: rows.length, items: moved.rowCount ?? 0 };
  });
}

/**
 * Deletes up to `batch` jobs archived more than `olderThanDays` ago, with their archived items
 * (cascade); their captions stay, with job_id set to null. A job that an unfinished job still
 * depends on is kept until that one finishes (its outcome decides whether the dependant
 * may start); links from finished dependants are dropped first, since job_dependencies refuses
 * (RESTRICT) to lose the job they point at. Returns the jobs and archived items deleted.
 */
export async function deleteArchivedJobs(db: Db, olderThanDays: number, batch: number): Promise<{ jobs: number; items: number }> {
  return db.transaction(async (tx) => {
    const { rows } = await tx.execute<{ jobId: string }>(sql`
      select j.job_id as "jobId" from job_queue.caption_jobs j
      where j.archived and j.archive_date < now() - make_interval(days => ${olderThanDays})
        and not exists (select 1 from job_queue.job_dependencies d join job_queue.caption_jobs w on w.job_id = d.job_id
                        where d.depends_on_job_id = j.job_id and w.status not in ${FINISHED})
      order by j.archive_date, j.job_id
      limit ${batch}
      for update of j skip locked`);
    if (rows.length === 0) return { jobs: 0, items: 0 };
    const ids = sql`${pgArray(rows.map((r) => r.jobId))}::uuid[]`;
    // Dependants could become pending meanwhile (restore, retry-failed): lock them, skipping any
    // that another transaction holds (a waiting lock could deadlock with a second replica's run);
    // a job with a dependant that is locked or unfinished is kept for a later run.
    const { rows: links } = await tx.execute<{ dependsOn: string; dependant: string }>(sql`
      select depends_on_job_id as "dependsOn", job_id as dependant from job_queue.job_dependencies
      where depends_on_job_id = any(${ids})`);
    const { rows: locked } = await tx.execute<{ jobId: string; status: string }>(sql`
      select job_id as "jobId", status from job_queue.caption_jobs
      where job_id = any(${pgArray([...new Set(links.map((l) => l.dependant))])}::uuid[])
      for update skip locked`);
    const settled = new Set(locked.filter((l) => isFinished(l.status)).map((l) => l.jobId));
    const keep = new Set(links.filter((l) => !settled.has(l.dependant)).map((l) => l.dependsOn));
    const doomed = rows.map((r) => r.jobId).filter((id) => !keep.has(id));
    if (doomed.length === 0) return { jobs: 0, items: 0 };
    const doomedIds = sql`${pgArray(doomed)}::uuid[]`;
    const { rows: items } = await tx.execute<{ n: number }>(
      sql`select count(*) as n from job_queue.job_archives where job_id = any(${doomedIds})`,
    );
    await tx.execute(sql`delete from job_queue.job_dependencies where depends_on_job_id = any(${doomedIds})`);
    const deleted = await tx.execute(sql`delete from job_queue.caption_jobs where job_id = any(${doomedIds})`);
    return { jobs: deleted.rowCount ?? 0, items: items[0]?.n ?? 0 };
  });
}
