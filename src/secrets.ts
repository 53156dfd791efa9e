/**
 * Provider secrets at rest: a job's `providerConfig` (API keys ...) is sealed with AES-256-GCM under
 * SECRETS_KEY before it is stored, opened only to build a bridge call, and never returned. A sealed
 * value names its key (`kid`), so a key can be rotated: the new one seals, the previous ones
 * (SECRETS_KEY_PREVIOUS) still open, and `npm run secrets:reseal` seals everything anew.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { InvalidInputError } from './errors.js';

/** A sealed value as stored in the job's config. */
export interface Sealed {
  sealed: 'aes-256-gcm';
  /** The id of the key that sealed it (keyId); absent in values sealed before keys had ids. */
  kid?: string;
  iv: string;
  tag: string;
  data: string;
}

/** A key's id: not the key, and not enough of its hash to guess it by. */
export function keyId(key: Buffer): string {
  return createHash('sha256').update('graphcap key id').update(key).digest('hex').slice(0, 16);
}

/** Parses SECRETS_KEY: 32 bytes as 64 hex characters or base64. */
export function parseSecretsKey(value: string): Buffer | undefined {
  const key = /^[0-9a-fA-F]{64}$/.test(value) ? Buffer.from(value, 'hex') : Buffer.from(value, 'base64');
  return key.length === 32 ? key : undefined;
}

export function isSealed(value: unknown): value is Sealed {
  return typeof value === 'object' && value !== null && (value as Sealed).sealed === 'aes-256-gcm';
}

export function seal(value: unknown, key: Buffer): Sealed {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  const data = Buffer.concat([cipher.update(JSON.stringify(value), 'utf8'), cipher.final()]);
  return { sealed: 'aes-256-gcm', kid: keyId(key), iv: iv.toString('base64'), tag: cipher.getAuthTag().toString('base64'), data: data.toString('base64') };
}

/**
 * Opens a sealed value with the key that sealed it, among `key` and `previous`: by its id, or, for a
 * value without one, whichever opens it. Throws when none does.
 */
export function open(value: Sealed, key: Buffer, previous: readonly Buffer[] = []): unknown {
  const keys = [key, ...previous];
  const candidates = value.kid ? keys.filter((k) => keyId(k) === value.kid) : keys;
  let failure: unknown = new Error(`no key with id ${value.kid} (SECRETS_KEY, SECRETS_KEY_PREVIOUS)`);
  for (const candidate of candidates) {
    try {
      return openWith(value, candidate);
    } catch (error) {
      failure = error;
    }
  }
  throw failure;
}

/** Whether this process has the key a sealed value names (a value without an id: unknown, so yes). */
export function canOpen(value: Sealed, key: Buffer | undefined, previous: readonly Buffer[] = []): boolean {
  if (!key) return false;
  return !value.kid || [key, ...previous].some((k) => keyId(k) === value.kid);
}

function openWith(value: Sealed, key: Buffer): unknown {
  const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(value.iv, 'base64'));
  decipher.setAuthTag(Buffer.from(value.tag, 'base64'));
  const text = Buffer.concat([decipher.update(Buffer.from(value.data, 'base64')), decipher.final()]).toString('utf8');
  return JSON.parse(text);
}

/** `value` sealed for storage, or a 400 naming `field` when the service has no key to seal it with. */
export function sealInput(value: unknown, key: Buffer | undefined, field: string): Sealed {
  if (!key) {
    throw new InvalidInputError(`${field} is stored encrypted, and this service has no SECRETS_KEY`, [
      { path: field, message: 'the service needs SECRETS_KEY to accept secrets' },
    ]);
  }
  return seal(value, key);
}

/** The job config to store: providerConfig sealed, or a 400 when there is no key to seal it with. */
export function sealJobConfig<T extends { providerConfig?: Record<string, unknown> }>(
  config: T,
  key: Buffer | undefined,
): Omit<T, 'providerConfig'> & { providerConfig?: Sealed } {
  const { providerConfig, ...rest } = config;
  if (providerConfig === undefined) return rest;
  if (!key) {
    throw new InvalidInputError('providerConfig is stored encrypted, and this service has no SECRETS_KEY', [
      { path: 'config.providerConfig', message: 'the service needs SECRETS_KEY to accept provider secrets' },
    ]);
  }
  return { ...rest, providerConfig: seal(providerConfig, key) };
}

/**
 * The key of a local install: read from `file`, or made and written there (readable by this user
 * only) the first time. For the embedded database, whose data sits beside it: a fresh clone can
 * store provider keys without configuring anything. Production sets SECRETS_KEY.
 */
export async function loadOrCreateKeyFile(file: string): Promise<Buffer> {
  const existing = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (existing !== undefined) {
    const key = parseSecretsKey(existing.trim());
    if (!key) throw new Error(`${file} does not hold a 32-byte key (64 hex characters); remove it to make a new one, or set SECRETS_KEY`);
    return key;
  }
  const key = randomBytes(32);
  await mkdir(path.dirname(file), { recursive: true });
  // 'wx': two processes starting at once must not both write one.
  await writeFile(file, `${key.toString('hex')}\n`, { mode: 0o600, flag: 'wx' }).catch(async (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EEXIST') throw error;
  });
  return loadOrCreateKeyFile(file);
}
