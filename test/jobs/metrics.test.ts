import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONFIG, DATASET } from '../helpers/fixtures.js';
import { jobState, waitFor } from '../helpers/jobs.js';
import { api, startTestService, type TestService } from '../helpers/service.js';
import { StandInBridge } from '../stand-ins/bridge.js';

let bridge: StandInBridge;
let svc: TestService;
beforeAll(async () => {
  bridge = await StandInBridge.start({ permanentFailures: { 'girl-8435339_640.webp': 'unsupported image' } });
  svc = await startTestService({ env: { INFERENCE_BRIDGE_URL: bridge.url, POLL_INTERVAL_MS: '100' } });
});
afterAll(async () => {
  await svc?.close();
  await bridge?.close();
});

/** Parses the Prometheus text format strictly: every sample line must be `name{labels} value`. */
function parse(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (-?[\d.e+-]+|NaN|\+Inf|-Inf)$/.exec(line);
    expect(match, line).not.toBeNull();
    samples.set(match![1]!, Number(match![2]));
  }
  return samples;
}

describe('metrics after a job ran', () => {
  it('parse, and the counters match what happened', async () => {
    const created = await api(svc.url, 'POST', '/api/perspectives/batch/create', {
      type: 'DATASET_PERSPECTIVE',
      datasetName: DATASET,
      perspectives: ['art_critic'],
      config: CONFIG,
    });
    const jobId = created.body.jobId as string;
    const state = await waitFor('the job to finish', async () => {
      const s = await jobState(svc.db, jobId);
      return s.status === 'partial' ? s : undefined;
    });
    expect(state).toMatchObject({ processedImages: 6, failedImages: 1 });

    const metrics = parse(await (await fetch(`${svc.url}/metrics`)).text());
    expect(metrics.get('graphcap_dispatched_items_total{outcome="completed"}')).toBe(6);
    expect(metrics.get('graphcap_dispatched_items_total{outcome="failed"}')).toBe(1);
    expect(metrics.get('graphcap_bridge_call_duration_seconds_count{outcome="ok"}')).toBe(6);
    expect(metrics.get('graphcap_bridge_call_duration_seconds_count{outcome="permanent"}')).toBe(1);
    // Every call started once, claimed in a round or handed on from an ended call's slot.
    expect((metrics.get('graphcap_item_starts_total{via="claim"}') ?? 0) + (metrics.get('graphcap_item_starts_total{via="reserve"}') ?? 0)).toBe(7);
    expect(metrics.get('graphcap_job_items{status="completed"}')).toBe(6);
    expect(metrics.get('graphcap_job_items{status="failed"}')).toBe(1);
    expect(metrics.get('graphcap_jobs{status="partial"}')).toBe(1);
    expect(metrics.get('graphcap_http_requests_total{method="POST",route="/api/perspectives/batch/create",status="200"}')).toBe(1);
    expect(metrics.get('graphcap_dispatch_round_duration_seconds_count')).toBeGreaterThan(0);
    expect(metrics.has('nodejs_eventloop_lag_seconds')).toBe(true);
    expect([...metrics.keys()].some((k) => k.includes(jobId))).toBe(false);
  });
});

describe('route labels', () => {
  it('stay a bounded set, whatever tRPC names callers make up', async () => {
    const before = (await (await fetch(`${svc.url}/metrics`)).text()).length;
    for (let i = 0; i < 300; i += 1) await fetch(`${svc.url}/api/trpc/made.up${i}.${'x'.repeat(200)}`);
    await fetch(`${svc.url}/api/trpc/batch.list,made.up`);
    // Real procedures keep their own label; a real batch shares one.
    await fetch(`${svc.url}/api/trpc/batch.list`);
    await fetch(`${svc.url}/api/trpc/batch.list,batch.statistics?batch=1&input=${encodeURIComponent('{}')}`);

    const text = await (await fetch(`${svc.url}/metrics`)).text();
    const metrics = parse(text);
    expect(text).not.toContain('made.up');
    const labelled = (route: string) => [...metrics.keys()].filter((k) => k.startsWith('graphcap_http_requests_total{') && k.includes(`route="${route}"`));
    expect(labelled('/api/trpc/(unknown)').map((k) => metrics.get(k)!).reduce((a, b) => a + b, 0)).toBe(301);
    expect(labelled('/api/trpc/batch.list')).toHaveLength(1);
    expect(labelled('/api/trpc/(batch)')).toHaveLength(1);
    // 301 requests added a few series, not 301.
    expect(text.length - before).toBeLessThan(20_000);
  });
});
