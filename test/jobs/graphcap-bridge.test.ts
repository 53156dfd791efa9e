/**
 * The service against a bridge that answers as graphcap's real Inference Bridge does (the stand-in's
 * default): jobs naming stored providers, a refused key, a long outage, a provider's rate limit, an
 * incompatible bridge, perspectives the bridge does not know, one-off captions, graphcap's path
 * forms and health answer; and a planted key found in no answer, log line, event or error.
 */
import { readFileSync } from 'node:fs';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { IMAGES } from '../helpers/fixtures.js';
import { itemStates, jobState, waitFor, waitForJobsToFinish } from '../helpers/jobs.js';
import { api, startTestService, type TestService } from '../helpers/service.js';
import { StandInBridge } from '../stand-ins/bridge.js';

const PLANTED = 'sk-PLANTED-graphcap-0123456789';
const BAD = 'sk-PLANTED-wrong-key-987654321';
const OWL = 'ural-owl-6676441_640.jpg';
let logs = '';
let bridge: StandInBridge;
let svc: TestService;

beforeAll(async () => {
  bridge = await StandInBridge.start({ latencyMs: [5, 20] });
  svc = await startTestService({
    logger: createLogger('debug', { write: (line: string) => void (logs += line) }),
    env: {
      // As a user might write it, with the bridge's API prefix.
      INFERENCE_BRIDGE_URL: `${bridge.url}/api/v1`,
      SECRETS_KEY: 'ef'.repeat(32),
      MAX_CONCURRENT_JOBS: '4',
      MAX_CONCURRENT_ITEMS: '2',
      POLL_INTERVAL_MS: '100',
      BRIDGE_CHECK_INTERVAL_MS: '200',
      RETRY_BASE_MS: '20',
      RETRY_MAX_MS: '100',
      BREAKER_FAILURES: '2',
      BREAKER_COOLDOWN_MS: '300',
      BREAKER_MAX_COOLDOWN_MS: '300',
      // 3 s: a breaker open longer pauses the provider's jobs.
      PROVIDER_OUTAGE_PAUSE_MINUTES: '0.05',
    },
  });
});
afterAll(async () => {
  await svc?.close();
  await bridge?.close();
});
beforeEach(() => bridge.set({ rejectedKeys: [], echoKeys: false, unavailableUntil: 0, throttleUntil: 0 }));

async function provider(name: string, extra: Record<string, unknown> = {}): Promise<string> {
  const created = await api(svc.url, 'POST', '/api/providers', {
    name,
    kind: 'openai',
    environment: 'local',
    baseUrl: 'http://127.0.0.1:9/v1',
    apiKey: PLANTED,
    models: [{ name: 'm1' }],
    ...extra,
  });
  expect(created.status, JSON.stringify(created.body)).toBe(200);
  return created.body.providerId as string;
}

async function datasetJob(providerName: string, perspectives = ['art_critic']): Promise<string> {
  const created = await api(svc.url, 'POST', '/api/perspectives/batch/create', {
    type: 'DATASET_PERSPECTIVE',
    datasetName: 'os_img',
    perspectives,
    config: { provider: providerName, model: 'm1' },
  });
  expect(created.status, JSON.stringify(created.body)).toBe(200);
  return created.body.jobId as string;
}

const callsOf = (jobId: string) => bridge.calls.filter((c) => c.jobId === jobId);

describe('against graphcap’s bridge contract', () => {
  it('runs a dataset job that names a stored provider, with no key in the job: every call carries the stored key', async () => {
    await provider('cloud');
    const jobId = await datasetJob('cloud');
    const [state] = await waitForJobsToFinish(svc.db, [jobId]);
    expect(state!.status).toBe('completed');
    expect(state!.processedImages).toBe(IMAGES.length);
    const calls = callsOf(jobId);
    expect(calls.length).toBe(IMAGES.length);
    for (const call of calls) {
      expect(call.apiKey).toBe(PLANTED);
      expect(call.body).toMatchObject({ provider: 'cloud', model: 'm1', provider_config: { name: 'cloud', kind: 'openai', environment: 'local', base_url: 'http://127.0.0.1:9/v1', models: ['m1'] } });
    }
    const status = await api(svc.url, 'GET', `/api/perspectives/batch/status/${jobId}`);
    expect(status.body.job.config).toEqual({ provider: 'cloud', model: 'm1', hasProviderConfig: false });
  });

  it('a refused key fails the items called with it after one call each, marks the provider and pauses its jobs; a new key and a resume finish the job', async () => {
    const id = await provider('keyed', { apiKey: BAD });
    bridge.set({ rejectedKeys: [BAD], echoKeys: true });
    const jobId = await datasetJob('keyed');
    await waitFor('the job to pause', async () => (await jobState(svc.db, jobId)).status === 'paused');
    const job = (await api(svc.url, 'GET', `/api/perspectives/batch/status/${jobId}`)).body.job;
    expect(job.error).toMatch(/^provider keyed refused its credentials \(the provider refused its credentials: Inference Bridge answered 500: .*Error code: 401/);
    expect(job.error).toMatch(/change the provider, then resume the job$/);

    const called = callsOf(jobId);
    const items = await itemStates(svc.db, [jobId]);
    const failed = items.filter((i) => i.status === 'failed');
    // Only the calls in flight when the first refusal came back (the job's MAX_CONCURRENT_ITEMS), each its item's only attempt.
    expect(failed.length).toBe(called.length);
    expect(called.length).toBeGreaterThan(0);
    expect(called.length).toBeLessThanOrEqual(2);
    expect(failed.every((i) => i.attempts === 1 && /refused its credentials/.test(i.error ?? '') && i.error!.includes('[redacted]'))).toBe(true);
    expect(items.filter((i) => i.status === 'pending').length).toBe(IMAGES.length - called.length);

    const marked = (await api(svc.url, 'GET', `/api/providers/${id}`)).body;
    expect(marked.misconfigured).toMatchObject({ reason: expect.stringMatching(/Error code: 401/) });
    const stats = (await api(svc.url, 'GET', '/api/perspectives/batch/statistics')).body;
    expect(stats.misconfiguredProviders.map((p: { provider: string }) => p.provider)).toContain('keyed');
    // Resumed while still misconfigured: paused again at once.
    await api(svc.url, 'POST', `/api/perspectives/batch/resume/${jobId}`);
    await waitFor('the job to pause again', async () => (await jobState(svc.db, jobId)).status === 'paused');
    expect(callsOf(jobId).length).toBe(called.length);

    const fixed = await api(svc.url, 'PATCH', `/api/providers/${id}`, { apiKey: PLANTED });
    expect(fixed.body.misconfigured).toBeNull();
    await api(svc.url, 'POST', `/api/perspectives/batch/resume/${jobId}`);
    const [ended] = await waitForJobsToFinish(svc.db, [jobId]);
    expect(ended!.status).toBe('partial');
    expect((await api(svc.url, 'POST', `/api/perspectives/batch/retry-failed/${jobId}`)).status).toBe(200);
    expect((await waitForJobsToFinish(svc.db, [jobId]))[0]!.status).toBe('completed');
    bridge.set({ rejectedKeys: [], echoKeys: false });
  });

  it('a provider down longer than PROVIDER_OUTAGE_PAUSE_MINUTES pauses its jobs with the reason, spending only the attempts that opened the breaker', async () => {
    await provider('flaky');
    bridge.set({ unavailableUntil: Date.now() + 120_000 });
    const jobId = await datasetJob('flaky');
    await waitFor('the job to pause', async () => (await jobState(svc.db, jobId)).status === 'paused', 20_000);
    const job = (await api(svc.url, 'GET', `/api/perspectives/batch/status/${jobId}`)).body.job;
    expect(job.error).toMatch(/^provider flaky \(model m1\) has not answered for 0\.05 minutes \(circuit breaker open since .* UTC\): resume when it is back$/);
    const { rows } = await svc.db.execute<{ reason: string }>(sql`
      select data->>'reason' as reason from job_queue.outbox where job_id = ${jobId} and type = 'JOB_STATUS_CHANGED' and data->>'newStatus' = 'paused'`);
    expect(rows.map((r) => r.reason)).toEqual([job.error]);
    // A probe may still be out when the job pauses: its item comes back pending when it answers.
    const items = await waitFor('every item pending', async () => {
      const states = await itemStates(svc.db, [jobId]);
      return states.every((i) => i.status === 'pending') && states;
    });
    // Failures in a row open the breaker (2) plus what was in flight; the probes give theirs back.
    expect(items.reduce((n, i) => n + i.attempts, 0)).toBeLessThanOrEqual(2 * 2 + 2);

    bridge.set({ unavailableUntil: 0 });
    await api(svc.url, 'POST', `/api/perspectives/batch/resume/${jobId}`);
    expect((await waitForJobsToFinish(svc.db, [jobId], 30_000))[0]!.status).toBe('completed');
  });

  it('a provider’s stored rate limit holds: calls beyond it wait, their attempts given back', async () => {
    await provider('paced', { rateLimits: { requestsPerMinute: 2 } });
    const jobId = await datasetJob('paced');
    await waitFor('two calls', () => callsOf(jobId).length >= 2);
    // Long enough for several rounds to try again.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(callsOf(jobId).length).toBe(2);
    const items = await itemStates(svc.db, [jobId]);
    expect(items.filter((i) => i.status === 'completed').length).toBe(2);
    expect(items.filter((i) => i.status === 'pending').every((i) => i.attempts === 0)).toBe(true);
    await api(svc.url, 'POST', `/api/perspectives/batch/cancel/${jobId}`);
  });

  it('makes a one-off caption through a stored provider, stores it and returns it, under the provider’s rules', async () => {
    const made = await api(svc.url, 'POST', '/api/captions/generate', {
      imagePath: `/workspace/datasets/os_img/${OWL}`,
      perspective: 'graph_caption',
      provider: 'cloud',
    });
    expect(made.status, JSON.stringify(made.body)).toBe(200);
    expect(made.body).toMatchObject({ imagePath: `datasets/os_img/${OWL}`, perspective: 'graph_caption', model: 'm1', provider: 'cloud', jobId: null });
    expect(made.body.result).toEqual(bridge.captionFor(OWL, 'graph_caption'));
    const last = bridge.calls.at(-1)!;
    expect(last).toMatchObject({ apiKey: PLANTED, jobId: undefined });
    expect((await api(svc.url, 'GET', `/api/captions/${made.body.captionId}`)).body.result).toEqual(made.body.result);

    const refused = async (body: Record<string, unknown>) => api(svc.url, 'POST', '/api/captions/generate', { imagePath: `datasets/os_img/${OWL}`, perspective: 'graph_caption', ...body });
    const unknown = await refused({ provider: 'nobody' });
    expect(unknown.status).toBe(400);
    expect(unknown.body.errors[0].path).toBe('provider');
    const limited = await refused({ provider: 'paced' });
    expect(limited.status).toBe(429);
    expect(limited.body.detail).toMatch(/^provider paced is at its rate limit: try again in \d+ s$/);
  });

  it('takes image paths as graphcap writes them, and refuses paths outside the workspace', async () => {
    const create = (imagePaths: string[]) =>
      api(svc.url, 'POST', '/api/perspectives/batch/create', { type: 'MULTI_PERSPECTIVE', perspectives: ['art_critic'], imagePaths, config: { provider: 'cloud', model: 'm1' } });
    const ok = await create([`/workspace/${IMAGES[0]}`, `/${IMAGES[1]}`, `${svc.workspace}/${IMAGES[2]}`]);
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect((await itemStates(svc.db, [ok.body.jobId])).map((i) => i.imagePath).sort()).toEqual(IMAGES.slice(0, 3));
    const outside = await create(['/etc/hostname', '/workspace/../etc/hostname']);
    expect(outside.status).toBe(400);
    expect(outside.body.errors.map((e: { path: string }) => e.path)).toEqual(['imagePaths.0', 'imagePaths.1']);
    await waitForJobsToFinish(svc.db, [ok.body.jobId]);
  });

  it('answers graphcap studio’s health probe at /api/health', async () => {
    const health = await api(svc.url, 'GET', '/api/health');
    expect(health.status).toBe(200);
    const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(health.body).toMatchObject({
      status: 'ok',
      service: 'graphcap-data-service',
      version,
      database: 'ok',
      bridge: { state: 'ok', unknownPerspectives: [] },
      workspace: { path: svc.workspace, state: 'ok' },
      warnings: [],
    });
    expect(Date.parse(health.body.timestamp)).toBeGreaterThan(Date.now() - 60_000);
  });

  it('never holds a key in an answer, a log line, an event or an error', async () => {
    const { rows: jobs } = await svc.db.execute<{ id: string }>(sql`select job_id as id from job_queue.caption_jobs`);
    const answers = [
      await api(svc.url, 'GET', '/api/providers'),
      await api(svc.url, 'GET', '/api/perspectives/batch/list?limit=100'),
      await api(svc.url, 'GET', '/api/perspectives/batch/statistics'),
      await api(svc.url, 'GET', '/api/captions?limit=100'),
      ...(await Promise.all(jobs.map((j) => api(svc.url, 'GET', `/api/perspectives/batch/status/${j.id}?limit=100`)))),
      ...(await Promise.all(jobs.map((j) => api(svc.url, 'GET', `/api/perspectives/batch/items/${j.id}/failed`)))),
    ];
    expect(answers.every((a) => a.status === 200)).toBe(true);
    const { rows: texts } = await svc.db.execute<{ text: string }>(sql`
      select coalesce(string_agg(data::text, ' '), '') || ' ' ||
             coalesce((select string_agg(coalesce(error, ''), ' ') from job_queue.job_items), '') || ' ' ||
             coalesce((select string_agg(coalesce(error, ''), ' ') from job_queue.caption_jobs), '') || ' ' ||
             coalesce((select string_agg(coalesce(misconfigured_reason, ''), ' ') from core_schema.providers), '') as text
      from job_queue.outbox`);
    for (const key of [PLANTED, BAD]) {
      expect(answers.map((a) => JSON.stringify(a.body)).join(' ')).not.toContain(key);
      expect(logs).not.toContain(key);
      expect(texts[0]!.text).not.toContain(key);
    }
    // The searches can find something: the refused key's calls carried it, and the errors were scrubbed.
    expect(bridge.calls.some((c) => c.apiKey === BAD)).toBe(true);
    expect(texts[0]!.text).toContain('[redacted]');
  });
});

describe('a bridge that is not what it should be', () => {
  let other: StandInBridge;
  let svc2: TestService;

  beforeAll(async () => {
    // An address that answers FastAPI's 404 for every route, and, once it is fixed, a bridge that
    // started before time_tags was added to the library.
    const known = svc.workspace ? (await api(svc.url, 'GET', '/api/perspectives?limit=100')).body.items.map((p: { name: string }) => p.name) : [];
    other = await StandInBridge.start({ incompatible: true, perspectives: known.filter((n: string) => n !== 'time_tags') });
    svc2 = await startTestService({
      env: { INFERENCE_BRIDGE_URL: other.url, NODE_ENV: 'development', POLL_INTERVAL_MS: '100', BRIDGE_CHECK_INTERVAL_MS: '200' },
    });
  });
  afterAll(async () => {
    await svc2?.close();
    await other?.close();
  });

  it('is reported incompatible, and no item is dispatched into it until it answers again', async () => {
    const health = (await api(svc2.url, 'GET', '/health')).body;
    expect(health.bridge).toMatchObject({ state: 'incompatible', detail: expect.stringMatching(/^GET \/api\/v1\/health answered 404/) });
    expect(health.warnings).toEqual([expect.stringMatching(/^the Inference Bridge is incompatible/)]);
    const metrics = await (await fetch(`${svc2.url}/metrics`)).text();
    expect(metrics).toMatch(/graphcap_bridge_state\{state="incompatible"\} 1/);

    const created = await api(svc2.url, 'POST', '/api/perspectives/batch/create', {
      type: 'MULTI_PERSPECTIVE',
      perspectives: ['art_critic'],
      imagePaths: IMAGES.slice(0, 2),
      config: { provider: 'gemini', model: 'gemini-2.0-flash-exp' },
    });
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(other.calls).toHaveLength(0);
    expect((await itemStates(svc2.db, [created.body.jobId])).every((i) => i.status === 'pending' && i.attempts === 0)).toBe(true);

    other.set({ incompatible: false });
    expect((await waitForJobsToFinish(svc2.db, [created.body.jobId]))[0]!.status).toBe('completed');
  });

  it('reports the enabled perspectives it does not know, and their items fail saying to restart it', async () => {
    const health = await waitFor('the check to list them', async () => {
      const body = (await api(svc2.url, 'GET', '/api/health')).body;
      return body.bridge.state === 'ok' && body.bridge.unknownPerspectives.length > 0 && body;
    });
    expect(health.bridge.unknownPerspectives).toEqual(['time_tags']);
    expect(health.warnings).toEqual(['the Inference Bridge does not know time_tags (restart it to load new perspectives)']);
    expect((await api(svc2.url, 'GET', '/api/perspectives/batch/statistics')).body.bridge).toEqual({ state: 'ok', unknownPerspectives: ['time_tags'] });
    const created = await api(svc2.url, 'POST', '/api/perspectives/batch/create', {
      type: 'MULTI_PERSPECTIVE',
      perspectives: ['time_tags'],
      imagePaths: [IMAGES[0]],
      config: { provider: 'gemini', model: 'gemini-2.0-flash-exp' },
    });
    expect((await waitForJobsToFinish(svc2.db, [created.body.jobId]))[0]!.status).toBe('failed');
    const [item] = await itemStates(svc2.db, [created.body.jobId]);
    expect(item!.error).toMatch(/^Inference Bridge answered 404: Unknown perspective: time_tags\. .*restart it after adding one\)$/);
  });

  it('lets graphcap studio’s development origin call the API from a browser (development only)', async () => {
    const preflight = await fetch(`${svc2.url}/api/providers`, {
      method: 'OPTIONS',
      headers: { origin: 'http://localhost:32200', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
    });
    expect(preflight.headers.get('access-control-allow-origin')).toBe('http://localhost:32200');
    const other = await fetch(`${svc2.url}/api/providers`, { headers: { origin: 'http://evil.example' } });
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
    // The test services run as NODE_ENV=test, like production: no origin allowed unless configured.
    const closed = await fetch(`${svc.url}/api/providers`, { headers: { origin: 'http://localhost:32200' } });
    expect(closed.headers.get('access-control-allow-origin')).toBeNull();
  });
});
