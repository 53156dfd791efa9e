/**
 * Retention, run by every replica on a timer: archive finished jobs after RETENTION_ARCHIVE_AFTER_DAYS,
 * delete archived jobs after RETENTION_DELETE_ARCHIVED_AFTER_DAYS (off unless set). Each run logs
 * what it did. The SQL is in src/db/retention.ts; replicas running at once share the batches.
 * (Delivered events are pruned by the notifier, after EVENT_RETENTION_HOURS.)
 */
import type { Db } from '../db/client.js';
import { archiveFinishedJobs, deleteArchivedJobs } from '../db/retention.js';
import type { Logger } from '../logger.js';

/** Jobs per transaction: bounds lock time and transaction size however much is due. */
const BATCH = 500;

export interface RetentionPolicy {
  /** Archive jobs finished this many days ago; 0 = never. */
  archiveAfterDays: number;
  /** Delete jobs archived this many days ago; 0 = never. */
  deleteArchivedAfterDays: number;
}

export interface RetentionRun {
  archivedJobs: number;
  archivedItems: number;
  deletedJobs: number;
  deletedItems: number;
}

/** One pass of every policy, until nothing more is due. */
export async function runRetention(db: Db, policy: RetentionPolicy, logger?: Logger): Promise<RetentionRun> {
  const run: RetentionRun = { archivedJobs: 0, archivedItems: 0, deletedJobs: 0, deletedItems: 0 };
  if (policy.archiveAfterDays > 0) {
    for (;;) {
      const { jobs, items } = await archiveFinishedJobs(db, policy.archiveAfterDays, BATCH);
      run.archivedJobs += jobs;
      run.archivedItems += items;
      if (jobs < BATCH) break;
    }
  }
  if (policy.deleteArchivedAfterDays > 0) {
    for (;;) {
      const { jobs, items } = await deleteArchivedJobs(db, policy.deleteArchivedAfterDays, BATCH);
      run.deletedJobs += jobs;
      run.deletedItems += items;
      if (jobs < BATCH) break;
    }
  }
  logger?.info({ ...run, policy }, 'retention run');
  return run;
}

export interface RetentionOptions {
  db: Db;
  logger: Logger;
  policy: RetentionPolicy;
  intervalMs: number;
  /** Delay of the first run after start. */
  firstRunMs: number;
  /** Told about each finished run (for metrics or tests). */
  onRun?: (run: RetentionRun) => void;
}

/** Runs retention on a timer; stop() waits for a run in progress. */
export class Retention {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly options: RetentionOptions) {}

  start(): void {
    const { policy, logger } = this.options;
    if (policy.archiveAfterDays === 0 && policy.deleteArchivedAfterDays === 0) {
      logger.info('retention off (RETENTION_ARCHIVE_AFTER_DAYS and RETENTION_DELETE_ARCHIVED_AFTER_DAYS are 0)');
      return;
    }
    this.schedule(this.options.firstRunMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.runOnce().finally(() => {
        this.running = undefined;
        this.schedule(this.options.intervalMs);
      });
    }, delayMs);
    // Never what keeps the process alive.
    this.timer.unref();
  }

  private async runOnce(): Promise<void> {
    const { db, logger, policy, onRun } = this.options;
    try {
      onRun?.(await runRetention(db, policy, logger));
    } catch (error) {
      logger.warn({ err: error }, 'retention run failed; it runs again at the next interval');
    }
  }
}
