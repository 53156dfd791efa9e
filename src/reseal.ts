/**
 * Seals every stored secret anew under the current SECRETS_KEY: the last step of a key rotation
 * (README, Operations). Values already under it are left alone, so it can run again at any time.
 */
import type { Db } from './db/client.js';
import { listSealedSecrets, replaceSealedSecret } from './db/sealed.js';
import { keyId, open, seal } from './secrets.js';

export interface ResealReport {
  /** Secrets sealed anew under the current key. */
  resealed: number;
  /** Secrets that were under it already. */
  current: number;
  /** Secrets no given key opens: left as they are. */
  unopenable: { kind: 'provider' | 'job'; id: string; keyId: string | null }[];
}

export async function resealSecrets(db: Db, key: Buffer, previous: readonly Buffer[]): Promise<ResealReport> {
  const report: ResealReport = { resealed: 0, current: 0, unopenable: [] };
  const currentId = keyId(key);
  for (const secret of await listSealedSecrets(db)) {
    if (secret.value.kid === currentId) {
      report.current += 1;
      continue;
    }
    let plain: unknown;
    try {
      plain = open(secret.value, key, previous);
    } catch {
      report.unopenable.push({ kind: secret.kind, id: secret.id, keyId: secret.value.kid ?? null });
      continue;
    }
    await replaceSealedSecret(db, secret, seal(plain, key));
    report.resealed += 1;
  }
  return report;
}
