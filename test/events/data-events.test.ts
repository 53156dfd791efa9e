/**
 * Data change events (README, "Data change events"): each change through the API, a job, a
 * workspace sync and a caption import produces the documented events, in the change's transaction,
 * never with a provider's key; bulk changes produce a bounded number of events that still list
 * every id; the broker, the SSE stream and the tRPC subscription get them, filtered as asked.
 */
import { copyFile, cp, link, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { createTRPCClient, httpLink, httpSubscriptionLink, splitLink } from '@trpc/client';
import { sql } from 'drizzle-orm';
import { EventSource } from 'eventsource';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createCaption } from '../../src/db/captions.js';
import { createDataset } from '../../src/db/datasets.js';
import { upsertImages } from '../../src/db/images.js';
import { createProvider } from '../../src/db/providers.js';
import { dataEvent } from '../../src/routers/events.schemas.js';
import type { AppRouter } from '../../src/routers/index.js';
import { CONFIG, DATASET, finishItem, IMAGES, itemIds } from '../helpers/fixtures.js';
import { waitFor } from '../helpers/jobs.js';
import { api, copyWorkspace, startTestService, type TestService } from '../helpers/service.js';
import { StandInBridge } from '../stand-ins/bridge.js';
import { StandInBroker } from '../stand-ins/broker.js';

const FAST = { POLL_INTERVAL_MS: '50', NOTIFIER_POLL_MS: '50', CAPTION_EVENT_ROLLUP_MS: '200', LEASE_SECONDS: '5' };
const PLANTED = 'sk-planted-events-key-0123456789';
const OTHER_PLANTED = 'sk-second-planted-key-9876543210';

type Event = { id: string; seq: number; type: string; jobId: string | null; requestId: string | null; data: Record<string, any> };

let bridge: StandInBridge;
const cleanups: (() => Promise<unknown>)[] = [];
beforeAll(async () => {
  bridge = await StandInBridge.start();
});
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});
afterAll(async () => bridge?.close());

async function service(env: Record<string, string> = {}, workspace?: string): Promise<TestService> {
  const svc = await startTestService({ env: { ...FAST, INFERENCE_BRIDGE_URL: bridge.url, ...env }, workspace });
  cleanups.push(() => svc.close());
  return svc;
}

/** Reads an SSE stream into `events` until closed. */
async function openStream(url: string, headers: Record<string, string> = {}) {
  const controller = new AbortController();
  const response = await fetch(url, { headers, signal: controller.signal });
  expect(response.status).toBe(200);
  const events: Event[] = [];
  const reading = (async () => {
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of response.body!) {
        buffer += decoder.decode(chunk as Uint8Array, { stream: true });
        for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
          const data = buffer.slice(0, end).split('\n').find((line) => line.startsWith('data: '));
          buffer = buffer.slice(end + 2);
          if (data) events.push(JSON.parse(data.slice(6)) as Event);
        }
      }
    } catch {
      // aborted
    }
  })();
  cleanups.push(async () => {
    controller.abort();
    await reading;
  });
  return events;
}

/** The events with a request id of the test's (`prefix`), in order, as [type, the fields that matter]. */
function summary(events: Event[], prefix: string) {
  return events
    .filter((e) => e.requestId?.startsWith(prefix))
    .sort((a, b) => a.seq - b.seq)
    .map((e) => {
      const { entity: _entity, source, ids, ...rest } = e.data;
      return [e.type, e.requestId, source, ids, rest];
    });
}

async function outboxEvents(svc: TestService, where = sql`true`): Promise<Event[]> {
  const { rows } = await svc.db.execute<Event>(sql`
    select event_id as id, seq, type, job_id as "jobId", request_id as "requestId", data
    from job_queue.outbox where starts_with(stream, 'data:') and ${where} order by seq`);
  return rows;
}

async function maxSeq(svc: TestService): Promise<number> {
  const { rows } = await svc.db.execute<{ n: number }>(sql`select coalesce(max(seq), 0)::int as n from job_queue.outbox`);
  return rows[0]!.n;
}

const ok = (response: { status: number; body: any }) => {
  expect(response.status, JSON.stringify(response.body)).toBe(200);
  return response.body;
};

describe('data change events', () => {
  it('every change through the API is an event in its order, with the request id, on the broker and the stream; no key in any', async () => {
    const broker = await StandInBroker.start();
    cleanups.push(() => broker.close());
    const svc = await service({ MESSAGE_BROKER_URL: broker.url, SECRETS_KEY: randomBytes(32).toString('hex') });
    const stream = await openStream(`${svc.url}/api/events`);
    const images = ok(await api(svc.url, 'GET', `/api/images?pathContains=datasets/${DATASET}/&limit=2`)).items;
    const [img0, img1] = images.map((i: { imageId: string }) => i.imageId) as [string, string];
    let n = 0;
    const call = async (method: string, route: string, body?: unknown) => ok(await api(svc.url, method, route, body, { 'x-request-id': `ev-${++n}` }));

    const d = (await call('POST', '/api/datasets', { name: 'picked', imageIds: [img0] })).datasetId as string;
    await call('PATCH', `/api/datasets/${d}`, { description: 'hand-picked' });
    await call('POST', `/api/datasets/${d}/images`, { imageIds: [img1] });
    await call('DELETE', `/api/datasets/${d}/images/${img0}`);
    const c = (await call('POST', '/api/captions', { imageId: img0, perspective: 'art_critic', result: { v: 1 } })).captionId as string;
    await call('PATCH', `/api/captions/${c}`, { result: { v: 2 } });
    await call('DELETE', `/api/captions/${c}`);
    const p = (await call('POST', '/api/perspectives', { name: 'events_test', prompt: 'p' })).perspectiveId as string;
    await call('PATCH', `/api/perspectives/${p}`, { prompt: 'q' });
    await call('PATCH', `/api/perspectives/${p}`, { enabled: false });
    await call('DELETE', `/api/perspectives/${p}`);
    const provider = { name: 'events-openai', kind: 'openai', environment: 'cloud', baseUrl: 'https://api.openai.com/v1', apiKey: PLANTED, models: [{ name: 'gpt-4o-mini' }] };
    const pr = (await call('POST', '/api/providers', provider)).providerId as string;
    await call('PATCH', `/api/providers/${pr}`, { apiKey: OTHER_PLANTED });
    await call('DELETE', `/api/providers/${pr}`);
    await mkdir(path.join(svc.workspace, 'uploads'), { recursive: true });
    await copyFile(path.join(svc.workspace, IMAGES[3]), path.join(svc.workspace, 'uploads/ev.jpg'));
    const img = (await call('POST', '/api/images', { path: 'uploads/ev.jpg', datasetIds: [d] })).imageId as string;
    const c2 = (await call('POST', '/api/captions', { imageId: img, perspective: 'storytelling', result: { v: 3 } })).captionId as string;
    await call('DELETE', `/api/images/${img}`);
    await call('DELETE', `/api/datasets/${d}`);

    const expected = [
      ['DATASET_CREATED', 'ev-1', 'api', [d], { datasetId: d, name: 'picked' }],
      ['DATASET_MEMBERS_CHANGED', 'ev-1', 'api', [d], { datasetId: d, added: [img0], removed: [] }],
      ['DATASET_UPDATED', 'ev-2', 'api', [d], { datasetId: d, name: 'picked', changes: ['description'] }],
      ['DATASET_MEMBERS_CHANGED', 'ev-3', 'api', [d], { datasetId: d, added: [img1], removed: [] }],
      ['DATASET_MEMBERS_CHANGED', 'ev-4', 'api', [d], { datasetId: d, added: [], removed: [img0] }],
      ['CAPTION_CREATED', 'ev-5', 'api', [c], {}],
      ['CAPTION_UPDATED', 'ev-6', 'api', [c], { changes: ['result'] }],
      ['CAPTION_DELETED', 'ev-7', 'api', [c], {}],
      ['PERSPECTIVE_CREATED', 'ev-8', 'api', [p], { name: 'events_test', revision: 1, newRevision: true }],
      ['PERSPECTIVE_UPDATED', 'ev-9', 'api', [p], { name: 'events_test', revision: 2, newRevision: true, changes: ['definition'] }],
      ['PERSPECTIVE_UPDATED', 'ev-10', 'api', [p], { name: 'events_test', revision: 2, newRevision: false, changes: ['enabled'] }],
      ['PERSPECTIVE_DELETED', 'ev-11', 'api', [p], { name: 'events_test' }],
      ['PROVIDER_CREATED', 'ev-12', 'api', [pr], { name: 'events-openai' }],
      ['PROVIDER_UPDATED', 'ev-13', 'api', [pr], { name: 'events-openai', changes: ['apiKey'] }],
      ['PROVIDER_DELETED', 'ev-14', 'api', [pr], { name: 'events-openai' }],
      ['IMAGE_CREATED', 'ev-15', 'api', [img], { path: 'uploads/ev.jpg' }],
      ['DATASET_MEMBERS_CHANGED', 'ev-15', 'api', [d], { datasetId: d, added: [img], removed: [] }],
      ['CAPTION_CREATED', 'ev-16', 'api', [c2], {}],
      ['DATASET_MEMBERS_CHANGED', 'ev-17', 'api', [d], { datasetId: d, added: [], removed: [img] }],
      ['CAPTION_DELETED', 'ev-17', 'api', [c2], {}],
      ['IMAGE_DELETED', 'ev-17', 'api', [img], {}],
      ['DATASET_DELETED', 'ev-18', 'api', [d], { datasetId: d, name: 'picked' }],
    ];
    await waitFor('the last change on the stream', () => stream.some((e) => e.requestId === 'ev-18'));
    expect(summary(stream, 'ev-')).toEqual(expected);
    await waitFor('the last change at the broker', () => broker.received.some((e) => e.requestId === 'ev-18'));
    expect(summary(broker.unique() as unknown as Event[], 'ev-')).toEqual(expected);
    // The contract: every event is a DataEvent of the schema the OpenAPI document and tRPC give.
    for (const e of stream) expect(dataEvent.safeParse(e).error).toBeUndefined();
    // A key never travels: not in the stream, the broker, or the outbox.
    const everything = JSON.stringify([stream, broker.received, await outboxEvents(svc)]);
    expect(everything).not.toContain(PLANTED);
    expect(everything).not.toContain(OTHER_PLANTED);
  });

  it('a change rolled back sends nothing', async () => {
    const svc = await service();
    const before = await maxSeq(svc);
    const images = ok(await api(svc.url, 'GET', '/api/images?limit=1')).items;
    await expect(
      svc.db.transaction(async (tx) => {
        await createDataset(tx, { name: 'never', imageIds: [images[0].imageId] });
        await createCaption(tx, { imageId: images[0].imageId, perspective: 'art_critic', result: { v: 1 } });
        await createProvider(tx, { name: 'never', kind: 'openai', environment: 'cloud', baseUrl: 'https://x.invalid/v1', apiKey: null, isEnabled: true, models: [], defaultModel: null, requestsPerMinute: null, tokensPerMinute: null });
        await upsertImages(tx, [{ path: 'datasets/never.jpg', sizeBytes: 1, fileMtime: new Date(), format: 'jpg', width: 1, height: 1, contentHash: 'x' }]);
        expect((await tx.execute<{ n: number }>(sql`select count(*)::int as n from job_queue.outbox where seq > ${before}`)).rows[0]!.n).toBe(5);
        throw new Error('rolled back');
      }),
    ).rejects.toThrow('rolled back');
    expect(await maxSeq(svc)).toBe(before);
    // A request refused half-way leaves nothing either.
    const missing = await api(svc.url, 'PATCH', '/api/captions/00000000-0000-4000-8000-000000000000', { result: {} });
    expect(missing.status).toBe(404);
    expect(await maxSeq(svc)).toBe(before);
  });

  it('a caption an executor reports through the internal endpoint is announced as the job’s', async () => {
    // No dispatcher here: the items are the executor's.
    const svc = await service({ DISPATCHER_ENABLED: 'false' });
    const job = ok(await api(svc.url, 'POST', '/api/perspectives/batch/create', { type: 'MULTI_PERSPECTIVE', imagePaths: IMAGES.slice(0, 1), perspectives: ['art_critic'], config: CONFIG }));
    const [item] = await itemIds(svc.db, job.jobId);
    await finishItem(svc.url, item!, 'completed');
    const { rows: made } = await svc.db.execute<{ id: string }>(sql`select id from core_schema.captions where job_id = ${job.jobId}`);
    expect(made).toHaveLength(1);
    const announced = await waitFor('the roll-up', async () => {
      const events = await outboxEvents(svc, sql`job_id = ${job.jobId}`);
      return events.length > 0 && events;
    });
    expect(announced.map((e) => [e.type, e.data.source, e.data.ids])).toEqual([['CAPTION_CREATED', 'job', [made[0]!.id]]]);
  });

  it('a workspace sync and its caption import say what they registered, updated and removed', async () => {
    const workspace = await copyWorkspace();
    cleanups.push(() => rm(workspace, { recursive: true, force: true }));
    const svc = await service({}, workspace);
    const ws = (p: string) => path.join(workspace, p);
    await cp(ws(`datasets/${DATASET}`), ws('datasets/copy'), { recursive: true });
    let before = await maxSeq(svc);
    const report = ok(await api(svc.url, 'POST', '/api/workspace/sync', undefined, { 'x-request-id': 'sync-1' }));
    const copy = report.datasets.find((x: { name: string }) => x.name === 'copy');
    expect(copy).toMatchObject({ added: 7, captions: { imported: 7 * 7 } });
    const members = ok(await api(svc.url, 'GET', `/api/datasets/${copy.datasetId}/images?limit=100`)).items as { imageId: string; path: string }[];
    const { rows: captions } = await svc.db.execute<{ id: string }>(sql`
      select c.id from core_schema.captions c join core_schema.images i on i.id = c.image_id where starts_with(i.path, 'datasets/copy/')`);
    const sorted = (ids: string[]) => [...ids].sort();
    const synced = summary(await outboxEvents(svc, sql`seq > ${before}`), 'sync-1');
    expect(synced.filter(([type]) => type !== 'CAPTION_CREATED')).toEqual([
      ['IMAGE_CREATED', 'sync-1', 'sync', sorted(members.map((m) => m.imageId)), {}],
      ['DATASET_CREATED', 'sync-1', 'sync', [copy.datasetId], { datasetId: copy.datasetId, name: 'copy' }],
      ['DATASET_MEMBERS_CHANGED', 'sync-1', 'sync', [copy.datasetId], { datasetId: copy.datasetId, added: sorted(members.map((m) => m.imageId)), removed: [] }],
    ]);
    // The captions come after their images, an event per file imported (its batch), from the import.
    const imported = synced.slice(3);
    expect(imported.map(([type, , source]) => [type, source])).toEqual(Array(7).fill(['CAPTION_CREATED', 'import']));
    expect(sorted(imported.flatMap(([, , , ids]) => ids as string[]))).toEqual(sorted(captions.map((c) => c.id)));

    // A file gone, a file with new content, a perspective with a new definition.
    const gone = members.find((m) => m.path === 'datasets/copy/ural-owl-6676441_640.jpg')!;
    const changed = members.find((m) => m.path === 'datasets/copy/highland-cow-8972000_640.jpg')!;
    await rm(ws(gone.path));
    await copyFile(ws(IMAGES[4]), ws(changed.path));
    const critic = JSON.parse(await readFile(ws('perspective_library/core/art_critic.json'), 'utf8'));
    await writeFile(ws('perspective_library/core/art_critic.json'), JSON.stringify({ ...critic, prompt: `${critic.prompt} Be brief.` }));
    before = await maxSeq(svc);
    ok(await api(svc.url, 'POST', '/api/workspace/sync', undefined, { 'x-request-id': 'sync-2' }));
    const artCritic = ok(await api(svc.url, 'GET', '/api/perspectives?name=art_critic')).items[0];
    expect(summary(await outboxEvents(svc, sql`seq > ${before}`), 'sync-2')).toEqual([
      ['PERSPECTIVE_UPDATED', 'sync-2', 'library', [artCritic.perspectiveId], { name: 'art_critic', revision: 2, newRevision: true, changes: ['definition'] }],
      ['IMAGE_UPDATED', 'sync-2', 'sync', [changed.imageId], { changes: ['content'] }],
      ['DATASET_MEMBERS_CHANGED', 'sync-2', 'sync', [copy.datasetId], { datasetId: copy.datasetId, added: [], removed: [gone.imageId] }],
    ]);
  });

  it('a sync of 10,000 new files and a 10,000-item job each write a bounded number of events that list every id', { timeout: 180_000 }, async () => {
    const svc = await service({ MAX_CONCURRENT_ITEMS: '32', CAPTION_EVENT_ROLLUP_MS: '1000' });
    const folder = path.join(svc.workspace, 'datasets/bulk');
    await mkdir(folder, { recursive: true });
    const source = path.join(svc.workspace, IMAGES[6]!);
    for (let i = 0; i < 10_000; i++) await link(source, path.join(folder, `owl-${String(i).padStart(5, '0')}.jpg`));
    const before = await maxSeq(svc);
    const report = ok(await api(svc.url, 'POST', '/api/workspace/sync'));
    const bulk = report.datasets.find((x: { name: string }) => x.name === 'bulk');
    expect(bulk.added).toBe(10_000);
    const { rows: registered } = await svc.db.execute<{ id: string }>(sql`
      select image_id as id from core_schema.dataset_images where dataset_id = ${bulk.datasetId}`);
    const synced = await outboxEvents(svc, sql`seq > ${before}`);
    const created = synced.filter((e) => e.type === 'IMAGE_CREATED');
    const joined = synced.filter((e) => e.type === 'DATASET_MEMBERS_CHANGED');
    // A thousand files a batch, a thousand ids an event: 10 + 10 events, and 1 for the new dataset.
    expect(synced.map((e) => e.type).sort()).toEqual([...Array(10).fill('DATASET_MEMBERS_CHANGED'), 'DATASET_CREATED', ...Array(10).fill('IMAGE_CREATED')].sort());
    const all = new Set(registered.map((r) => r.id));
    expect(all.size).toBe(10_000);
    expect(new Set(created.flatMap((e) => e.data.ids))).toEqual(all);
    expect(new Set(joined.flatMap((e) => e.data.added))).toEqual(all);

    // A client following the job's captions and one following the dataset, from before the job.
    const captionStream = await openStream(`${svc.url}/api/events?entity=caption`);
    const started = Date.now();
    const job = ok(await api(svc.url, 'POST', '/api/perspectives/batch/create', { type: 'DATASET_PERSPECTIVE', datasetName: 'bulk', perspectives: ['art_critic'], config: CONFIG }));
    await waitFor('the job to complete', async () => ok(await api(svc.url, 'GET', `/api/perspectives/batch/status/${job.jobId}`)).job.status === 'completed', 150_000);
    const seconds = (Date.now() - started) / 1000;
    const { rows: made } = await svc.db.execute<{ id: string }>(sql`select id from core_schema.captions where job_id = ${job.jobId}`);
    expect(made).toHaveLength(10_000);
    await waitFor('every caption announced', async () => {
      const announced = (await outboxEvents(svc, sql`job_id = ${job.jobId} and type = 'CAPTION_CREATED'`)).flatMap((e) => e.data.ids);
      return announced.length === 10_000;
    });
    const events = await outboxEvents(svc, sql`job_id = ${job.jobId}`);
    expect(new Set(events.map((e) => e.type))).toEqual(new Set(['CAPTION_CREATED']));
    expect(new Set(events.flatMap((e) => e.data.ids))).toEqual(new Set(made.map((c) => c.id)));
    // At most one event per roll-up (one a second here) plus one per thousand captions.
    expect(events.length).toBeLessThanOrEqual(Math.ceil(seconds) + 2 + 10);
    for (const e of events) expect(e.data.ids.length).toBeLessThanOrEqual(1000);
    await waitFor('the stream to catch up', () => captionStream.filter((e) => e.jobId === job.jobId).length === events.length);
    expect(captionStream.every((e) => e.type.startsWith('CAPTION_'))).toBe(true);
  });

  it('a client that stops reading is dropped once it falls behind; a replay from 0 pages through every event without a gap', async () => {
    const svc = await service();
    const metric = async (name: string) => {
      const text = await (await fetch(`${svc.url}/metrics`)).text();
      return Number(text.split('\n').find((l) => l.startsWith(`${name} `))?.split(' ').at(-1) ?? NaN);
    };
    const before = await maxSeq(svc);
    // A client that opens the stream and never reads a byte of it.
    const stalled = await new Promise<http.IncomingMessage>((resolve) => http.get(`${svc.url}/api/events?entity=image`, resolve));
    stalled.pause();
    cleanups.push(async () => stalled.destroy());
    await waitFor('the subscriber', async () => (await metric('graphcap_event_subscribers')) === 1);
    // 600 big events (a thousand ids each, ~40 KB of JSON): far more than socket buffers and the hub's bound hold.
    await svc.db.execute(sql`
      with written as (
        insert into job_queue.outbox (type, stream, data)
        select 'IMAGE_UPDATED', 'data:image',
               jsonb_build_object('entity', 'image', 'source', 'sync', 'ids',
                                  (select jsonb_agg(gen_random_uuid()) from generate_series(1, 1000) where g > 0))
        from generate_series(1, 600) g
        returning 1)
      select pg_notify('graphcap_events', '') from (select count(*) from written) c`);
    await waitFor('the stalled client to be dropped', async () => (await metric('graphcap_event_subscribers_dropped_total')) === 1);
    expect(await metric('graphcap_event_subscribers')).toBe(0);
    // The service still answers, and a reader resuming from before the burst gets all of it, in order.
    const resumed = await openStream(`${svc.url}/api/events?entity=image`, { 'last-event-id': String(before) });
    await waitFor('the 600 events', () => resumed.length >= 600);
    const { rows } = await svc.db.execute<{ seq: number }>(sql`select seq from job_queue.outbox where seq > ${before} order by seq`);
    expect(resumed.map((e) => e.seq)).toEqual(rows.map((r) => r.seq));
  });

  it('filters by entity, dataset and job on SSE and tRPC; a job’s caption comes before its change; job streams carry job events only', async () => {
    const svc = await service({ CAPTION_EVENT_ROLLUP_MS: '600000' });
    const os = ok(await api(svc.url, 'GET', `/api/datasets?name=${DATASET}`)).items[0].datasetId as string;
    const client = createTRPCClient<AppRouter>({
      links: [
        splitLink({
          condition: (op) => op.type === 'subscription',
          true: httpSubscriptionLink({ url: `${svc.url}/api/trpc`, EventSource }),
          false: httpLink({ url: `${svc.url}/api/trpc` }),
        }),
      ],
    });
    const typed: { type: string; source: string; name?: string }[] = [];
    const subscription = client.events.data.subscribe(
      { entity: ['provider'], lastEventId: '0' },
      { onData: (e) => typed.push({ type: e.data.type, source: e.data.data.source, name: 'name' in e.data.data ? e.data.data.name : undefined }) },
    );
    cleanups.push(async () => subscription.unsubscribe());
    const jobStream = await openStream(`${svc.url}/api/perspectives/batch/events`);
    const datasetStream = await openStream(`${svc.url}/api/events?datasetId=${os}&lastEventId=0`);
    const bad = await api(svc.url, 'GET', '/api/events?entity=image,robot');
    expect(bad.status).toBe(400);
    expect(bad.body.errors[0].path).toBe('entity.1');

    // A job's captions wait for their roll-up; a change of one makes them announced first.
    const beforeJob = await maxSeq(svc);
    const job = ok(await api(svc.url, 'POST', '/api/perspectives/batch/create', { type: 'MULTI_PERSPECTIVE', imagePaths: IMAGES.slice(0, 2), perspectives: ['storytelling'], config: CONFIG }));
    const jobCaptions = await openStream(`${svc.url}/api/events?jobId=${job.jobId}&lastEventId=0`);
    await waitFor('the job to complete', async () => ok(await api(svc.url, 'GET', `/api/perspectives/batch/status/${job.jobId}`)).job.status === 'completed');
    const { rows: made } = await svc.db.execute<{ id: string }>(sql`select id from core_schema.captions where job_id = ${job.jobId} order by id`);
    expect(made).toHaveLength(2);
    const ofCaptions = sql`type like 'CAPTION_%' and seq > ${beforeJob}`;
    expect(await outboxEvents(svc, ofCaptions)).toEqual([]);
    ok(await api(svc.url, 'DELETE', `/api/captions/${made[0]!.id}`));
    const captionEvents = await outboxEvents(svc, ofCaptions);
    // The deleted caption's CAPTION_CREATED comes first, with those stored in its commit; the other
    // caption, if the job stored it in another commit, still waits for its roll-up.
    expect(captionEvents.map((e) => [e.type, e.jobId, e.data.source])).toEqual([
      ['CAPTION_CREATED', job.jobId, 'job'],
      ['CAPTION_DELETED', null, 'api'],
    ]);
    expect(captionEvents[0]!.data.ids).toContain(made[0]!.id);
    expect(captionEvents[1]!.data.ids).toEqual([made[0]!.id]);
    const { rows: waiting } = await svc.db.execute<{ id: string }>(sql`select unnest(caption_ids) as id from job_queue.caption_changes`);
    expect([...captionEvents[0]!.data.ids, ...waiting.map((r) => r.id)].sort()).toEqual(made.map((c) => c.id).sort());
    await waitFor('the job’s caption event on its stream', () => jobCaptions.length === 1);
    expect(jobCaptions.map((e) => e.type)).toEqual(['CAPTION_CREATED']);

    ok(await api(svc.url, 'POST', '/api/providers', { name: 'filtered', kind: 'ollama', environment: 'local', baseUrl: 'http://127.0.0.1:9/v1' }));
    await waitFor('the provider event on the typed subscription', () => typed.some((e) => e.name === 'filtered'));
    // Those of the providers file at start-up too (lastEventId 0), and nothing but provider events.
    expect(typed.filter((e) => e.name === 'filtered')).toEqual([{ type: 'PROVIDER_CREATED', source: 'api', name: 'filtered' }]);
    expect(typed.filter((e) => e.source === 'config').map((e) => [e.type, e.name]).sort()).toEqual([
      ['PROVIDER_CREATED', 'gemini'],
      ['PROVIDER_CREATED', 'ollama'],
      ['PROVIDER_CREATED', 'openai'],
    ]);
    expect(typed.every((e) => e.type.startsWith('PROVIDER_'))).toBe(true);
    await waitFor('the dataset’s events since the start', () => datasetStream.length > 0);
    expect(datasetStream.map((e) => [e.type, e.data.datasetId])).toEqual([
      ['DATASET_CREATED', os],
      ['DATASET_MEMBERS_CHANGED', os],
    ]);
    await waitFor('the job’s completion on the job stream', () => jobStream.some((e) => e.data.newStatus === 'completed'));
    expect(jobStream.every((e) => e.type.startsWith('JOB_'))).toBe(true);
  });
});

