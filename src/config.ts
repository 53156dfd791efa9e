/**
 * The one configuration module: every setting the service reads comes from here, validated once at
 * start-up. Nothing else reads process.env.
 */
import path from 'node:path';
import { z } from 'zod';

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

const bool = z.preprocess(emptyToUndefined, z.stringbool({ error: 'must be true or false' }));

const envSchema = z.object({
  PORT: int(0, 65535).default(32550),
  HOST: z.preprocess(emptyToUndefined, z.string().default('0.0.0.0')),
  DATABASE_URL: z.preprocess(
    emptyToUndefined,
    z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// connection string')
      .optional(),
  ),
  MESSAGE_BROKER_URL: url,
  INFERENCE_BRIDGE_URL: url,
  NODE_ENV: z.preprocess(
    emptyToUndefined,
    z.enum(['development', 'production', 'test']).default('development'),
  ),
  WORKSPACE_PATH: z.preprocess(emptyToUndefined, z.string().default('/workspace')),
  MAX_CONCURRENT_JOBS: int(1, 1000).default(2),
  MAX_CONCURRENT_ITEMS: int(1, 1000).default(4),
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
  /** Largest accepted request body, in bytes (413 beyond it). */
  BODY_LIMIT_BYTES: int(1024, 100 * 1024 * 1024).default(1024 * 1024),
  /** Most items a single job may have; guards against a create that would fill the disk. */
  MAX_JOB_ITEMS: int(1, 10_000_000).default(1_000_000),
  /** Import the workspace (perspectives, datasets) at start-up. */
  WORKSPACE_SYNC_ON_START: bool.default(true),
  /** Seconds a SIGTERM waits for in-flight work before the process exits. */
  SHUTDOWN_GRACE_SECONDS: int(0, 3600).default(10),
});

export type Config = Readonly<
  Omit<z.infer<typeof envSchema>, 'WORKSPACE_PATH' | 'EMBEDDED_PG_DATA'> & {
    WORKSPACE_PATH: string;
    EMBEDDED_PG_DATA: string;
  }
>;

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
  return Object.freeze({
    ...config,
    WORKSPACE_PATH: path.resolve(config.WORKSPACE_PATH),
    EMBEDDED_PG_DATA: path.resolve(config.EMBEDDED_PG_DATA),
  });
}

const SECRET_LIKE = /URL|TOKEN|KEY|SECRET|PASSWORD/;

function truncate(value: string): string {
  return value.length > 60 ? `${value.slice(0, 57)}...` : value;
}
