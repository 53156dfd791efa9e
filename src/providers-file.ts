/**
 * The providers file: providers defined in configuration, for deployments that do not click
 * through a UI. graphcap's own format (`provider.config.toml`: one table per provider with kind,
 * environment, base_url, env_var, models, rate_limits), in TOML or JSON. Imported at start-up,
 * idempotently (src/db/providers.ts importConfiguredProviders); the key is read from the variable
 * `env_var` names (or `api_key`, for local servers whose key is no secret) and sealed at once.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { z } from 'zod';
import type { Db } from './db/client.js';
import { importConfiguredProviders, type ConfiguredProvider, type ProviderImportCounts } from './db/providers.js';
import { PROVIDER_ENVIRONMENTS } from './db/schema.js';
import type { Logger } from './logger.js';
import { isSealed, keyId, open, seal } from './secrets.js';

const NAME = /^[\w][\w.@+-]{0,127}$/;
const perMinute = z.int().min(1).max(100_000_000).optional();

const entrySchema = z.object({
  kind: z.string().regex(/^[\w.-]{1,64}$/, 'must be 1-64 letters, digits, _ . -'),
  environment: z.enum(PROVIDER_ENVIRONMENTS).default('cloud'),
  base_url: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }),
  env_var: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name').optional(),
  api_key: z.string().min(1).optional(),
  enabled: z.boolean().default(true),
  models: z.array(z.string().min(1).max(256)).max(500).default([]),
  default_model: z.string().min(1).max(256).optional(),
  rate_limits: z.object({ requests_per_minute: perMinute, tokens_per_minute: perMinute }).optional(),
  // graphcap's: the bridge lists a local server's models itself. Accepted, nothing to store.
  fetch_models: z.boolean().optional(),
});

export interface ProvidersFileProblem {
  provider: string;
  message: string;
}

/** A provider of the file, its key in the clear (sealed only on import). */
export interface FileProvider extends Omit<ConfiguredProvider, 'apiKey'> {
  apiKey: string | null;
}

/** Parses the file's text (TOML, or JSON for a .json file); a bad entry is a problem, the others stand. */
export function parseProvidersFile(
  text: string,
  format: 'toml' | 'json',
  readEnv: (name: string) => string | undefined,
): { providers: FileProvider[]; problems: ProvidersFileProblem[] } {
  const document = (format === 'json' ? JSON.parse(text) : parseToml(text)) as unknown;
  if (typeof document !== 'object' || document === null || Array.isArray(document)) {
    throw new Error('the providers file must be a table of providers by name');
  }
  const providers: FileProvider[] = [];
  const problems: ProvidersFileProblem[] = [];
  for (const [name, raw] of Object.entries(document)) {
    if (!NAME.test(name)) {
      problems.push({ provider: name, message: 'the name must be 1-128 letters, digits, _ . @ + -' });
      continue;
    }
    const parsed = entrySchema.safeParse(raw);
    if (!parsed.success) {
      problems.push({ provider: name, message: parsed.error.issues.map((i) => `${i.path.join('.') || '(entry)'}: ${i.message}`).join('; ') });
      continue;
    }
    const e = parsed.data;
    if (e.default_model && e.models.length > 0 && !e.models.includes(e.default_model)) {
      problems.push({ provider: name, message: `default_model ${e.default_model} is not among its models` });
      continue;
    }
    const fromEnv = e.env_var ? readEnv(e.env_var) : undefined;
    providers.push({
      name,
      kind: e.kind,
      environment: e.environment,
      baseUrl: e.base_url,
      apiKey: fromEnv || e.api_key || null,
      isEnabled: e.enabled,
      models: e.models.map((m) => ({ name: m, isEnabled: true })),
      defaultModel: e.default_model ?? null,
      requestsPerMinute: e.rate_limits?.requests_per_minute ?? null,
      tokensPerMinute: e.rate_limits?.tokens_per_minute ?? null,
    });
  }
  return { providers, problems };
}

/**
 * Imports the providers file into the database. Without a key to seal with, a provider's API key
 * is left out (and said so); the provider itself is still imported.
 */
export async function importProvidersFile(
  db: Db,
  file: string,
  options: { secretsKey: Buffer | undefined; readEnv: (name: string) => string | undefined; logger: Logger },
): Promise<ProviderImportCounts & { problems: ProvidersFileProblem[] }> {
  const text = await readFile(file, 'utf8');
  const format = path.extname(file).toLowerCase() === '.json' ? 'json' : 'toml';
  let parsed: ReturnType<typeof parseProvidersFile>;
  try {
    parsed = parseProvidersFile(text, format, options.readEnv);
  } catch (error) {
    // The parser's message names the line; never the file's text, which may hold keys.
    throw new Error(`the providers file ${file} cannot be read as ${format.toUpperCase()}: ${firstLine((error as Error).message)}`);
  }
  const { secretsKey } = options;
  const problems = [...parsed.problems];
  const configured: ConfiguredProvider[] = parsed.providers.map(({ apiKey, ...p }) => {
    if (apiKey !== null && !secretsKey) {
      problems.push({ provider: p.name, message: 'the service has no SECRETS_KEY: imported without its API key' });
    }
    return { ...p, apiKey: apiKey !== null && secretsKey ? seal(apiKey, secretsKey) : null };
  });
  // The key given for each provider, as it will be stored (null without a key to seal with).
  const given = new Map(configured.map((c) => [c.name, c.apiKey === null ? null : parsed.providers.find((p) => p.name === c.name)!.apiKey]));
  const sameKey = (stored: unknown, name: string): boolean => {
    const key = given.get(name) ?? null;
    if (stored === null || key === null) return stored === key;
    // Sealed under an earlier key: written again, so the file's providers move to the current key.
    if (!secretsKey || !isSealed(stored) || stored.kid !== keyId(secretsKey)) return false;
    try {
      return open(stored, secretsKey) === key;
    } catch {
      return false;
    }
  };
  const counts = await importConfiguredProviders(db, configured, sameKey);
  // Not a problem: a provider may get its key later (a new variable and a restart), and a call
  // with none that the provider refuses marks it misconfigured.
  const keyless = configured.filter((c) => c.apiKey === null).map((c) => c.name);
  if (keyless.length > 0) options.logger.info({ file, providers: keyless }, 'providers file: imported without an API key');
  for (const problem of problems) options.logger.warn({ file, ...problem }, 'providers file: entry imported in part or skipped');
  options.logger.info({ file, ...counts }, 'providers file imported');
  return { ...counts, problems };
}

function firstLine(message: string): string {
  return (message.split('\n')[0] ?? '').slice(0, 300);
}
