/**
 * The tRPC example (clients/trpc-example) run against the live service and the stand-in bridge:
 * the UI's typed client really creates, follows (subscription) and reads a job, with typed errors.
 * A token is configured, so the example's token handling (batch link and SSE) is exercised too.
 */
import { TRPCClientError } from '@trpc/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { captionAndFollow, createDataServiceClient, findJob } from '../../clients/trpc-example/example.js';
import type { AppRouter, JobEvent } from '../../src/client.js';
import { CONFIG, DATASET } from '../helpers/fixtures.js';
import { startTestService, type TestService } from '../helpers/service.js';
import { StandInBridge } from '../stand-ins/bridge.js';

const TOKEN = 'trpc-example-test-token-0123456789';
let bridge: StandInBridge;
let svc: TestService;

beforeAll(async () => {
  bridge = await StandInBridge.start({ latencyMs: 5 });
  svc = await startTestService({
    env: { INFERENCE_BRIDGE_URL: bridge.url, POLL_INTERVAL_MS: '50', NOTIFIER_POLL_MS: '50', API_TOKEN: TOKEN },
  });
});
afterAll(async () => {
  await svc?.close();
  await bridge?.close();
});

describe('the typed tRPC client example', () => {
  it('creates a job, follows its live progress to completion and reads its captions', async () => {
    const client = createDataServiceClient(svc.url, TOKEN);
    const events: JobEvent[] = [];
    const { job, items } = await captionAndFollow(
      client,
      { type: 'DATASET_PERSPECTIVE', datasetName: DATASET, perspectives: ['art_critic'], config: CONFIG },
      (event) => events.push(event),
    );
    expect(job).toMatchObject({ status: 'completed', totalImages: 7, processedImages: 7, progress: 100 });
    expect(items).toHaveLength(7);
    for (const item of items) {
      expect(item.status).toBe('completed');
      expect(item.result).toBeTypeOf('object');
    }
    expect(events[0]?.type).toBe('JOB_CREATED');
    expect(events.filter((e) => e.type === 'JOB_PROGRESS').at(-1)?.data).toMatchObject({ processedImages: 7, progress: 100 });
    expect(events.at(-1)).toMatchObject({ type: 'JOB_STATUS_CHANGED', jobId: job.jobId, data: { newStatus: 'completed' } });
  });

  it('maps errors to typed TRPCClientErrors', async () => {
    const client = createDataServiceClient(svc.url, TOKEN);
    expect(await findJob(client, '00000000-0000-4000-8000-000000000000')).toBeUndefined();

    const error = await client.batch.create
      .mutate({ type: 'MULTI_PERSPECTIVE', perspectives: [], imagePaths: ['datasets/os_img/x.jpg'], config: CONFIG })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TRPCClientError);
    const data = (error as TRPCClientError<AppRouter>).data;
    expect(data).toMatchObject({ code: 'BAD_REQUEST', httpStatus: 400 });
    expect(data?.errors.map((e) => e.path)).toEqual(['perspectives']);
  });

  it('is refused without the token', async () => {
    const anonymous = createDataServiceClient(svc.url);
    const error = await anonymous.batch.statistics.query({}).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TRPCClientError);
    // Refused before tRPC (by the /api token check): the client sees the raw 401 response.
    expect((error as TRPCClientError<AppRouter>).meta?.response).toMatchObject({ status: 401 });
  });
});
