/**
 * Prometheus metrics (prom-client). Names follow Prometheus conventions (`_total` counters, base
 * units: seconds); label values are bounded sets (route templates, statuses), never ids.
 */
import type pg from 'pg';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Db } from './db/client.js';
import { BRIDGE_STATES, type BridgeMonitor } from './jobs/bridge-monitor.js';
import { countPendingExports } from './db/caption-exports.js';
import { countUnwrittenItems } from './db/item-chunks.js';
import { countDeadLetters, countUndelivered, oldestUndeliveredAge } from './db/outbox.js';
import { listProviders } from './db/provider-states.js';
import { getQueueDepth } from './db/statistics.js';

export interface Metrics {
  registry: Registry;
  httpRequests: Counter<'method' | 'route' | 'status'>;
  httpDuration: Histogram<'method' | 'route'>;
  eventDeliveries: Counter<'outcome'>;
  /** Items this process's dispatcher finished (completed, failed) or scheduled again (retried). */
  itemOutcomes: Counter<'outcome'>;
  /** Inference Bridge calls by outcome (ok, transient, permanent, aborted). */
  bridgeCalls: Histogram<'outcome'>;
  /** Items this process's dispatcher started, by how they got their slot: claimed in a round, or handed on from a call that ended. */
  itemStarts: Counter<'via'>;
  /** One dispatcher pass: sweep, start jobs, claim. */
  dispatchRounds: Histogram;
  /** Captions written back to graphcap's captions.jsonl (written), or not this time (failed). */
  captionWritebacks: Counter<'outcome'>;
  /** Live event subscribers (SSE and tRPC) of this process, and those it dropped for falling behind. */
  eventSubscribers: Gauge;
  eventSubscribersDropped: Counter;
}

export function createMetrics(deps: { db: Db; pool: pg.Pool; bridge?: BridgeMonitor }): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  const httpRequests = new Counter({
    name: 'graphcap_http_requests_total',
    help: 'HTTP requests by method, route template and status code.',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [registry],
  });
  const httpDuration = new Histogram({
    name: 'graphcap_http_request_duration_seconds',
    help: 'HTTP request latency by method and route template.',
    labelNames: ['method', 'route'] as const,
    buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });

  new Gauge({
    name: 'graphcap_bridge_state',
    help: 'The Inference Bridge as its last check saw it: 1 for the current state (ok, unreachable, incompatible, unknown); none without INFERENCE_BRIDGE_URL.',
    labelNames: ['state'] as const,
    registers: [registry],
    collect() {
      this.reset();
      if (!deps.bridge) return;
      for (const state of BRIDGE_STATES) this.set({ state }, deps.bridge.state === state ? 1 : 0);
    },
  });

  // Queue depth is read from the database at scrape time, so every replica reports the same truth;
  // the two gauges, collected concurrently, share one read per scrape.
  const readDepth = sharedRead(() => getQueueDepth(deps.db));
  new Gauge({
    name: 'graphcap_jobs',
    help: 'Jobs (not archived) by status.',
    labelNames: ['status'] as const,
    registers: [registry],
    async collect() {
      const { jobs } = await readDepth();
      this.reset();
      for (const [status, n] of Object.entries(jobs)) this.set({ status }, n);
    },
  });
  new Gauge({
    name: 'graphcap_job_items',
    help: 'Items of jobs (not archived) by status.',
    labelNames: ['status'] as const,
    registers: [registry],
    async collect() {
      const { items } = await readDepth();
      this.reset();
      for (const [status, n] of Object.entries(items)) this.set({ status }, n);
    },
  });
  new Gauge({
    name: 'graphcap_db_pool_connections',
    help: 'Connections of this process’s database pool by state.',
    labelNames: ['state'] as const,
    registers: [registry],
    collect() {
      this.set({ state: 'total' }, deps.pool.totalCount);
      this.set({ state: 'idle' }, deps.pool.idleCount);
      this.set({ state: 'waiting' }, deps.pool.waitingCount);
    },
  });

  // Adaptive dispatch per (provider, model), as every replica sees it in the database; one read per scrape too.
  const readProviders = sharedRead(() => listProviders(deps.db));
  const providerGauge = (name: string, help: string, value: (p: Awaited<ReturnType<typeof listProviders>>[number]) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['provider', 'model'] as const,
      registers: [registry],
      async collect() {
        const providers = await readProviders();
        this.reset();
        for (const p of providers) this.set({ provider: p.provider, model: p.model }, value(p));
      },
    });
  providerGauge('graphcap_provider_concurrency_limit', 'Adaptive in-flight limit per provider and model (all replicas).', (p) => p.concurrencyLimit);
  providerGauge('graphcap_provider_calls_in_flight', 'Inference Bridge calls in flight per provider and model (all replicas).', (p) => p.inFlight);
  new Gauge({
    name: 'graphcap_provider_breaker_state',
    help: 'Circuit breaker per provider and model: 1 for its current state (closed, open, half-open), 0 for the others.',
    labelNames: ['provider', 'model', 'state'] as const,
    registers: [registry],
    async collect() {
      const providers = await readProviders();
      this.reset();
      for (const p of providers) {
        for (const state of ['closed', 'open', 'half-open']) this.set({ provider: p.provider, model: p.model, state }, p.breaker === state ? 1 : 0);
      }
    },
  });

  new Gauge({
    name: 'graphcap_outbox_undelivered_events',
    help: 'Events waiting for delivery to the message broker (all replicas).',
    registers: [registry],
    async collect() {
      this.set(await countUndelivered(deps.db));
    },
  });
  new Gauge({
    name: 'graphcap_outbox_dead_letters',
    help: 'Events moved aside because the broker refused them for good or they waited too long (all replicas; kept EVENT_RETENTION_HOURS).',
    registers: [registry],
    async collect() {
      this.set(await countDeadLetters(deps.db));
    },
  });
  new Gauge({
    name: 'graphcap_outbox_oldest_undelivered_seconds',
    help: 'Age of the oldest event waiting for the message broker (0 when none waits).',
    registers: [registry],
    async collect() {
      this.set(await oldestUndeliveredAge(deps.db));
    },
  });
  new Gauge({
    name: 'graphcap_job_items_unwritten',
    help: 'Items of created jobs that the item writers have yet to write (job_item_chunks): a backlog that stays means no replica writes them.',
    registers: [registry],
    async collect() {
      this.set(await countUnwrittenItems(deps.db));
    },
  });
  const eventDeliveries = new Counter({
    name: 'graphcap_event_deliveries_total',
    help: 'Deliveries of events to the message broker by this process, by outcome: delivered, failed (to be retried), dead (moved aside: the broker refuses it, or it waited too long).',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });

  const itemOutcomes = new Counter({
    name: 'graphcap_dispatched_items_total',
    help: 'Items this process dispatched, by outcome: completed, failed, retried (a transient failure), or deferred (the provider said wait; no attempt spent).',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  const bridgeCalls = new Histogram({
    name: 'graphcap_bridge_call_duration_seconds',
    help: 'Inference Bridge calls by outcome (ok, transient, permanent, aborted); the count is the calls.',
    labelNames: ['outcome'] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [registry],
  });
  const itemStarts = new Counter({
    name: 'graphcap_item_starts_total',
    help: 'Items this process started at the bridge, by how they got their slot: "claim" (claimed in a dispatcher round) or "reserve" (the slot of a call of the same job that just ended, handed on without waiting for a round).',
    labelNames: ['via'] as const,
    registers: [registry],
  });
  const dispatchRounds = new Histogram({
    name: 'graphcap_dispatch_round_duration_seconds',
    help: 'Duration of one dispatcher pass (sweep, start jobs, claim). Event-loop lag is nodejs_eventloop_lag_seconds.',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [registry],
  });

  const captionWritebacks = new Counter({
    name: 'graphcap_caption_writebacks_total',
    help: "Captions written back to graphcap's captions.jsonl files (written), or not this time (failed: tried again later).",
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  new Gauge({
    name: 'graphcap_caption_writebacks_pending',
    help: "Captions waiting to be written back to graphcap's captions.jsonl files.",
    registers: [registry],
    async collect() {
      this.set(await countPendingExports(deps.db));
    },
  });

  const eventSubscribers = new Gauge({
    name: 'graphcap_event_subscribers',
    help: 'Live event subscribers (SSE streams and tRPC subscriptions) of this process.',
    registers: [registry],
  });
  const eventSubscribersDropped = new Counter({
    name: 'graphcap_event_subscribers_dropped_total',
    help: 'Live event subscribers this process dropped because they fell too far behind (they may resume with their last event id).',
    registers: [registry],
  });
  return {
    registry,
    httpRequests,
    httpDuration,
    eventDeliveries,
    itemOutcomes,
    bridgeCalls,
    itemStarts,
    dispatchRounds,
    captionWritebacks,
    eventSubscribers,
    eventSubscribersDropped,
  };
}

/** The paths an OpenAPI path template (`/api/images/{imageId}`) stands for, as a RegExp. */
export function templatePattern(template: string): RegExp {
  return new RegExp(`^${template.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/\\\{[^}]+\\\}/g, '[^/]+')}$`);
}

/**
 * Maps a request path to a bounded route label: the OpenAPI path template for REST, the procedure
 * name for a tRPC procedure that exists, the path itself for the few fixed routes, and `other` for
 * everything else. Only names from these lists ever become labels: a label made from the path (any
 * `/api/trpc/<name>`) let every caller add series to /metrics for good.
 */
export function routeLabeller(openApiPaths: string[], procedures: readonly string[]): (path: string) => string {
  const templates = openApiPaths.map((template) => ({ template, pattern: templatePattern(template) }));
  const fixed = new Set(['/health', '/metrics', '/openapi.json']);
  const known = new Set(procedures);
  return (path) => {
    if (fixed.has(path)) return path;
    if (path.startsWith('/docs')) return '/docs';
    if (path.startsWith('/api/trpc/')) {
      const procedure = path.slice('/api/trpc/'.length);
      if (known.has(procedure)) return `/api/trpc/${procedure}`;
      // A batch names its procedures joined by commas.
      return procedure.split(',').every((p) => known.has(p)) ? '/api/trpc/(batch)' : '/api/trpc/(unknown)';
    }
    return templates.find((t) => t.pattern.test(path))?.template ?? 'other';
  };
}

/** `read`, shared by the callers that ask while it runs: the gauges of one scrape, one query. */
function sharedRead<T>(read: () => Promise<T>): () => Promise<T> {
  let running: Promise<T> | undefined;
  return () =>
    (running ??= read().finally(() => {
      running = undefined;
    }));
}
