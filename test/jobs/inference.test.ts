import { realpath } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { ClaimedItem } from '../../src/db/dispatch.js';
import { randomBytes } from 'node:crypto';
import { classifyStatus, parseRetryAfter, PermanentError, ThrottledError, TransientError } from '../../src/jobs/errors.js';
import { createInferenceBridge } from '../../src/jobs/inference.js';
import { seal } from '../../src/secrets.js';
import { waitFor } from '../helpers/jobs.js';
import { FIXTURE_WORKSPACE } from '../helpers/service.js';
import { StandInBridge } from '../stand-ins/bridge.js';

let bridge: StandInBridge;
beforeAll(async () => {
  bridge = await StandInBridge.start();
});
afterAll(async () => bridge?.close());
beforeEach(async () => {
  await bridge.up();
  bridge.set({ latencyMs: 0, errorRate: 0, hangRate: 0, permanentFailures: {} });
  bridge.reset();
});

const BUDDHA = 'big-buddha-5587706_1280.jpg';

function item(overrides: Partial<ClaimedItem> = {}): ClaimedItem {
  return {
    itemId: '00000000-0000-4000-8000-000000000001',
    jobId: '00000000-0000-4000-8000-0000000000aa',
    imagePath: `datasets/os_img/${BUDDHA}`,
    perspective: 'art_critic',
    attempts: 1,
    config: { provider: 'gemini', model: 'gemini-2.0-flash-exp' },
    requestId: null,
    ...overrides,
  };
}

const SECRETS_KEY = randomBytes(32);

function client(timeoutMs = 5000, keys: { secretsKey: Buffer | undefined } = { secretsKey: SECRETS_KEY }) {
  return createInferenceBridge({ url: bridge.url, timeoutMs, workspacePath: FIXTURE_WORKSPACE, ...keys });
}

const call = (i: ClaimedItem, signal = new AbortController().signal) =>
  client().caption(i, { signal, requestId: 'req-test-1' });

describe('Inference Bridge client', () => {
  it("sends the job's config as caption-from-path, with the request id, and returns the caption", async () => {
    const config = {
      provider: 'openai',
      model: 'gpt-4o',
      providerConfig: seal({ apiKey: 'sk-test' }, SECRETS_KEY),
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
    expect(caption.rawText).toBe(JSON.stringify(caption.result));

    const [received] = bridge.calls;
    expect(received).toMatchObject({ requestId: 'req-test-1', jobId: item().jobId, itemId: item().itemId, outcome: 'ok' });
    expect(received!.body).toEqual({
      perspective: 'art_critic',
      image_path: path.join(await realpath(FIXTURE_WORKSPACE), 'datasets/os_img', BUDDHA),
      provider: 'openai',
      provider_config: { apiKey: 'sk-test' },
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

  it('turns a 4xx into a PermanentError that keeps the bridge message', async () => {
    bridge.set({ permanentFailures: { [BUDDHA]: 'cannot decode image (truncated file)' } });
    const error = await call(item()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PermanentError);
    expect((error as Error).message).toBe('Inference Bridge answered 400: cannot decode image (truncated file)');
  });

  it('turns a 5xx into a TransientError', async () => {
    bridge.set({ errorRate: 1 });
    const error = await call(item()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TransientError);
    expect((error as Error).message).toMatch(/^Inference Bridge answered 503: the provider is overloaded/);
  });

  it('gives up after the timeout, as a TransientError, and closes the call', async () => {
    bridge.set({ hangRate: 1 });
    const error = await client(200)
      .caption(item(), { signal: new AbortController().signal, requestId: 'r' })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TransientError);
    expect((error as Error).message).toBe('Inference Bridge did not answer within 200 ms');
    await waitFor('the stand-in to see the call end', () => bridge.calls[0]?.outcome !== 'in-flight');
    expect(bridge.calls[0]).toMatchObject({ hung: true, outcome: 'aborted' });
  });

  it('treats a refused connection as a TransientError', async () => {
    await bridge.down();
    const error = await call(item()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TransientError);
    expect((error as Error).message).toBe('Inference Bridge unreachable: ECONNREFUSED');
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
    const config = { provider: 'openai', model: 'gpt-4o', providerConfig: seal({ apiKey: 'sk-test' }, SECRETS_KEY) };
    for (const secretsKey of [undefined, randomBytes(32)]) {
      const error = await client(5000, { secretsKey })
        .caption(item({ config }), { signal: new AbortController().signal, requestId: 'r' })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TransientError);
      expect((error as Error).message).toMatch(/SECRETS_KEY/);
    }
    expect(bridge.calls).toHaveLength(0);
  });

  it('refuses an image outside the workspace without calling the bridge', async () => {
    const error = await call(item({ imagePath: 'datasets/os_img/no-such-file.jpg' })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PermanentError);
    expect((error as Error).message).toMatch(/^image datasets\/os_img\/no-such-file.jpg cannot be read in the workspace/);
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

  it('classifies statuses: 4xx permanent, except 408, 425 and 429; 5xx transient; 429 and 503 with Retry-After throttled', () => {
    const kind = (status: number, retryAfter?: string) => {
      const error = classifyStatus(status, 'x', retryAfter);
      return error instanceof ThrottledError ? `throttled ${error.retryAfterMs}` : error instanceof PermanentError ? 'permanent' : 'transient';
    };
    expect([400, 401, 403, 404, 413, 422].map((s) => kind(s))).toEqual(Array(6).fill('permanent'));
    expect([408, 425, 500, 502, 503, 504].map((s) => kind(s))).toEqual(Array(6).fill('transient'));
    expect([kind(429), kind(429, '3'), kind(503, '2'), kind(503, 'soon')]).toEqual(['throttled null', 'throttled 3000', 'throttled 2000', 'transient']);
    expect(kind(429, new Date(Date.now() + 60_000).toUTCString())).toMatch(/^throttled (5[89]|60)\d{3}$/);
    expect(parseRetryAfter('86400')).toBe(600_000);
    expect(parseRetryAfter(new Date(Date.now() - 5000).toUTCString())).toBe(0);
  });
});
