/**
 * The sealed secrets stored: providers' API keys and jobs' own providerConfig (src/secrets.ts), for
 * the start-up check of which this replica can open and for re-sealing under a new key.
 */
import { sql } from 'drizzle-orm';
import type { Sealed } from '../secrets.js';
import type { Db } from './client.js';

export type StoredSecret = {
  kind: 'provider' | 'job';
  id: string;
  value: Sealed;
};

/** Every sealed value, jobs' whatever their state (a finished job can be retried, an archived one restored). */
export async function listSealedSecrets(db: Db): Promise<StoredSecret[]> {
  const { rows } = await db.execute<StoredSecret>(sql`
    select 'provider' as kind, id::text as id, api_key as value from core_schema.providers
    where api_key ->> 'sealed' is not null
    union all
    select 'job', job_id::text, config -> 'providerConfig' from job_queue.caption_jobs
    where config -> 'providerConfig' ->> 'sealed' is not null`);
  return rows;
}

/** Stores `value` in place of the secret it re-seals. */
export async function replaceSealedSecret(db: Db, secret: { kind: StoredSecret['kind']; id: string }, value: Sealed): Promise<void> {
  const json = JSON.stringify(value);
  if (secret.kind === 'provider') {
    await db.execute(sql`update core_schema.providers set api_key = ${json}::jsonb where id = ${secret.id}`);
  } else {
    await db.execute(sql`
      update job_queue.caption_jobs set config = jsonb_set(config, '{providerConfig}', ${json}::jsonb) where job_id = ${secret.id}`);
  }
}
