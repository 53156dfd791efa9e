import { link, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { createTRPCClient, httpSubscriptionLink, splitLink, httpLink } from '@trpc/client';
import { sql } from 'drizzle-orm';
import { EventSource } from 'eventsource';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import type { AppRouter } from '../../src/routers/index.js';
import { startService, type Service } from '../../src/service.js';
import { CONFIG, DATASET } from '../helpers/fixtures.js';
import { waitFor } from '../helpers/jobs.js';
import { api, startTestService, type TestService } from '../helpers/service.js';
import { StandInBridge } from '../stand-ins/bridge.js';
import { StandInBroker, streamOf, type ReceivedEvent } from '../stand-ins/broker.js';

const FAST = {
  POLL_INTERVAL_MS: '50',
  NOTIFIER_POLL_MS: '50',
  RETRY_BASE_MS: '20',
  RETRY_MAX_MS: '200',
  LEASE_SECONDS: '5',
};

let bridge: StandInBridge;
const cleanups: (() => Promise<unknown>)[] = [];
beforeAll(async () => {
  bridge = await StandInBridge.start();
});
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});
afterAll(async () => bridge?.close());

async function service(env: Record<string, string>, workspace?: string): Promise<TestService> {
  const svc = await startTestService({ env: { ...FAST, INFERENCE_BRIDGE_URL: bridge.url, ...env }, workspace });
  cleanups.push(() => svc.close());
  return svc;
}

/** A second replica on the same database and workspace. */
async function replica(svc: TestService, env: Record<string, string>): Promise<Service> {
  const config = loadConfig({
    ...FAST,
    PORT: '0',
    HOST: '127.0.0.1',
    DATABASE_URL: svc.database.url,
    WORKSPACE_PATH: svc.workspace,
    WORKSPACE_SYNC_ON_START: 'false',
    INFERENCE_BRIDGE_URL: bridge.url,
    ...env,
  });
  const other = await startService(config, createLogger('silent'));
  cleanups.unshift(() => other.close());
  return other;
}

async function createDatasetJob(url: string, perspectives = ['art_critic'], headers: Record<string, string> = {}) {
  const response = await api(
    url,
    'POST',
    '/api/perspectives/batch/create',
    { type: 'DATASET_PERSPECTIVE', datasetName: DATASET, perspectives, config: CONFIG },
    headers,
  );
  expect(response.status).toBe(200);
  return response.body.jobId as string;
}

/** The job's own events (JOB_*; the captions it made are data events with its id too). */
function ofJob(events: ReceivedEvent[], jobId: string) {
  return events.filter((e) => e.jobId === jobId && e.type.startsWith('JOB_'));
}

/** Each stream's events arrive in their order: the first arrival of each event, by sequence. */
function expectInOrderPerStream(events: ReceivedEvent[]) {
  const byStream = new Map<string, number[]>();
  const seen = new Set<string>();
  for (const e of events) {
    if (seen.has(e.id)) continue;
    seen.add(e.id);
    byStream.set(streamOf(e), [...(byStream.get(streamOf(e)) ?? []), e.seq]);
  }
  for (const seqs of byStream.values()) expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
}

/** Every job event of the job's in the outbox reached the broker (a coalesced event may also have gone out in an earlier state). */
async function expectAllReceived(svc: TestService, broker: StandInBroker, jobId: string) {
  const { rows } = await svc.db.execute<{ id: string }>(
    sql`select event_id as id from job_queue.outbox where job_id = ${jobId} and starts_with(stream, 'job:')`,
  );
  const received = new Set(ofJob(broker.received, jobId).map((e) => e.id));
  expect(rows.length).toBeGreaterThan(0);
  expect(rows.filter((r) => !received.has(r.id))).toEqual([]);
}

/** The job's own events in the outbox (not the data events of its captions). */
async function outboxCount(svc: TestService, jobId: string, where = 'true') {
  const { rows } = await svc.db.execute<{ n: number }>(
    sql.raw(`select count(*)::int as n from job_queue.outbox where job_id = '${jobId}' and starts_with(stream, 'job:') and ${where}`),
  );
  return rows[0]!.n;
}

describe('events to the message broker', () => {
  it('a job run produces JOB_CREATED, status changes and progress, in order, unique, with the request id', async () => {
    const broker = await StandInBroker.start();
    cleanups.push(() => broker.close());
    const svc = await service({ MESSAGE_BROKER_URL: broker.url });
    const jobId = await createDatasetJob(svc.url, ['art_critic'], { 'x-request-id': 'events-req-1' });

    const completed = await waitFor('the completion event', () =>
      ofJob(broker.received, jobId).find((e) => e.type === 'JOB_STATUS_CHANGED' && e.data.newStatus === 'completed'),
    );
    const events = ofJob(broker.unique(), jobId);
    expect(new Set(events.map((e) => e.id)).size).toBe(events.length);
    expectInOrderPerStream(broker.received);
    expect(events[0]).toMatchObject({ type: 'JOB_CREATED', data: { status: 'pending', totalImages: 7, type: 'DATASET_PERSPECTIVE' } });
    const statuses = events.filter((e) => e.type === 'JOB_STATUS_CHANGED').map((e) => [e.data.oldStatus, e.data.newStatus]);
    expect(statuses).toEqual([
      ['pending', 'running'],
      ['running', 'completed'],
    ]);
    const progress = events.filter((e) => e.type === 'JOB_PROGRESS');
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.at(-1)!.data).toMatchObject({ processedImages: 7, failedImages: 0, progress: 100 });
    expect(events.indexOf(progress.at(-1)!)).toBeLessThan(events.indexOf(completed));
    for (const e of events) {
      expect(e.requestId).toBe('events-req-1');
      expect(e.headerRequestId).toBe('events-req-1');
      expect(Number.isNaN(Date.parse(e.occurredAt))).toBe(false);
    }
  });

  it('a broker that refuses, then fails, then recovers gets every event, across a restart', async () => {
    const broker = await StandInBroker.start();
    cleanups.push(() => broker.close());
    await broker.down();
    const svc = await service({ MESSAGE_BROKER_URL: broker.url });
    const jobId = await createDatasetJob(svc.url, ['art_critic', 'storytelling']);
    await waitFor('the job to finish', async () => (await api(svc.url, 'GET', `/api/perspectives/batch/status/${jobId}`)).body.job.status === 'completed');
    await waitFor('a failed delivery to be recorded', async () => (await outboxCount(svc, jobId, 'last_error is not null')) > 0);

    await svc.restart();
    broker.mode = 'error';
    await broker.up();
    await waitFor('the broker to refuse a delivery', () => broker.refused > 0);
    expect(broker.received).toHaveLength(0);
    const metric = async (name: string) => {
      const text = await (await fetch(`${svc.url}/metrics`)).text();
      return Number(text.split('\n').find((l) => l.startsWith(name))?.split(' ').at(-1) ?? 0);
    };
    expect(await metric('graphcap_event_deliveries_total{outcome="failed"}')).toBeGreaterThan(0);
    expect(await metric('graphcap_outbox_undelivered_events')).toBeGreaterThan(0);
    broker.mode = 'up';

    // Every event: the job's, and the data events of its captions and of the start-up's workspace sync.
    await waitFor('every event to be delivered', async () => {
      const { rows } = await svc.db.execute<{ n: number }>(sql`select count(*)::int as n from job_queue.outbox where delivered_at is null`);
      return rows[0]!.n === 0;
    });
    const received = ofJob(broker.unique(), jobId);
    await expectAllReceived(svc, broker, jobId);
    expectInOrderPerStream(broker.received);
    expect(received[0]!.type).toBe('JOB_CREATED');
    expect(received.at(-1)).toMatchObject({ type: 'JOB_STATUS_CHANGED', data: { newStatus: 'completed' } });
    expect(await metric('graphcap_event_deliveries_total{outcome="delivered"}')).toBeGreaterThan(0);
    expect(await metric('graphcap_outbox_undelivered_events')).toBe(0);
  });

  it('an event the broker refuses for good is moved aside after BROKER_MAX_REFUSALS; the job’s later events go out', async () => {
    const broker = await StandInBroker.start();
    cleanups.push(() => broker.close());
    broker.rejects = (e) => e.type === 'JOB_CREATED';
    const svc = await service({ MESSAGE_BROKER_URL: broker.url, BROKER_MAX_REFUSALS: '3' });
    const jobId = await createDatasetJob(svc.url);
    await waitFor('the completion at the broker', () =>
      ofJob(broker.received, jobId).find((e) => e.type === 'JOB_STATUS_CHANGED' && e.data.newStatus === 'completed'),
    );
    const { rows } = await svc.db.execute<{ attempts: number; dead: boolean; delivered: boolean }>(sql`
      select attempts, dead_at is not null as dead, delivered_at is not null as delivered
      from job_queue.outbox where job_id = ${jobId} and type = 'JOB_CREATED'`);
    expect(rows).toEqual([{ attempts: 3, dead: true, delivered: true }]);
    expect(broker.rejected).toBe(3);
    expect(ofJob(broker.received, jobId).some((e) => e.type === 'JOB_CREATED')).toBe(false);
    // Listed through the API, and counted.
    const letters = await api(svc.url, 'GET', '/api/events/dead-letters');
    expect(letters.status).toBe(200);
    expect(letters.body.items.filter((d: { jobId: string }) => d.jobId === jobId)).toEqual([
      expect.objectContaining({ type: 'JOB_CREATED', stream: `job:${jobId}`, attempts: 3, lastError: expect.stringContaining('400') }),
    ]);
    const text = await (await fetch(`${svc.url}/metrics`)).text();
    expect(text).toMatch(/^graphcap_outbox_dead_letters [1-9]/m);
    expect(text).toMatch(/^graphcap_event_deliveries_total\{outcome="dead"\} [1-9]/m);

    // An event the broker could not take for longer than EVENT_MAX_UNDELIVERED_HOURS goes aside too.
    await broker.down();
    await svc.db.execute(sql`
      insert into job_queue.outbox (type, stream, data, occurred_at)
      values ('DATASET_UPDATED', 'data:dataset', '{"entity":"dataset","source":"api","ids":[]}', now() - interval '80 hours')`);
    const age = Number((await (await fetch(`${svc.url}/metrics`)).text()).match(/^graphcap_outbox_oldest_undelivered_seconds (\S+)/m)![1]);
    expect(age).toBeGreaterThan(79 * 3600);
    await svc.restart({ MESSAGE_BROKER_URL: broker.url, BROKER_MAX_REFUSALS: '3', EVENT_MAX_UNDELIVERED_HOURS: '72' });
    await waitFor('the old event to be moved aside', async () => {
      const { rows: old } = await svc.db.execute<{ dead: boolean }>(sql`
        select dead_at is not null as dead from job_queue.outbox where type = 'DATASET_UPDATED' and occurred_at < now() - interval '79 hours'`);
      return old[0]?.dead;
    });
    const expired = (await api(svc.url, 'GET', '/api/events/dead-letters')).body.items[0];
    expect(expired).toMatchObject({ type: 'DATASET_UPDATED', lastError: expect.stringContaining('undelivered for more than 72 hours') });
  });

  it('two replicas share delivery without sending one stream’s events at once', async () => {
    const broker = await StandInBroker.start({ delayMs: 15 });
    cleanups.push(() => broker.close());
    const svc = await service({ MESSAGE_BROKER_URL: broker.url });
    await replica(svc, { MESSAGE_BROKER_URL: broker.url, DISPATCHER_ENABLED: 'false' });
    const jobs = [
      await createDatasetJob(svc.url, ['art_critic']),
      await createDatasetJob(svc.url, ['storytelling']),
      await createDatasetJob(svc.url, ['graph_caption']),
    ];
    for (const jobId of jobs) {
      await waitFor(`job ${jobId} to finish and its events to go out`, async () =>
        (await api(svc.url, 'GET', `/api/perspectives/batch/status/${jobId}`)).body.job.status === 'completed' &&
        (await outboxCount(svc, jobId, 'delivered_at is null')) === 0,
      );
      await expectAllReceived(svc, broker, jobId);
    }
    expect(broker.maxInFlightPerStream).toBe(1);
    expectInOrderPerStream(broker.received);
  });

  it('progress is coalesced: a fast job of 2,000 items sends few progress events, the last one exact', async () => {
    const broker = await StandInBroker.start({ delayMs: 20 });
    cleanups.push(() => broker.close());
    const svc = await service({ MESSAGE_BROKER_URL: broker.url, MAX_CONCURRENT_ITEMS: '16' });
    // 500 images (hard links of one fixture file) × 4 perspectives.
    const folder = path.join(svc.workspace, 'datasets', 'many');
    await mkdir(folder);
    const source = path.join(svc.workspace, 'datasets', DATASET, 'highland-cow-8972000_640.jpg');
    for (let i = 0; i < 500; i++) await link(source, path.join(folder, `cow-${i}.jpg`));
    await api(svc.url, 'POST', '/api/workspace/sync');
    const created = await api(svc.url, 'POST', '/api/perspectives/batch/create', {
      type: 'DATASET_PERSPECTIVE',
      datasetName: 'many',
      perspectives: ['art_critic', 'storytelling', 'graph_caption', 'poetic_metaphor'],
      config: CONFIG,
    });
    const jobId = created.body.jobId as string;
    expect(created.body.totalImages).toBe(2000);
    await waitFor(
      'the completion event',
      () => ofJob(broker.received, jobId).find((e) => e.type === 'JOB_STATUS_CHANGED' && e.data.newStatus === 'completed'),
      120_000,
    );
    const progress = ofJob(broker.unique(), jobId).filter((e) => e.type === 'JOB_PROGRESS');
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.length).toBeLessThan(400);
    expect(progress.at(-1)!.data).toMatchObject({ processedImages: 2000, totalImages: 2000, progress: 100 });
  }, 180_000);
});

/** Reads an SSE stream until `until` says stop; returns the events. */
async function readSse(url: string, until: (events: { id: number; type: string; data: any }[]) => boolean, headers: Record<string, string> = {}) {
  const controller = new AbortController();
  const response = await fetch(url, { headers, signal: controller.signal });
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const events: { id: number; type: string; data: any }[] = [];
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const fields = Object.fromEntries(block.split('\n').filter((l) => !l.startsWith(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]));
        if (fields.data) events.push({ id: Number(fields.id), type: fields.event!, data: JSON.parse(fields.data) });
      }
      if (until(events)) break;
    }
  } finally {
    controller.abort();
  }
  return events;
}

const isCompletion = (jobId: string) => (events: { type: string; data: any }[]) =>
  events.some((e) => e.type === 'JOB_STATUS_CHANGED' && e.data.jobId === jobId && e.data.data.newStatus === 'completed');

describe('live events', () => {
  it('a client on replica B follows a job that runs on replica A, and resumes with Last-Event-ID', async () => {
    const a = await service({});
    const b = await replica(a, { DISPATCHER_ENABLED: 'false' });
    const jobId = await createDatasetJob(a.url);
    // lastEventId 0: everything of the job so far, then live.
    const live = await readSse(`${b.url}/api/perspectives/batch/events?jobId=${jobId}&lastEventId=0`, isCompletion(jobId));
    expect(live[0]).toMatchObject({ type: 'JOB_CREATED', data: { jobId, type: 'JOB_CREATED' } });
    expect(live.every((e) => e.data.jobId === jobId)).toBe(true);
    expect(live.map((e) => e.id)).toEqual([...live.map((e) => e.id)].sort((x, y) => x - y));

    // Reconnect before the last progress event: the rest comes again, in order. Progress is
    // coalesced (a job keeps one undelivered progress event, rewritten with a new id), so the missed
    // status changes come exactly and progress as its latest state. (Not a fixed position: a job
    // that finished before the stream opened has one progress event, maybe the third.)
    const resumeAt = Math.max(0, live.findLastIndex((e) => e.type === 'JOB_PROGRESS') - 1);
    const resumeFrom = live[resumeAt]!.id;
    const rest = await readSse(`${b.url}/api/perspectives/batch/events?jobId=${jobId}`, isCompletion(jobId), { 'last-event-id': String(resumeFrom) });
    const statusChanges = (events: typeof live) => events.filter((e) => e.type !== 'JOB_PROGRESS').map((e) => e.data.id);
    expect(statusChanges(rest)).toEqual(statusChanges(live.slice(resumeAt + 1)));
    expect(rest.every((e) => e.id > resumeFrom)).toBe(true);
    expect(rest.map((e) => e.id)).toEqual([...rest.map((e) => e.id)].sort((x, y) => x - y));
    const lastProgress = (events: typeof live) => events.filter((e) => e.type === 'JOB_PROGRESS').at(-1)?.data.data;
    expect(lastProgress(rest)).toEqual(lastProgress(live));
    expect(lastProgress(rest)).toMatchObject({ progress: 100 });

    const bad = await api(b.url, 'GET', '/api/perspectives/batch/events?jobId=nope');
    expect(bad.status).toBe(400);
  });

  it('the tRPC subscription follows a job through the typed client', async () => {
    const svc = await service({});
    const client = createTRPCClient<AppRouter>({
      links: [
        splitLink({
          condition: (op) => op.type === 'subscription',
          true: httpSubscriptionLink({ url: `${svc.url}/api/trpc`, EventSource }),
          false: httpLink({ url: `${svc.url}/api/trpc` }),
        }),
      ],
    });
    const received: { id: string; type: string; data: Record<string, unknown> }[] = [];
    let resolveDone: () => void;
    const done = new Promise<void>((resolve) => (resolveDone = resolve));
    // The job first, then its events from the start (lastEventId 0), so nothing is missed while the stream opens.
    const jobId = await createDatasetJob(svc.url);
    const subscription = client.batch.events.subscribe(
      { jobId, lastEventId: '0' },
      {
        onData(envelope) {
          const event = envelope.data;
          expect(event.jobId).toBe(jobId);
          received.push(event);
          if (event.type === 'JOB_STATUS_CHANGED' && event.data.newStatus === 'completed') resolveDone();
        },
      },
    );
    try {
      await done;
      expect(received[0]?.type).toBe('JOB_CREATED');
      expect(received.filter((e) => e.type === 'JOB_PROGRESS').at(-1)?.data).toMatchObject({ processedImages: 7, progress: 100 });
    } finally {
      subscription.unsubscribe();
    }
  });
});
