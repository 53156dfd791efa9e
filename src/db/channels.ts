/** The NOTIFY channels replicas talk through; this module imports no repository. */
import { sql } from 'drizzle-orm';
import type { Db } from './client.js';

/** Channel the dispatcher LISTENs on: a NOTIFY here means "there may be work". */
export const WORK_CHANNEL = 'graphcap_work';
/** WORK_CHANNEL's payload when a job finished: jobs that depend on it may now start or fail. */
export const JOB_FINISHED = 'finished';
/** Channel carrying the id of a job that was cancelled, so every replica aborts its calls. */
export const CANCEL_CHANNEL = 'graphcap_job_cancelled';
/** Channel carrying a provider's name when it changed: replicas drop what they cached of it. */
export const PROVIDERS_CHANNEL = 'graphcap_providers';

/** Wakes dispatchers on every replica once the transaction commits. */
export async function notifyWork(tx: Db): Promise<void> {
  await tx.execute(sql`select pg_notify(${WORK_CHANNEL}, '')`);
}
