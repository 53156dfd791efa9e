import { randomBytes } from 'node:crypto';
import { realpath } from 'node:fs/promises';
import path from 'node:path';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Db } from '../../src/db/client.js';
import type { ClaimedItem } from '../../src/db/dispatch.js';
import { createProvider, updateProvider } from '../../src/db/providers.js';
import * as schema from '../../src/db/schema.js';
import {
  BridgeIncompatibleError,
  classifyStatus,
  parseRetryAfter,
  PermanentError,
  ProviderAuthError,
  ReplicaError,
  ThrottledError,
  TimedOutError,
  TransientError,
} from '../../src/jobs/errors.js';
import { createInferenceBridge } from '../../src/jobs/inference.js';
import { ProviderRegistry } from '../../src/jobs/provider-registry.js';
import { seal } from '../../src/secrets.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { waitFor } from '../helpers/jobs.js';
import { FIXTURE_WORKSPACE } from '../helpers/service.js';
import { StandInBridge } from '../stand-ins/bridge.js';

const SECRETS_KEY = randomBytes(32);
const KEY = 'sk-test-PLANTED-1234';
const BUDDHA = 'big-buddha-5587706_1280.jpg';

let bridge: StandInBridge;
let database: TestDatabase;
let pool: pg.Pool;
let db: Db;
let providers: ProviderRegistry;
let providerId: string;

beforeAll(async () => {
  bridge = await StandInBridge.start();
  database = await createTestDatabase();
  pool = new pg.Pool({ connectionString: database.url, max: 2 });
  db = drizzle(pool, { schema });
  providers = new ProviderRegistry(db, SECRETS_KEY, [], 60_000);
  const row = await createProvider(db, {
    name: 'openai',
    kind: 'openai',
    environment: 'cloud',
    baseUrl: 'http://127.0.0.1:9/v1',
    apiKey: seal(KEY, SECRETS_KEY),
    isEnabled: true,
    models: [{ name: 'gpt-4o', isEnabled: true }, { name: 'gpt-4o-mini', isEnabled: false }],
    defaultModel: 'gpt-4o',
    requestsPerMinute: 60,
    tokensPerMinute: null,
  });
  providerId = row.id;
});
afterAll(async () => {
  await bridge?.close();
  await pool?.end();
  await database?.drop();
});
beforeEach(async () => {
  await bridge.up();
  bridge.set({
    latencyMs: 0, errorRate: 0, hangRate: 0, permanentFailures: {}, rejectedKeys: [], echoKeys: false, incompatible: false,
    faultStyle: 'graphcap', throttleUntil: 0, unavailableUntil: 0,
  });
  bridge.reset();
});

function item(overrides: Partial<ClaimedItem> = {}): ClaimedItem {
  return {
    itemId: '00000000-0000-4000-8000-000000000001',
    jobId: '00000000-0000-4000-8000-0000000000aa',
    imagePath: `datasets/os_img/${BUDDHA}`,
    perspective: 'art_critic',
    attempts: 1,
    config: { provider: 'openai', model: 'gpt-4o' },
    requestId: null,
    ...overrides,
  };
}

function client(options: { timeoutMs?: number; secretsKey?: Buffer; retryTimeouts?: boolean; bridgeWorkspacePath?: string; url?: string } = {}) {
  return createInferenceBridge({
    url: options.url ?? bridge.url,
    timeoutMs: options.timeoutMs ?? 5000,
    retryTimeouts: options.retryTimeouts ?? false,
    workspacePath: FIXTURE_WORKSPACE,
    bridgeWorkspacePath: options.bridgeWorkspacePath ?? FIXTURE_WORKSPACE,
    secretsKey: 'secretsKey' in options ? options.secretsKey : SECRETS_KEY,
    providers,
  });
}

const call = (i: ClaimedItem, signal = new AbortController().signal) => client().caption(i, { signal, requestId: 'req-test-1' });
const failure = (i: ClaimedItem): Promise<Error> =>
  call(i).then(
    () => {
      throw new Error('the call was expected to fail');
    },
    (e: unknown) => e as Error,
  );

describe('Inference Bridge client', () => {
  it('posts to /api/v1 the stored provider as graphcap’s provider_config (key opened, snake_case), the options, and returns the caption', async () => {
    const config = {
      provider: 'openai',
      model: 'gpt-4o',
      maxTokens: 512,
      temperature: 0.2,
      topP: 0.8,
      repetitionPenalty: 1.1,
      context: ['a museum catalogue'],
      globalContext: 'Be brief.',
    };
    const caption = await call(item({ config }));
    expect(caption.result).toEqual(bridge.captionFor(BUDDHA, 'art_critic'));
    expect(bridge.knows(BUDDHA, 'art_critic')).toBe(true);
    // graphcap's bridge never fills raw_text.
    expect(caption.rawText).toBeNull();

    const [received] = bridge.calls;
    expect(received).toMatchObject({ requestId: 'req-test-1', jobId: item().jobId, itemId: item().itemId, outcome: 'ok', apiKey: KEY });
    expect(received!.body).toEqual({
      perspective: 'art_critic',
      image_path: path.join(await realpath(FIXTURE_WORKSPACE), 'datasets/os_img', BUDDHA),
      provider: 'openai',
      provider_config: {
        name: 'openai',
        kind: 'openai',
        environment: 'cloud',
        base_url: 'http://127.0.0.1:9/v1',
        api_key: KEY,
        models: ['gpt-4o'],
        fetch_models: false,
        rate_limits: { requests_per_minute: 60, tokens_per_minute: null },
      },
      model: 'gpt-4o',
      max_tokens: 512,
      temperature: 0.2,
      top_p: 0.8,
      repetition_penalty: 1.1,
      context: ['a museum catalogue'],
      global_context: 'Be brief.',
    });
    // Unset options are left out so the bridge's defaults apply.
    expect(received!.body).not.toHaveProperty('resize_resolution');
  });

  it('sends image paths as the bridge sees the workspace (BRIDGE_WORKSPACE_PATH)', async () => {
    // The stand-in shares this file system, so it answers 404 for a path only the "container" has.
    const error = await client({ bridgeWorkspacePath: '/workspace' })
      .caption(item(), { signal: new AbortController().signal, requestId: 'r' })
      .then(() => new Error('expected a failure'), (e: unknown) => e as Error);
    expect(bridge.calls[0]!.body.image_path).toBe(`/workspace/datasets/os_img/${BUDDHA}`);
    expect(error).toBeInstanceOf(PermanentError);
    expect(error.message).toBe(`Inference Bridge answered 404: Image file not found: /workspace/datasets/os_img/${BUDDHA} (does the bridge see the workspace at BRIDGE_WORKSPACE_PATH?)`);
  });

  it('uses a key changed mid-job at the next call once the registry hears of it', async () => {
    await call(item());
    await updateProvider(db, providerId, { apiKey: seal('sk-rotated-5678', SECRETS_KEY) });
    providers.invalidate();
    await call(item());
    expect(bridge.calls.map((c) => c.apiKey)).toEqual([KEY, 'sk-rotated-5678']);
    await updateProvider(db, providerId, { apiKey: seal(KEY, SECRETS_KEY) });
    providers.invalidate();
  });

  it("sends a job's own sealed provider_config as it was given", async () => {
    const own = { name: 'mine', kind: 'openai', environment: 'local', base_url: 'http://127.0.0.1:9/v1', api_key: 'sk-own-1', models: ['m'] };
    await call(item({ config: { provider: 'mine', model: 'm', providerConfig: seal(own, SECRETS_KEY) } }));
    expect(bridge.calls[0]!.body.provider_config).toEqual(own);
  });

  it('a provider’s 429 inside graphcap’s 500 throttles, with the wait the provider named', async () => {
    bridge.set({ throttleUntil: Date.now() + 60_000, retryAfterSeconds: 2 });
    const error = await failure(item());
    expect(error).toBeInstanceOf(ThrottledError);
    expect((error as ThrottledError).retryAfterMs).toBe(2000);
    expect(error.message).toMatch(/^the provider is rate-limiting: Inference Bridge answered 500: Error generating caption: .*Error code: 429/);
  });

  it('a refused key is a ProviderAuthError whose text never holds the key, even when the provider quotes it', async () => {
    bridge.set({ rejectedKeys: [KEY], echoKeys: true });
    const error = await failure(item());
    expect(error).toBeInstanceOf(ProviderAuthError);
    expect(error.message).toMatch(/Error code: 401/);
    expect(error.message).toContain('[redacted]');
    expect(error.message).not.toContain(KEY);
    expect(bridge.calls[0]!.apiKey).toBe(KEY);
  });

  it('pydantic’s echo of a provider_config it cannot read is scrubbed (a legacy camelCase config)', async () => {
    const camel = { name: 'mine', kind: 'openai', environment: 'local', baseUrl: 'http://x/v1', apiKey: KEY };
    const error = await failure(item({ config: { provider: 'mine', model: 'm', providerConfig: seal(camel, SECRETS_KEY) } }));
    expect(error).toBeInstanceOf(PermanentError);
    expect(error.message).toMatch(/^Inference Bridge answered 404: 2 validation errors for ProviderConfig/);
    expect(error.message).not.toContain('PLANTED');
  });

  it('an unknown perspective fails with what to do; a missing route is an incompatible bridge', async () => {
    const unknown = await failure(item({ perspective: 'no_such_perspective' }));
    expect(unknown).toBeInstanceOf(PermanentError);
    expect(unknown.message).toMatch(/^Inference Bridge answered 404: Unknown perspective: no_such_perspective\. .*restart it after adding one\)$/);
    bridge.set({ incompatible: true });
    const missing = await failure(item());
    expect(missing).toBeInstanceOf(BridgeIncompatibleError);
    expect(missing.message).toMatch(/no such route/);
  });

  it('turns a 4xx into a PermanentError that keeps the bridge message', async () => {
    bridge.set({ permanentFailures: { [BUDDHA]: 'cannot decode image (truncated file)' } });
    const error = await failure(item());
    expect(error).toBeInstanceOf(PermanentError);
    expect(error.message).toBe('Inference Bridge answered 400: cannot decode image (truncated file)');
  });

  it('turns a provider’s 5xx inside graphcap’s 500, or an unreachable provider, into a TransientError', async () => {
    bridge.set({ errorRate: 1 });
    const error = await failure(item());
    expect(error).toBeInstanceOf(TransientError);
    expect(error).not.toBeInstanceOf(ThrottledError);
    expect(error.message).toMatch(/^Inference Bridge answered 500: Error generating caption: .*Error code: 500/);
    bridge.set({ errorRate: 0, unavailableUntil: Date.now() + 60_000 });
    const down = await failure(item());
    expect(down).toBeInstanceOf(TransientError);
    expect(down.message).toMatch(/Connection error\.$/);
    bridge.set({ unavailableUntil: 0 });
  });

  it('a call that times out fails for good (the bridge may still be paying for it), or is retried when asked', async () => {
    bridge.set({ hangRate: 1 });
    const hung = (retryTimeouts: boolean) =>
      client({ timeoutMs: 200, retryTimeouts })
        .caption(item(), { signal: new AbortController().signal, requestId: 'r' })
        .then(() => new Error('expected a failure'), (e: unknown) => e as Error);
    const final = await hung(false);
    expect(final).toBeInstanceOf(TimedOutError);
    expect(final.message).toMatch(/^Inference Bridge did not answer within 200 ms; not retried/);
    const retried = await hung(true);
    expect(retried).toBeInstanceOf(TransientError);
    expect(retried.message).toBe('Inference Bridge did not answer within 200 ms');
    await waitFor('the stand-in to see the calls end', () => bridge.calls.every((c) => c.outcome !== 'in-flight'));
    expect(bridge.calls.map((c) => [c.hung, c.outcome])).toEqual([[true, 'aborted'], [true, 'aborted']]);
  });

  it('treats a refused connection as a TransientError', async () => {
    await bridge.down();
    const error = await failure(item());
    expect(error).toBeInstanceOf(TransientError);
    expect(error.message).toBe('Inference Bridge unreachable: ECONNREFUSED');
  });

  it("rejects with the signal's reason when aborted, and the bridge sees the call cut", async () => {
    bridge.set({ latencyMs: 10_000 });
    const controller = new AbortController();
    const pending = call(item(), controller.signal).catch((e: unknown) => e);
    await waitFor('the call to reach the stand-in', () => bridge.getStats().inFlight === 1);
    controller.abort('cancelled');
    expect(await pending).toBe('cancelled');
    await waitFor('the stand-in to see the call end', () => bridge.calls[0]?.outcome === 'aborted');
  });

  it('leaves sealed provider secrets to a replica that has the key', async () => {
    const config = { provider: 'x', model: 'm', providerConfig: seal({ api_key: 'sk-test' }, SECRETS_KEY) };
    for (const secretsKey of [undefined, randomBytes(32)]) {
      const error = await client({ secretsKey })
        .caption(item({ config }), { signal: new AbortController().signal, requestId: 'r' })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ReplicaError);
      expect((error as Error).message).toMatch(/SECRETS_KEY/);
    }
    expect(bridge.calls).toHaveLength(0);
  });

  it('refuses an image outside the workspace without calling the bridge', async () => {
    const error = await failure(item({ imagePath: 'datasets/os_img/no-such-file.jpg' }));
    expect(error).toBeInstanceOf(PermanentError);
    expect(error.message).toMatch(/^image datasets\/os_img\/no-such-file.jpg cannot be read in the workspace/);
    expect(bridge.calls).toHaveLength(0);
  });

  it('resolves an image ahead of its call (a reserved item): the call sends that path; a failed resolve fails the call the same way', async () => {
    const bridgeClient = client();
    const ahead = bridgeClient.resolveImage(item());
    expect(await ahead).toBe(path.join(await realpath(FIXTURE_WORKSPACE), 'datasets/os_img', BUDDHA));
    // The call takes the path it is given, without resolving the item's again.
    await bridgeClient.caption(item({ imagePath: 'datasets/os_img/no-such-file.jpg' }), { signal: new AbortController().signal, requestId: 'r', image: ahead });
    expect(bridge.calls[0]!.body.image_path).toBe(await ahead);
    const missing = bridgeClient.resolveImage(item({ imagePath: 'datasets/os_img/no-such-file.jpg' }));
    const error = await bridgeClient.caption(item(), { signal: new AbortController().signal, requestId: 'r', image: missing }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PermanentError);
    expect((error as Error).message).toMatch(/cannot be read in the workspace/);
    expect(bridge.calls).toHaveLength(1);
  });

  it('classifies plain HTTP statuses: 4xx permanent, except 408, 425 and 429; 5xx transient; 429 and 503 with Retry-After throttled', () => {
    const kind = (status: number, retryAfter?: string, message = 'x') => {
      const error = classifyStatus(status, message, retryAfter);
      return error instanceof ThrottledError
        ? `throttled ${error.retryAfterMs}`
        : error instanceof ProviderAuthError
          ? 'auth'
          : error instanceof PermanentError
            ? 'permanent'
            : 'transient';
    };
    expect([400, 401, 403, 404, 413, 422].map((s) => kind(s))).toEqual(Array(6).fill('permanent'));
    expect([408, 425, 500, 502, 503, 504].map((s) => kind(s))).toEqual(Array(6).fill('transient'));
    expect([kind(429), kind(429, '3'), kind(503, '2'), kind(503, 'soon')]).toEqual(['throttled null', 'throttled 3000', 'throttled 2000', 'transient']);
    expect(kind(429, new Date(Date.now() + 60_000).toUTCString())).toMatch(/^throttled (5[89]|60)\d{3}$/);
    expect(parseRetryAfter('86400')).toBe(600_000);
    expect(parseRetryAfter(new Date(Date.now() - 5000).toUTCString())).toBe(0);
    // graphcap's 500s by the provider's status inside: Gemini words a bad key as a 400.
    const inside = (code: number, text: string) => `Error generating caption: Error processing /x.jpg: Error code: ${code} - {'error': {'message': '${text}'}}`;
    expect(kind(500, undefined, inside(429, 'Please try again in 20ms.'))).toBe('throttled 20');
    expect(kind(500, undefined, inside(403, 'Forbidden'))).toBe('auth');
    expect(kind(500, undefined, inside(400, 'API key not valid. Please pass a valid API key.'))).toBe('auth');
    expect(kind(500, undefined, inside(400, 'Invalid image'))).toBe('transient');
    expect(kind(404, undefined, 'Not Found')).toBe('transient');
  });
});
