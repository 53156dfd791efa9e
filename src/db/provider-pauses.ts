/**
 * Jobs whose provider cannot serve them are paused, with the reason, instead of being left
 * `running` with nothing that can finish them: a stored provider that refused its credentials
 * (misconfigured) or was disabled, until someone changes it; a (provider, model) whose circuit
 * breaker has stayed open for PROVIDER_OUTAGE_PAUSE_MINUTES. Resuming is the user's call; a job
 * resumed during an outage gets that long again before it is paused anew. The dispatcher's sweep
 * runs this on every full round.
 */
import { sql } from 'drizzle-orm';
import { notifyWork } from './channels.js';
import type { Db } from './client.js';
import { recordJobStatusChange } from './outbox.js';

export type PausedJob = {
  jobId: string;
  reason: string;
};

/** Pauses the pending and running jobs of blocked providers; returns them with their reasons. */
export async function pauseJobsOfBlockedProviders(db: Db, outageMinutes: number): Promise<PausedJob[]> {
  const outage = outageMinutes > 0
    ? sql`
      union all
      select s.provider, s.model,
             format('provider %s (model %s) has not answered for %s minutes (circuit breaker open since %s): resume when it is back',
                    s.provider, s.model, ${String(outageMinutes)}::text, to_char(s.outage_since at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')),
             true
      from job_queue.provider_states s
      where s.breaker = 'open' and s.outage_since <= now() - make_interval(secs => ${outageMinutes * 60}::float8)`
    : sql``;
  const { rows } = await db.execute<PausedJob>(sql`
    with blocked(provider, model, reason, outage) as (
      select p.name, null::text,
             case when p.misconfigured_at is not null
                  then format('provider %s refused its credentials (%s): change the provider, then resume the job', p.name, p.misconfigured_reason)
                  else format('provider %s is disabled: enable it, then resume the job', p.name) end,
             false
      from core_schema.providers p
      where p.misconfigured_at is not null or not p.is_enabled
      ${outage}
    )
    select distinct on (j.job_id) j.job_id as "jobId", b.reason
    from job_queue.caption_jobs j
    join blocked b on j.config->>'provider' = b.provider and (b.model is null or j.config->>'model' = b.model)
    where j.status in ('pending', 'running') and not j.archived
      -- A stored provider's state is no business of a job that brought its own provider_config.
      and (b.outage or not (j.config ? 'providerConfig'))
      and (not b.outage or j.resumed_at is null or j.resumed_at <= now() - make_interval(secs => ${outageMinutes * 60}::float8))
    order by j.job_id`);
  const paused: PausedJob[] = [];
  for (const candidate of rows) {
    if (await pauseJobWithReason(db, candidate.jobId, candidate.reason)) paused.push(candidate);
  }
  return paused;
}

/**
 * Pauses one pending or running job with a reason the Job (`error`), the event and the board
 * show; false when it is in another state by now. Its own transaction, locking the job row first.
 */
export async function pauseJobWithReason(db: Db, jobId: string, reason: string): Promise<boolean> {
  return db.transaction(async (tx) => {
    const { rows } = await tx.execute<{ status: string }>(sql`
      select status from job_queue.caption_jobs
      where job_id = ${jobId} and status in ('pending', 'running') and not archived for update`);
    const from = rows[0]?.status;
    if (!from) return false;
    await tx.execute(sql`update job_queue.caption_jobs set status = 'paused', error = ${reason}, updated_at = now() where job_id = ${jobId}`);
    await recordJobStatusChange(tx, jobId, from, reason);
    // A freed job slot: the next job may start.
    await notifyWork(tx);
    return true;
  });
}
