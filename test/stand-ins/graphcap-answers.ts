/**
 * What graphcap's real Inference Bridge answers, for the stand-in bridge (test/stand-ins/bridge.ts)
 * to answer the same: its request checks and its error texts, recorded from the real bridge
 * (Open-Model-Initiative/graphcap at 1088efe, apps/servers/inference_bridge) run by hand against a
 * model stand-in. Shapes and wording only; no code of graphcap's.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

export interface Answer {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

/** The bridge's request validation (its middleware): always 400, never 422. */
export function validationError(missing: string[]): Answer {
  const names = missing.map((m) => `'${m}'`);
  return {
    status: 400,
    body: {
      title: 'Validation Error',
      timestamp: new Date().toISOString().replace('Z', ''),
      message: missing.length === 1 ? `Invalid request: ${names[0]} parameter is invalid` : `Invalid request: Parameters ${names.join(', ')} are invalid`,
      name: 'Error',
      details: 'The request was rejected due to invalid parameters.',
      invalid_parameters: Object.fromEntries(missing.map((m) => [m, { message: 'Field required', error_type: 'missing' }])),
      suggestions: [...missing.map((m) => `Add the missing required parameter: '${m}'`), 'Check the documentation for correct parameter formats'],
    },
  };
}

const PROVIDER_CONFIG_REQUIRED = ['name', 'kind', 'environment', 'base_url', 'api_key'];

/**
 * A provider_config pydantic refuses (camelCase keys, a field missing): the bridge answers 404 with
 * pydantic's text, which quotes the start and the end of the config, so a key given last shows.
 */
export function providerConfigProblem(config: Record<string, unknown>): Answer | undefined {
  const missing = PROVIDER_CONFIG_REQUIRED.filter((f) => typeof config[f] !== 'string');
  if (missing.length === 0) return undefined;
  const repr = pythonRepr(config);
  const shown = repr.length > 50 ? `${repr.slice(0, 25)}...${repr.slice(-24)}` : repr;
  const lines = missing.map(
    (f) => `${f}\n  Field required [type=missing, input_value=${shown}, input_type=dict]\n    For further information visit https://errors.pydantic.dev/2.10/v/missing`,
  );
  return { status: 404, body: { detail: `${missing.length} validation error${missing.length > 1 ? 's' : ''} for ProviderConfig\n${lines.join('\n')}` } };
}

/** Every model-provider error: a 500 quoting the provider's answer (its status and body, in Python's repr). */
export function providerError(imagePath: string, status: number, error: Record<string, unknown>): Answer {
  return {
    status: 500,
    body: { detail: `Error generating caption: Error processing ${imagePath}: Error code: ${status} - ${pythonRepr({ error })}` },
  };
}

/** The provider could not be reached at all (after the SDK's own retries). */
export function connectionError(imagePath: string): Answer {
  return { status: 500, body: { detail: `Error generating caption: Error processing ${imagePath}: Connection error.` } };
}

export const rateLimited = (imagePath: string, model: string, retryAfterSeconds: number) =>
  providerError(imagePath, 429, {
    message: `Rate limit reached for ${model} in organization org-standin on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in ${retryAfterSeconds}s.`,
    type: 'requests',
    param: null,
    code: 'rate_limit_exceeded',
  });

/** OpenAI's wording, the key masked as it masks it; `echo` quotes it whole, as a careless provider might. */
export const invalidKey = (imagePath: string, key: string, echo: boolean) =>
  providerError(imagePath, 401, {
    message: `Incorrect API key provided: ${echo ? key : `${key.slice(0, 3)}****${key.slice(-4)}`}. You can find your API key at https://platform.openai.com/account/api-keys.`,
    type: 'invalid_request_error',
    param: null,
    code: 'invalid_api_key',
  });

export const serverError = (imagePath: string) =>
  providerError(imagePath, 500, { message: 'The server had an error while processing your request. Sorry about that!', type: 'server_error', param: null, code: null });

export const imageNotFound = (imagePath: string): Answer => ({ status: 404, body: { detail: `Image file not found: ${imagePath}` } });

export const unknownPerspective = (name: string, known: readonly string[]): Answer => ({
  status: 404,
  body: { detail: `Unknown perspective: ${name}. Available perspectives: ${pythonRepr([...known])}` },
});

/** FastAPI's answer for a route it does not have. */
export const noRoute: Answer = { status: 404, body: { detail: 'Not Found' } };

/** The perspective names of a library folder (every *.json below it with a name), as the bridge loads them at its start. */
export async function loadPerspectiveNames(library: string): Promise<string[]> {
  const files = (await readdir(library, { recursive: true }).catch(() => [])).map(String).filter((f) => f.endsWith('.json'));
  const names: string[] = [];
  for (const file of files.sort()) {
    try {
      const parsed = JSON.parse(await readFile(path.join(library, file), 'utf8')) as { name?: unknown };
      if (typeof parsed.name === 'string' && !names.includes(parsed.name)) names.push(parsed.name);
    } catch {
      // skipped, as the bridge skips a file it cannot load
    }
  }
  return names;
}

/** Python's repr of JSON-like data (single quotes, None, True): how the bridge quotes bodies. */
export function pythonRepr(value: unknown): string {
  if (value === null || value === undefined) return 'None';
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (typeof value === 'string') return `'${value.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
  if (typeof value === 'number') return String(value);
  if (Array.isArray(value)) return `[${value.map(pythonRepr).join(', ')}]`;
  return `{${Object.entries(value as Record<string, unknown>)
    .map(([k, v]) => `${pythonRepr(k)}: ${pythonRepr(v)}`)
    .join(', ')}}`;
}
