/**
 * The one configuration module: every setting the service reads comes from here, validated once at
 * start-up. Nothing else reads process.env.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { parseSecretsKey } from './secrets.js';

const emptyToUndefined = (value: unknown) => (value === '' ? undefined : value);

const int = (min: number, max: number) =>
  z.preprocess(emptyToUndefined, z.coerce.number().int().min(min).max(max));

const url = z.preprocess(
  emptyToUndefined,
  z
    .url({ protocol: /^https?$/, error: 'must be an http(s) URL' })
    .transform((value) => value.replace(/\/+$/, ''))
    .optional(),
);

/**
 * The Inference Bridge's address as a user writes it (http://inference-bridge:32100), or with its
 * API prefix (…/api/v1): kept without the prefix, which the client adds to every route.
 */
const bridgeUrl = url.transform((value) => value?.replace(/\/api\/v1$/, ''));

const token = z.preprocess(emptyToUndefined, z.string().min(16, 'must be at least 16 characters').optional());

const bool = z.preprocess(emptyToUndefined, z.stringbool({ error: 'must be true or false' }));

const envSchema = z.object({
  PORT: int(0, 65535).default(32550),
  /**
   * Interface to listen on. Unset: every interface when API_TOKEN guards the API, else loopback
   * only (an open API is for this machine; containers set HOST=0.0.0.0).
   */
  HOST: z.preprocess(emptyToUndefined, z.string().optional()),
  DATABASE_URL: z.preprocess(
    emptyToUndefined,
    z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// connection string')
      .optional(),
  ),
  MESSAGE_BROKER_URL: url,
  INFERENCE_BRIDGE_URL: bridgeUrl,
  NODE_ENV: z.preprocess(
    emptyToUndefined,
    z.enum(['development', 'production', 'test']).default('development'),
  ),
  /** Unset: /workspace when it exists (containers), else the repository's example workspace. */
  WORKSPACE_PATH: z.preprocess(emptyToUndefined, z.string().optional()),
  /**
   * Where the Inference Bridge sees the workspace: image paths sent to it start here (graphcap's
   * compose mounts the workspace at /workspace in both containers). Unset: WORKSPACE_PATH.
   */
  BRIDGE_WORKSPACE_PATH: z.preprocess(emptyToUndefined, z.string().optional()),
  /**
   * graphcap's provider.config.toml (TOML, or JSON for a .json file): providers imported at
   * start-up. Unset: config/provider.config.toml in the workspace, when it exists.
   */
  PROVIDERS_FILE: z.preprocess(emptyToUndefined, z.string().optional()),
  MAX_CONCURRENT_JOBS: int(1, 1000).default(2),
  MAX_CONCURRENT_ITEMS: int(1, 1000).default(4),
  /**
   * Fair share: a running job that has claimed this many items since it got its job slot hands the
   * slot over when a job of the same or a higher priority is waiting; 0 = never (strict queue order).
   */
  FAIR_SHARE_SLICE_ITEMS: int(0, 10_000_000).default(100),
  LOG_LEVEL: z.preprocess(
    emptyToUndefined,
    z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  ),

  /** Folder of the embedded PostgreSQL's data when no DATABASE_URL is given. */
  EMBEDDED_PG_DATA: z.preprocess(emptyToUndefined, z.string().default('.data/postgres')),
  /** Port of the embedded PostgreSQL. */
  EMBEDDED_PG_PORT: int(1, 65535).default(54329),
  /** Connections in the pg pool of this process. */
  DB_POOL_SIZE: int(1, 200).default(10),
  /**
   * Connections of the API's own pool: requests never take the ones the dispatcher, lease renewals
   * and the notifier use (DB_POOL_SIZE), however many come at once.
   */
  API_POOL_SIZE: int(1, 200).default(10),
  /** Milliseconds an API query may run before PostgreSQL cancels it (a 408); 0 = no limit. */
  API_STATEMENT_TIMEOUT_MS: int(0, 3_600_000).default(30_000),
  /** Largest accepted request body, in bytes (413 beyond it). */
  BODY_LIMIT_BYTES: int(1024, 100 * 1024 * 1024).default(1024 * 1024),
  /** Most items a single job may have; guards against a create that would fill the disk. */
  MAX_JOB_ITEMS: int(1, 10_000_000).default(1_000_000),
  /**
   * Items a create writes before it answers, and per transaction after it: the item writer writes
   * the rest of a bigger job in chunks of this size (the job's total is known from the start).
   */
  JOB_ITEM_CHUNK: int(1, 100_000).default(500),
  /** Import the workspace (perspectives, datasets) at start-up. */
  WORKSPACE_SYNC_ON_START: bool.default(true),
  /**
   * Write the captions jobs make back to graphcap's captions.jsonl beside their images: auto = when
   * the workspace's datasets folder is writable.
   */
  WORKSPACE_WRITE_CAPTIONS: z.preprocess(emptyToUndefined, z.enum(['auto', 'true', 'false']).default('auto')),
  /** Watch the dataset folders, so new and removed files are seen within a second or so. */
  WORKSPACE_WATCH: bool.default(true),
  /** Seconds between full imports of the workspace (what catches changes where watching is not possible); 0 = never. */
  WORKSPACE_RESCAN_SECONDS: int(0, 604_800).default(300),
  /** Milliseconds between rounds of that write-back. */
  CAPTION_EXPORT_INTERVAL_MS: int(10, 600_000).default(1000),
  /**
   * Seconds a SIGTERM waits for in-flight bridge calls before it gives their items back. Shorter
   * than Docker's default stop timeout (10 s), so the rest of the shutdown fits in it too.
   */
  SHUTDOWN_GRACE_SECONDS: int(0, 3600).default(5),
  /** Bearer token every /api request (tRPC, REST, SSE) must carry; unset = open (local use). */
  API_TOKEN: token,
  /** Bearer token of the internal item-update endpoint; when set, the API token is refused there. */
  INTERNAL_TOKEN: token,
  /**
   * Bearer token that opens reads only (GETs, the event streams, tRPC queries and subscriptions);
   * anything that changes state is refused with 403. Needs API_TOKEN, which writes.
   */
  API_READ_TOKEN: token,
  /** /metrics needs a token (API or internal) too. */
  METRICS_REQUIRE_TOKEN: bool.default(false),
  /** /docs and /openapi.json need a token too. */
  DOCS_REQUIRE_TOKEN: bool.default(false),
  /** Milliseconds one POST to the message broker may take before it counts as failed. */
  BROKER_TIMEOUT_MS: int(50, 600_000).default(10_000),
  /**
   * Attempts after which an event the broker refuses (a 4xx other than 408 and 429: it will not
   * take this event) is moved aside as a dead letter, so its stream's later events go out.
   */
  BROKER_MAX_REFUSALS: int(1, 1000).default(5),
  /** Hours an event may wait for the broker (down, or refusing) before it is moved aside; 0 = forever. */
  EVENT_MAX_UNDELIVERED_HOURS: int(0, 24 * 365).default(72),
  /** Milliseconds between outbox delivery rounds; NOTIFY wakes the notifier sooner. */
  NOTIFIER_POLL_MS: int(10, 600_000).default(1000),
  /**
   * Milliseconds between roll-ups of the captions jobs stored into CAPTION_CREATED events (up to a
   * thousand ids each): the most such an event waits, and what bounds a job's number of them.
   */
  CAPTION_EVENT_ROLLUP_MS: int(10, 600_000).default(1000),
  /**
   * Live event subscribers (SSE streams and tRPC subscriptions) one process serves at most, and one
   * token (or the callers without one) at most: more get 429, so no caller can hold them all.
   */
  EVENT_SUBSCRIBERS_MAX: int(1, 100_000).default(500),
  EVENT_SUBSCRIBERS_PER_TOKEN: int(1, 100_000).default(100),
  /** Hours delivered events are kept (for SSE clients resuming with Last-Event-ID), then pruned. */
  EVENT_RETENTION_HOURS: int(1, 24 * 365).default(24),
  /** Days after which finished jobs are archived (their items move to job_archives); 0 = never. */
  RETENTION_ARCHIVE_AFTER_DAYS: int(0, 36_500).default(30),
  /** Days after which archived jobs are deleted for good (captions stay); 0 = never, the default. */
  RETENTION_DELETE_ARCHIVED_AFTER_DAYS: int(0, 36_500).default(0),
  /** Minutes between retention runs (the first runs a minute after start, or sooner if this is shorter). */
  RETENTION_INTERVAL_MINUTES: int(1, 10_080).default(60),
  /** 32-byte key (64 hex characters or base64) that seals provider secrets in job configs at rest. */
  /**
   * Keys that sealed values before SECRETS_KEY (comma-separated, each as SECRETS_KEY): they still
   * open them while `npm run secrets:reseal` seals them anew under SECRETS_KEY.
   */
  SECRETS_KEY_PREVIOUS: z.preprocess(
    emptyToUndefined,
    z
      .string()
      .transform((value, ctx) => {
        const keys = value.split(',').map((k) => parseSecretsKey(k.trim()));
        if (keys.some((k) => !k)) ctx.addIssue({ code: 'custom', message: 'must be comma-separated keys of 32 bytes (64 hex characters or base64)' });
        return keys.filter((k): k is Buffer => k !== undefined);
      })
      .default([]),
  ),
  SECRETS_KEY: z.preprocess(
    emptyToUndefined,
    z
      .string()
      .transform((value, ctx) => {
        const key = parseSecretsKey(value);
        if (!key) ctx.addIssue({ code: 'custom', message: 'must be 32 bytes as 64 hex characters or base64' });
        return key ?? z.NEVER;
      })
      .optional(),
  ),
  /**
   * Browser origins allowed by CORS (comma-separated), e.g. graphcap studio. Unset: studio's
   * development origins in development (http://localhost:32200, http://127.0.0.1:32200), none otherwise.
   */
  CORS_ORIGINS: z.preprocess(
    emptyToUndefined,
    z
      .string()
      .transform((v) => v.split(',').map((o) => o.trim()).filter(Boolean))
      .pipe(z.array(z.url({ error: 'must be comma-separated origins such as http://localhost:32200' })))
      .optional(),
  ),
  /**
   * Host names the service answers to (comma-separated, `*` for any), against DNS rebinding: a page
   * on another site that resolves its name to this machine cannot use the API. Unset: any when
   * API_TOKEN guards the API, else localhost, 127.0.0.1 and [::1] (and HOST, when it names one).
   */
  ALLOWED_HOSTS: z.preprocess(
    emptyToUndefined,
    z
      .string()
      .transform((v) => v.split(',').map((h) => h.trim().toLowerCase()).filter(Boolean))
      .optional(),
  ),
  /** The biggest file the import hashes as an image (bigger ones are skipped and reported). */
  WORKSPACE_IMAGE_MAX_BYTES: int(1, Number.MAX_SAFE_INTEGER).default(2 * 1024 ** 3),
  /** The biggest perspective file (and config/perspective_settings.json) the import reads. */
  WORKSPACE_LIBRARY_FILE_MAX_BYTES: int(1, 1024 ** 3).default(1024 * 1024),
  /** Run the job dispatcher in this process; false makes an API-only replica. */
  DISPATCHER_ENABLED: bool.default(true),
  /** Milliseconds between dispatcher polls; NOTIFY wakes it sooner. */
  POLL_INTERVAL_MS: int(10, 600_000).default(1000),
  /** Seconds an item's lease lasts; the holder renews it every third of that. */
  LEASE_SECONDS: int(1, 3600).default(30),
  /**
   * Milliseconds one Inference Bridge call may take. graphcap's bridge gives the model up to 180 s
   * a try and its client retries twice (three tries), so the default waits that out.
   */
  BRIDGE_TIMEOUT_MS: int(50, 3_600_000).default(600_000),
  /**
   * Retry an item whose bridge call timed out. Off by default: the bridge does not stop a model
   * call when its caller goes, so a retry would pay for the same caption twice.
   */
  BRIDGE_RETRY_TIMEOUTS: bool.default(false),
  /** Milliseconds between checks of the bridge (its health and perspective routes). */
  BRIDGE_CHECK_INTERVAL_MS: int(100, 3_600_000).default(30_000),
  /**
   * Minutes a provider's circuit breaker may stay open before the jobs that use it are paused
   * (with the reason); resuming them is the user's call. 0 = never pause.
   */
  PROVIDER_OUTAGE_PAUSE_MINUTES: z.preprocess(emptyToUndefined, z.coerce.number().min(0).max(10_080)).default(15),
  /** Attempts an item gets (transient failures and expired leases included) before it fails. */
  MAX_ATTEMPTS: int(1, 1000).default(5),
  /** Milliseconds of the first retry's backoff ceiling; doubles per attempt (src/jobs/retry.ts). */
  RETRY_BASE_MS: int(0, 3_600_000).default(1000),
  /** Milliseconds the retry backoff never exceeds. */
  RETRY_MAX_MS: int(0, 86_400_000).default(60_000),
  /**
   * Adapt dispatch to each (provider, model): an in-flight limit that halves on throttling,
   * failures and rising latency and grows back on success, Retry-After, a circuit breaker
   * (src/db/provider-states.ts); false = only the static caps.
   */
  ADAPTIVE_DISPATCH: bool.default(true),
  /** Provider failures in a row (no success between) that open its circuit breaker. */
  BREAKER_FAILURES: int(1, 1000).default(10),
  /** Milliseconds an opened breaker waits before its first probe; doubles while probes fail. */
  BREAKER_COOLDOWN_MS: int(10, 3_600_000).default(5_000),
  /** Milliseconds the breaker's wait between probes never exceeds. */
  BREAKER_MAX_COOLDOWN_MS: int(10, 86_400_000).default(120_000),
  /** This replica's name on the leases it holds; must differ between replicas. */
  REPLICA_ID: z.preprocess(
    emptyToUndefined,
    z
      .string()
      .max(200)
      .default(() => `${os.hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`),
  ),
})
  .refine((c) => c.RETRY_MAX_MS >= c.RETRY_BASE_MS, { path: ['RETRY_MAX_MS'], message: 'must be at least RETRY_BASE_MS' })
  .refine((c) => c.BREAKER_MAX_COOLDOWN_MS >= c.BREAKER_COOLDOWN_MS, {
    path: ['BREAKER_MAX_COOLDOWN_MS'],
    message: 'must be at least BREAKER_COOLDOWN_MS',
  })
  // A read token alone would leave a service nobody can change; the same value twice would be ambiguous.
  .refine((c) => !c.API_READ_TOKEN || Boolean(c.API_TOKEN), { path: ['API_READ_TOKEN'], message: 'needs API_TOKEN too (writes need the full token)' })
  .refine((c) => !c.API_READ_TOKEN || (c.API_READ_TOKEN !== c.API_TOKEN && c.API_READ_TOKEN !== c.INTERNAL_TOKEN), {
    path: ['API_READ_TOKEN'],
    message: 'must differ from API_TOKEN and INTERNAL_TOKEN',
  });

export type Config = Readonly<
  Omit<z.infer<typeof envSchema>, 'HOST' | 'ALLOWED_HOSTS' | 'WORKSPACE_PATH' | 'BRIDGE_WORKSPACE_PATH' | 'EMBEDDED_PG_DATA' | 'CORS_ORIGINS'> & {
    HOST: string;
    /** Host names requests may name (lower case, no port); undefined: any. */
    ALLOWED_HOSTS: readonly string[] | undefined;
    WORKSPACE_PATH: string;
    /** Where WORKSPACE_PATH came from: the variable, /workspace, or the repository's example. */
    WORKSPACE_SOURCE: 'env' | 'default' | 'example';
    BRIDGE_WORKSPACE_PATH: string;
    EMBEDDED_PG_DATA: string;
    CORS_ORIGINS: string[];
    PROVIDERS_FILE: string | undefined;
    /** Reads a variable the providers file names for an API key (`env_var`): the only other read of the environment. */
    readEnv: (name: string) => string | undefined;
  }
>;

function allowedHosts(given: string[] | undefined, host: string | undefined, guarded: boolean): readonly string[] | undefined {
  if (given) return given.includes('*') ? undefined : given;
  if (guarded) return undefined;
  const local = ['localhost', '127.0.0.1', '::1'];
  return host && !['0.0.0.0', '::'].includes(host) && !local.includes(host) ? [...local, host.toLowerCase()] : local;
}

/** The service's version (package.json), as graphcap's health answer carries one. */
export const SERVICE_VERSION = (JSON.parse(readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;

/** The repository's example workspace (examples/workspace): the default when there is no /workspace. */
export const EXAMPLE_WORKSPACE = path.join(packageRoot(), 'examples', 'workspace');

/** graphcap studio's development server (its vite.config.ts): allowed by CORS in development. */
const STUDIO_DEV_ORIGINS = ['http://localhost:32200', 'http://127.0.0.1:32200'];

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * Parses an environment into the config. Throws a ConfigError whose message is one line per bad
 * variable, naming it and saying what is wrong.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => {
      const name = String(issue.path[0] ?? '?');
      const value = env[name];
      // Connection strings and tokens may carry credentials: name them, never echo them.
      const shown =
        value === undefined || SECRET_LIKE.test(name) ? '' : ` (got ${JSON.stringify(truncate(value))})`;
      return `invalid configuration: ${name}: ${issue.message}${shown}`;
    });
    throw new ConfigError(lines.join('\n'));
  }
  const config = parsed.data;
  const [workspace, source] = config.WORKSPACE_PATH
    ? [config.WORKSPACE_PATH, 'env' as const]
    : existsSync('/workspace')
      ? ['/workspace', 'default' as const]
      : [EXAMPLE_WORKSPACE, 'example' as const];
  return Object.freeze({
    ...config,
    HOST: config.HOST ?? (config.API_TOKEN ? '0.0.0.0' : '127.0.0.1'),
    ALLOWED_HOSTS: allowedHosts(config.ALLOWED_HOSTS, config.HOST, Boolean(config.API_TOKEN)),
    WORKSPACE_PATH: path.resolve(workspace),
    WORKSPACE_SOURCE: source,
    BRIDGE_WORKSPACE_PATH: path.posix.resolve(config.BRIDGE_WORKSPACE_PATH ?? path.resolve(workspace)),
    EMBEDDED_PG_DATA: path.resolve(config.EMBEDDED_PG_DATA),
    CORS_ORIGINS: config.CORS_ORIGINS ?? (config.NODE_ENV === 'development' ? STUDIO_DEV_ORIGINS : []),
    PROVIDERS_FILE: config.PROVIDERS_FILE ? path.resolve(config.PROVIDERS_FILE) : workspaceProvidersFile(path.resolve(workspace)),
    readEnv: (name: string) => env[name],
  });
}

/** graphcap's place for a workspace's providers, when the file is there. */
function workspaceProvidersFile(workspace: string): string | undefined {
  const file = path.join(workspace, 'config', 'provider.config.toml');
  return existsSync(file) ? file : undefined;
}

/** The folder of package.json: src/ and dist/src/ both sit below it. */
function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json')) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  return dir;
}

const SECRET_LIKE = /URL|TOKEN|KEY|SECRET|PASSWORD/;

function truncate(value: string): string {
  return value.length > 60 ? `${value.slice(0, 57)}...` : value;
}
