import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { isSealed, open } from '../../src/secrets.js';
import { CONFIG, IMAGES } from '../helpers/fixtures.js';
import { api, startTestService, type TestService } from '../helpers/service.js';

const KEY_HEX = 'cd'.repeat(32);
const PLANTED = 'sk-PLANTED-provider-key-0123456789';
const logged: string[] = [];
let svc: TestService;

beforeAll(async () => {
  const sink = new Writable({ write: (chunk, _e, done) => (logged.push(String(chunk)), done()) });
  svc = await startTestService({ env: { SECRETS_KEY: KEY_HEX, GRAPHCAP_TEST_KEY: 'sk-from-env-4321' }, logger: createLogger('trace', sink) });
});
afterAll(async () => svc?.close());

const NEW = {
  name: 'studio-openai',
  kind: 'openai',
  environment: 'cloud',
  baseUrl: 'https://api.openai.com/v1',
  apiKey: PLANTED,
  models: [{ name: 'gpt-4o-mini' }, { name: 'gpt-4o', isEnabled: false }],
  defaultModel: 'gpt-4o-mini',
  rateLimits: { requestsPerMinute: 30 },
};

const storedKey = async (name: string) => {
  const { rows } = await svc.db.execute<{ api_key: unknown }>(sql`select api_key from core_schema.providers where name = ${name}`);
  return rows[0]?.api_key;
};

describe('providers', () => {
  it('are created with a sealed key that is never returned, and read back through REST and tRPC', async () => {
    const created = await api(svc.url, 'POST', '/api/providers', NEW);
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    expect(created.body).toMatchObject({
      name: 'studio-openai',
      kind: 'openai',
      environment: 'cloud',
      baseUrl: 'https://api.openai.com/v1',
      hasApiKey: true,
      isEnabled: true,
      models: [{ name: 'gpt-4o-mini', isEnabled: true }, { name: 'gpt-4o', isEnabled: false }],
      defaultModel: 'gpt-4o-mini',
      rateLimits: { requestsPerMinute: 30, tokensPerMinute: null },
      source: 'api',
      misconfigured: null,
    });
    expect(created.body).not.toHaveProperty('apiKey');
    const id = created.body.providerId as string;
    const stored = await storedKey('studio-openai');
    expect(isSealed(stored)).toBe(true);
    expect(open(stored as never, Buffer.from(KEY_HEX, 'hex'))).toBe(PLANTED);

    const viaTrpc = await svc.trpc.providers.get.query({ providerId: id });
    expect(viaTrpc).toEqual(created.body);
    const listed = await api(svc.url, 'GET', '/api/providers?kind=openai&sort=name');
    expect(listed.body.items.map((p: { name: string }) => p.name)).toEqual(['openai', 'studio-openai']);
    expect((await api(svc.url, 'GET', '/api/providers?nameContains=STUDIO')).body.total).toBe(1);
    expect((await api(svc.url, 'GET', '/api/providers?isEnabled=false')).body.total).toBe(0);
    expect((await api(svc.url, 'GET', `/api/providers/${id}`)).body.hasApiKey).toBe(true);
  });

  it('refuses what graphcap’s bridge could not use, naming the field, and a taken name', async () => {
    const bad = async (body: Record<string, unknown>) => (await api(svc.url, 'POST', '/api/providers', { ...NEW, name: 'x', ...body })).body;
    expect((await bad({ baseUrl: 'ftp://x' })).errors).toEqual([{ path: 'baseUrl', message: 'must be an http(s) URL' }]);
    expect((await bad({ environment: 'moon' })).errors[0].path).toBe('environment');
    expect((await bad({ defaultModel: 'nope' })).errors).toEqual([{ path: 'defaultModel', message: 'must be one of the models (gpt-4o-mini, gpt-4o)' }]);
    expect((await bad({ models: [{ name: 'a' }, { name: 'a' }] })).errors[0]).toMatchObject({ path: 'models', message: 'model names must be unique' });
    expect((await bad({ unknownField: 1 })).status).toBe(400);
    const taken = await api(svc.url, 'POST', '/api/providers', NEW);
    expect(taken.status).toBe(409);
    expect(taken.body.detail).toBe('a provider named "studio-openai" exists already');
  });

  it('changes only what is given; a key is replaced or cleared only when asked', async () => {
    const { items } = (await api(svc.url, 'GET', '/api/providers?nameContains=studio-openai')).body;
    const id = items[0].providerId as string;
    const renamed = await api(svc.url, 'PATCH', `/api/providers/${id}`, { name: 'studio', isEnabled: false });
    expect(renamed.body).toMatchObject({ name: 'studio', isEnabled: false, hasApiKey: true, defaultModel: 'gpt-4o-mini' });
    expect(open((await storedKey('studio')) as never, Buffer.from(KEY_HEX, 'hex'))).toBe(PLANTED);
    const replaced = await api(svc.url, 'PATCH', `/api/providers/${id}`, { apiKey: 'sk-second-key-000' });
    expect(replaced.body.hasApiKey).toBe(true);
    expect(open((await storedKey('studio')) as never, Buffer.from(KEY_HEX, 'hex'))).toBe('sk-second-key-000');
    const cleared = await api(svc.url, 'PATCH', `/api/providers/${id}`, { apiKey: null, rateLimits: { requestsPerMinute: null } });
    expect(cleared.body).toMatchObject({ hasApiKey: false, rateLimits: { requestsPerMinute: null, tokensPerMinute: null } });
    expect(await storedKey('studio')).toBeNull();
    expect((await api(svc.url, 'PATCH', `/api/providers/${id}`, {})).status).toBe(400);
    await api(svc.url, 'PATCH', `/api/providers/${id}`, { isEnabled: true, apiKey: PLANTED });
  });

  it('jobs name a stored provider: unknown, disabled or an unlisted model is a 400 naming the field, and nothing is written', async () => {
    const create = (config: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
      api(svc.url, 'POST', '/api/perspectives/batch/create', { type: 'MULTI_PERSPECTIVE', perspectives: ['art_critic'], imagePaths: [IMAGES[0]], config, ...extra });
    const jobs = async () => (await svc.db.execute<{ n: number }>(sql`select count(*)::int as n from job_queue.caption_jobs`)).rows[0]!.n;
    const before = await jobs();

    const unknown = await create({ provider: 'nobody', model: 'm' });
    expect(unknown.status).toBe(400);
    expect(unknown.body.errors).toEqual([{ path: 'config.provider', message: expect.stringMatching(/^unknown provider "nobody": create it/) }]);
    const unlisted = await create({ provider: 'studio', model: 'gpt-4o' });
    expect(unlisted.body.errors).toEqual([{ path: 'config.model', message: 'provider studio has no enabled model "gpt-4o" (it has: gpt-4o-mini)' }]);
    // Every failing field at once: the provider and the image.
    const both = await create({ provider: 'nobody', model: 'm' }, { imagePaths: ['datasets/os_img/none.jpg'] });
    expect(both.body.errors.map((e: { path: string }) => e.path).sort()).toEqual(['config.provider', 'imagePaths.0']);
    const { items } = (await api(svc.url, 'GET', '/api/providers?nameContains=studio')).body;
    await api(svc.url, 'PATCH', `/api/providers/${items[0].providerId}`, { isEnabled: false });
    const disabled = await create({ provider: 'studio', model: 'gpt-4o-mini' });
    expect(disabled.body.errors).toEqual([{ path: 'config.provider', message: 'provider studio is disabled' }]);
    await api(svc.url, 'PATCH', `/api/providers/${items[0].providerId}`, { isEnabled: true });
    // An inline provider_config must be one graphcap's bridge can read.
    const inline = await create({ ...CONFIG, providerConfig: { kind: 'openai', apiKey: 'k' } });
    expect(inline.body.errors).toEqual([{ path: 'config.providerConfig.base_url', message: 'required' }]);
    const mixed = await create({ ...CONFIG, providerConfig: { kind: 'openai', baseUrl: 'http://x', base_url: 'http://x', api_key: 'k' } });
    expect(mixed.body.errors).toEqual([{ path: 'config.providerConfig.baseUrl', message: 'give base_url or baseUrl, not both' }]);
    expect(await jobs()).toBe(before);

    const ok = await create({ provider: 'studio', model: 'gpt-4o-mini' });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body.config).toEqual({ provider: 'studio', model: 'gpt-4o-mini', hasProviderConfig: false });
  });

  it('one in use by unfinished jobs cannot be renamed or deleted (409), nor can a providers-file one be changed', async () => {
    const { items } = (await api(svc.url, 'GET', '/api/providers?nameContains=studio')).body;
    const id = items[0].providerId as string;
    const renamed = await api(svc.url, 'PATCH', `/api/providers/${id}`, { name: 'other' });
    expect(renamed.status).toBe(409);
    expect(renamed.body.detail).toMatch(/^provider studio is used by 1 unfinished job\(s\)/);
    expect((await api(svc.url, 'DELETE', `/api/providers/${id}`)).status).toBe(409);
    const fromFile = (await api(svc.url, 'GET', '/api/providers?nameContains=gemini')).body.items[0];
    expect(fromFile.source).toBe('config');
    const locked = await api(svc.url, 'PATCH', `/api/providers/${fromFile.providerId}`, { isEnabled: false });
    expect(locked.status).toBe(409);
    expect(locked.body.detail).toMatch(/defined in the providers file/);

    await svc.db.execute(sql`update job_queue.caption_jobs set status = 'cancelled' where config->>'provider' = 'studio'`);
    const deleted = await api(svc.url, 'DELETE', `/api/providers/${id}`);
    expect(deleted.body).toEqual({ deleted: true, providerId: id });
    expect((await api(svc.url, 'GET', `/api/providers/${id}`)).status).toBe(404);
  });

  it('never shows the key in any answer or log line', () => {
    expect(logged.join('')).not.toContain(PLANTED);
    expect(logged.join('')).not.toContain('sk-second-key-000');
  });
});

describe('the providers file', () => {
  it('is imported at start-up in graphcap’s format, idempotently, its keys from the variables it names', async () => {
    const file = path.join(svc.workspace, 'config', 'provider.config.toml');
    await writeFile(
      file,
      [
        '[local-vllm]',
        'kind = "vllm"',
        'environment = "local"',
        'base_url = "http://127.0.0.1:8000/v1"',
        'env_var = "GRAPHCAP_TEST_KEY"',
        'models = ["qwen"]',
        'rate_limits = { requests_per_minute = 12, tokens_per_minute = 40000 }',
        '',
        '[broken]',
        'kind = "openai"',
        'base_url = "not a url"',
      ].join('\n'),
    );
    await svc.restart();
    const provider = async () => (await api(svc.url, 'GET', '/api/providers?nameContains=local-vllm')).body.items[0];
    const first = await provider();
    expect(first).toMatchObject({
      kind: 'vllm',
      environment: 'local',
      hasApiKey: true,
      models: [{ name: 'qwen', isEnabled: true }],
      rateLimits: { requestsPerMinute: 12, tokensPerMinute: 40000 },
      source: 'config',
    });
    expect(open((await storedKey('local-vllm')) as never, Buffer.from(KEY_HEX, 'hex'))).toBe('sk-from-env-4321');
    expect((await api(svc.url, 'GET', '/api/providers?nameContains=broken')).body.total).toBe(0);
    expect(logged.join('')).toMatch(/"provider":"broken","message":"base_url: must be an http\(s\) URL"/);
    // The providers the file no longer has (the example's) become editable through the API.
    expect((await api(svc.url, 'GET', '/api/providers?nameContains=gemini')).body.items[0].source).toBe('api');

    // Again with nothing changed: nothing written.
    await svc.restart();
    expect((await provider()).updatedAt).toBe(first.updatedAt);
    expect(logged.join('')).toMatch(/"added":0,"updated":0,"unchanged":1,"detached":0/);
    // A new key in the variable is a change.
    await svc.restart({ GRAPHCAP_TEST_KEY: 'sk-new-from-env-99' });
    expect(open((await storedKey('local-vllm')) as never, Buffer.from(KEY_HEX, 'hex'))).toBe('sk-new-from-env-99');
    expect(logged.join('')).not.toContain('sk-from-env-4321');
  });
});
