/**
 * Retention: finished jobs are archived after N days, archived jobs deleted after M days (off by
 * default), each run logged with its counts. Old jobs are made by back-dating rows in SQL.
 */
import { Writable } from 'node:stream';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';
import { pgArray } from '../../src/db/sql.js';
import { createLogger } from '../../src/logger.js';
import { Retention, runRetention, type RetentionRun } from '../../src/jobs/retention.js';
import { createJob, finishItem, IMAGES, itemIds } from '../helpers/fixtures.js';
import { waitFor } from '../helpers/jobs.js';
import { api, startTestService, type TestService } from '../helpers/service.js';

let svc: TestService;
beforeAll(async () => {
  // The service's own timer stays off: the test runs retention itself.
  svc = await startTestService({ env: { RETENTION_ARCHIVE_AFTER_DAYS: '0' } });
});
afterAll(async () => svc?.close());

const B = '/api/perspectives/batch';

/** A job of `n` items over the fixture, driven to `outcome` through the item endpoint. */
async function job(outcome: 'completed' | 'failed' | 'partial' | 'cancelled' | 'running' | 'pending', extra: Record<string, unknown> = {}) {
  const created = await createJob(svc.url, { perspectives: ['art_critic'], imagePaths: IMAGES.slice(0, 2), ...extra });
  const ids = await itemIds(svc.db, created.jobId);
  if (outcome === 'completed') for (const id of ids) await finishItem(svc.url, id, 'completed');
  if (outcome === 'failed') for (const id of ids) await finishItem(svc.url, id, 'failed');
  if (outcome === 'partial') {
    await finishItem(svc.url, ids[0]!, 'completed');
    await finishItem(svc.url, ids[1]!, 'failed');
  }
  if (outcome === 'cancelled') await api(svc.url, 'POST', `${B}/cancel/${created.jobId}`);
  if (outcome === 'running') await api(svc.url, 'POST', `${B}/items/${ids[0]}`, { status: 'running' });
  return created.jobId;
}

async function backdate(jobId: string, days: { created?: number; completed?: number; archived?: number }) {
  const ago = (d: number | undefined, column: string) =>
    d === undefined ? sql.raw(column) : sql`now() - make_interval(days => ${d})`;
  await svc.db.execute(sql`
    update job_queue.caption_jobs
    set created_at = ${ago(days.created, 'created_at')}, completed_at = ${ago(days.completed, 'completed_at')},
        archive_date = ${ago(days.archived, 'archive_date')}
    where job_id = ${jobId}`);
}

async function archive(jobId: string, daysAgo: number) {
  expect((await api(svc.url, 'POST', `${B}/archive/${jobId}`)).status).toBe(200);
  await backdate(jobId, { completed: daysAgo + 1, archived: daysAgo });
}

type JobState = { jobId: string; archived: boolean; items: number; archivedItems: number; dependsOn: string[] };

async function jobs(): Promise<Map<string, JobState>> {
  const { rows } = await svc.db.execute<JobState>(sql`
    select j.job_id as "jobId", j.archived,
           (select count(*)::int from job_queue.job_items i where i.job_id = j.job_id) as items,
           (select count(*)::int from job_queue.job_archives a where a.job_id = j.job_id) as "archivedItems",
           array(select depends_on_job_id::text from job_queue.job_dependencies d where d.job_id = j.job_id) as "dependsOn"
    from job_queue.caption_jobs j`);
  return new Map(rows.map((r) => [r.jobId, r]));
}

describe('retention', () => {
  it('archives finished jobs older than N days and, only when configured, deletes archived jobs older than M days', async () => {
    // Live jobs: which are due for archiving (finished more than 30 days ago)?
    const oldCompleted = await job('completed');
    const oldFailed = await job('failed');
    const oldPartial = await job('partial');
    const oldCancelled = await job('cancelled');
    const recentCompleted = await job('completed');
    const oldRunning = await job('running');
    const oldPending = await job('pending');
    for (const id of [oldCompleted, oldFailed, oldCancelled]) await backdate(id, { created: 45, completed: 40 });
    await backdate(oldPartial, { created: 45, completed: 31 });
    await backdate(recentCompleted, { created: 45, completed: 29 });
    for (const id of [oldRunning, oldPending]) await backdate(id, { created: 45 });

    // Archived jobs: which are due for deletion (archived more than 90 days ago)?
    const archivedOld = await job('completed');
    await archive(archivedOld, 100);
    const archivedRecent = await job('completed');
    await archive(archivedRecent, 50);
    const neededByPending = await job('completed');
    const pendingDependant = await job('pending', { type: 'DEPENDENCY_CHAIN', dependsOn: [neededByPending] });
    await archive(neededByPending, 100);
    const neededByFinished = await job('completed');
    const finishedDependant = await job('completed', { type: 'DEPENDENCY_CHAIN', dependsOn: [neededByFinished] });
    await archive(neededByFinished, 100);
    const { rows: captionsBefore } = await svc.db.execute<{ id: string }>(
      sql`select id from core_schema.captions where job_id = ${archivedOld}`,
    );
    expect(captionsBefore).toHaveLength(2);

    const lines: Record<string, unknown>[] = [];
    const logger = createLogger('info', new Writable({ write: (chunk, _e, done) => (lines.push(JSON.parse(String(chunk))), done()) }));
    const before = await jobs();

    // The defaults: archive after 30 days, never delete.
    const defaults = loadConfig({});
    expect(defaults.RETENTION_DELETE_ARCHIVED_AFTER_DAYS).toBe(0);
    const policy = { archiveAfterDays: defaults.RETENTION_ARCHIVE_AFTER_DAYS, deleteArchivedAfterDays: defaults.RETENTION_DELETE_ARCHIVED_AFTER_DAYS };
    const first = await runRetention(svc.db, policy, logger);
    const dueForArchive = [oldCompleted, oldFailed, oldPartial, oldCancelled];
    expect(first).toEqual({ archivedJobs: 4, archivedItems: 8, deletedJobs: 0, deletedItems: 0 });
    const afterFirst = await jobs();
    for (const [id, state] of before) {
      if (dueForArchive.includes(id)) expect(afterFirst.get(id), id).toEqual({ ...state, archived: true, items: 0, archivedItems: state.items });
      else expect(afterFirst.get(id), id).toEqual(state);
    }
    expect(lines.find((l) => l.msg === 'retention run')).toMatchObject({ archivedJobs: 4, archivedItems: 8, deletedJobs: 0, deletedItems: 0 });
    // The archived jobs left the default job list, and can be restored.
    const listed = (await api(svc.url, 'GET', `${B}/list?limit=100`)).body.items.map((j: { jobId: string }) => j.jobId);
    expect(listed).not.toContain(oldCompleted);
    expect(listed).toContain(recentCompleted);

    // Deletion, once configured: archived more than 90 days ago, unless a pending job still waits on it.
    const second = await runRetention(svc.db, { archiveAfterDays: 30, deleteArchivedAfterDays: 90 }, logger);
    expect(second).toEqual({ archivedJobs: 0, archivedItems: 0, deletedJobs: 2, deletedItems: 4 });
    const afterSecond = await jobs();
    for (const id of [archivedOld, neededByFinished]) expect(afterSecond.has(id), id).toBe(false);
    for (const [id, state] of afterFirst) {
      if (id === archivedOld || id === neededByFinished) continue;
      if (id === finishedDependant) expect(afterSecond.get(id)).toEqual({ ...state, dependsOn: [] });
      else expect(afterSecond.get(id), id).toEqual(state);
    }
    expect(afterSecond.get(pendingDependant)!.dependsOn).toEqual([neededByPending]);
    // Their captions stay, without a job.
    const { rows: captionsAfter } = await svc.db.execute<{ id: string; jobId: string | null }>(
      sql`select id, job_id as "jobId" from core_schema.captions where id = any(${pgArray(captionsBefore.map((c) => c.id))}::uuid[])`,
    );
    expect(captionsAfter.map((c) => c.jobId)).toEqual([null, null]);
    expect(lines.filter((l) => l.msg === 'retention run').at(-1)).toMatchObject({ deletedJobs: 2, deletedItems: 4 });

    // Nothing is left to do.
    expect(await runRetention(svc.db, { archiveAfterDays: 30, deleteArchivedAfterDays: 90 })).toEqual({
      archivedJobs: 0,
      archivedItems: 0,
      deletedJobs: 0,
      deletedItems: 0,
    });
  });

  it('runs on its timer and stops cleanly', async () => {
    const runs: RetentionRun[] = [];
    const retention = new Retention({
      db: svc.db,
      logger: createLogger('silent'),
      policy: { archiveAfterDays: 30, deleteArchivedAfterDays: 0 },
      intervalMs: 60_000,
      firstRunMs: 1,
      onRun: (run) => runs.push(run),
    });
    retention.start();
    await waitFor('a retention run', () => runs.length > 0);
    await retention.stop();
    expect(runs[0]).toMatchObject({ deletedJobs: 0 });
  });

  it('is configured by RETENTION_* variables, validated at start-up', () => {
    expect(loadConfig({})).toMatchObject({ RETENTION_ARCHIVE_AFTER_DAYS: 30, RETENTION_DELETE_ARCHIVED_AFTER_DAYS: 0, RETENTION_INTERVAL_MINUTES: 60 });
    expect(loadConfig({ RETENTION_DELETE_ARCHIVED_AFTER_DAYS: '365', RETENTION_INTERVAL_MINUTES: '5' })).toMatchObject({
      RETENTION_DELETE_ARCHIVED_AFTER_DAYS: 365,
      RETENTION_INTERVAL_MINUTES: 5,
    });
    expect(() => loadConfig({ RETENTION_ARCHIVE_AFTER_DAYS: '-1' })).toThrow(ConfigError);
    expect(() => loadConfig({ RETENTION_INTERVAL_MINUTES: '0' })).toThrow(/RETENTION_INTERVAL_MINUTES/);
  });
});
