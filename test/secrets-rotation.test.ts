/**
 * Rotating SECRETS_KEY end to end: values sealed under the old key name it, still open while it is
 * given in SECRETS_KEY_PREVIOUS, `resealSecrets` (npm run secrets:reseal) moves them all to the new
 * key, and a replica that has none of the keys gives the items back without spending attempts and
 * says so at start-up.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listSealedSecrets } from '../src/db/sealed.js';
import { createLogger } from '../src/logger.js';
import { resealSecrets } from '../src/reseal.js';
import { keyId } from '../src/secrets.js';
import { inlineProvider } from './helpers/fixtures.js';
import { itemStates, waitFor, waitForJobsToFinish } from './helpers/jobs.js';
import { api, startTestService, type TestService } from './helpers/service.js';
import { StandInBridge } from './stand-ins/bridge.js';

const OLD = 'a1'.repeat(32);
const NEW = 'b2'.repeat(32);
const STRANGER = 'c3'.repeat(32);
const STORED_KEY = 'sk-rotation-stored-0123456789';
const INLINE_KEY = 'sk-rotation-inline-9876543210';
let logs = '';
let bridge: StandInBridge;
let svc: TestService;

beforeAll(async () => {
  bridge = await StandInBridge.start();
  svc = await startTestService({
    logger: createLogger('info', { write: (line: string) => void (logs += line) }),
    env: { INFERENCE_BRIDGE_URL: bridge.url, SECRETS_KEY: OLD, POLL_INTERVAL_MS: '50', DISPATCHER_ENABLED: 'false' },
  });
});
afterAll(async () => {
  await svc?.close();
  await bridge?.close();
});

const job = async (config: Record<string, unknown>) => {
  const created = await api(svc.url, 'POST', '/api/perspectives/batch/create', {
    type: 'MULTI_PERSPECTIVE',
    imagePaths: ['datasets/os_img/ural-owl-6676441_640.jpg'],
    perspectives: ['art_critic'],
    config,
  });
  expect(created.status, JSON.stringify(created.body)).toBe(200);
  return created.body.jobId as string;
};
const keysSent = (jobId: string) => bridge.calls.filter((c) => c.jobId === jobId).map((c) => c.apiKey);
const buf = (hex: string) => Buffer.from(hex, 'hex');

describe('rotating SECRETS_KEY', () => {
  it('old values open with SECRETS_KEY_PREVIOUS, reseal moves them to the new key, and a replica without the key spends no attempt', { timeout: 90_000 }, async () => {
    const created = await api(svc.url, 'POST', '/api/providers', {
      name: 'rotating',
      kind: 'openai',
      environment: 'local',
      baseUrl: 'http://127.0.0.1:9/v1',
      apiKey: STORED_KEY,
      models: [{ name: 'm1' }],
    });
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    const stored = await job({ provider: 'rotating', model: 'm1' });
    const inline = await job({ provider: 'mine', model: 'm1', providerConfig: inlineProvider(INLINE_KEY) });
    const sealed = await listSealedSecrets(svc.db);
    expect(sealed.map((s) => [s.kind, s.value.kid])).toEqual(
      expect.arrayContaining([
        ['provider', keyId(buf(OLD))],
        ['job', keyId(buf(OLD))],
      ]),
    );

    // The new key seals, the old one still opens: both jobs run with their real keys.
    await svc.restart({ SECRETS_KEY: NEW, SECRETS_KEY_PREVIOUS: OLD, DISPATCHER_ENABLED: 'true' });
    const ran = await waitForJobsToFinish(svc.db, [stored, inline], 30_000);
    expect(ran.map((j) => j.status)).toEqual(['completed', 'completed']);
    expect(keysSent(stored)).toEqual([STORED_KEY]);
    expect(keysSent(inline)).toEqual([INLINE_KEY]);

    // Re-sealed under the new key, all of them; a second run has nothing left to do.
    const report = await resealSecrets(svc.db, buf(NEW), [buf(OLD)]);
    expect(report).toEqual({ resealed: sealed.length, current: 0, unopenable: [] });
    expect((await listSealedSecrets(svc.db)).every((s) => s.value.kid === keyId(buf(NEW)))).toBe(true);
    expect(await resealSecrets(svc.db, buf(NEW), [])).toEqual({ resealed: 0, current: sealed.length, unopenable: [] });

    // The old key can go.
    await svc.restart({ SECRETS_KEY: NEW, SECRETS_KEY_PREVIOUS: '', DISPATCHER_ENABLED: 'true' });
    const after = await job({ provider: 'rotating', model: 'm1' });
    expect((await waitForJobsToFinish(svc.db, [after], 30_000))[0]!.status).toBe('completed');
    expect(keysSent(after)).toEqual([STORED_KEY]);

    // A replica with none of the keys: says so at start-up, and its items wait without spending attempts.
    logs = '';
    await svc.restart({ SECRETS_KEY: STRANGER, SECRETS_KEY_PREVIOUS: '', DISPATCHER_ENABLED: 'true' });
    expect(logs).toContain('secrets sealed with a key this replica does not have');
    const waiting = await job({ provider: 'rotating', model: 'm1' });
    const [item] = await waitFor('the item to be given back', async () => {
      const items = await itemStates(svc.db, [waiting]);
      return items[0]?.error?.includes("cannot be opened with this replica's SECRETS_KEY") && items;
    });
    expect(item).toMatchObject({ status: 'pending', attempts: 0 });
    expect(keysSent(waiting)).toEqual([]);
  });
});
