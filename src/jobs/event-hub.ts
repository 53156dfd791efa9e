/**
 * Live fan-out of committed events to this process's subscribers (SSE and the tRPC subscription),
 * whatever replica wrote them: woken by LISTEN, backed by polling. Reads advance by transaction
 * watermark (src/db/outbox.ts), so an event whose transaction commits late still arrives.
 */
import type { Db } from '../db/client.js';
import { PgListener } from '../db/listener.js';
import { dataStream, type DataEntity } from '../db/data-events.js';
import { currentWatermark, EVENTS_CHANNEL, readEventsAfter, readEventsBetween, type OutboxEvent, type StreamFilter } from '../db/outbox.js';
import type { Logger } from '../logger.js';
import { Wakeup } from './wakeup.js';

/** Events a resuming subscriber may replay at most. */
const REPLAY_LIMIT = 10_000;
/** A subscriber that falls this far behind is dropped; it can resume with its last event id. */
const MAX_QUEUED = 10_000;

export interface Subscription extends AsyncIterable<OutboxEvent> {
  close(): void;
}

/**
 * What a subscriber follows: job events (of one job or all), or data change events (of some
 * entity types or all, optionally only those a job caused or those about one dataset).
 */
export type EventFilter =
  | { kind: 'job'; jobId?: string }
  | { kind: 'data'; entities?: readonly DataEntity[]; jobId?: string; datasetId?: string };

function streamFilter(f: EventFilter): StreamFilter {
  return f.kind === 'job'
    ? { prefix: 'job:', jobId: f.jobId }
    : { prefix: 'data:', streams: f.entities?.map(dataStream), jobId: f.jobId };
}

function matches(f: EventFilter, e: OutboxEvent): boolean {
  if (f.jobId && f.jobId !== e.jobId) return false;
  if (f.kind === 'job') return e.stream.startsWith('job:');
  if (!e.stream.startsWith('data:')) return false;
  if (f.entities && !f.entities.some((entity) => e.stream === dataStream(entity))) return false;
  if (f.datasetId && e.data.datasetId !== f.datasetId) return false;
  return true;
}

interface Subscriber {
  filter: EventFilter;
  queue: OutboxEvent[];
  /** Live events held back until the replay is out. */
  replaying: boolean;
  notify?: () => void;
  closed: boolean;
}

export class EventHub {
  private readonly wakeup = new Wakeup();
  private readonly listener: PgListener;
  private readonly subscribers = new Set<Subscriber>();
  /** Every event of a transaction older than this has been fanned out. */
  private watermark: string | undefined;
  private stopped = false;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly options: { db: Db; databaseUrl: string; logger: Logger; pollMs: number },
  ) {
    this.listener = new PgListener({
      url: options.databaseUrl,
      channels: [EVENTS_CHANNEL],
      // Without subscribers there is nothing to fan out: the poll alone moves the watermark on
      // (see subscribe), which spares a query per committed change.
      onNotification: () => {
        if (this.subscribers.size > 0) this.wakeup.wake();
      },
      onConnect: () => this.wakeup.wake(),
      logger: options.logger,
    });
  }

  async start(): Promise<void> {
    this.watermark = await currentWatermark(this.options.db);
    this.listener.start();
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wakeup.wake();
    await this.loop;
    await this.listener.stop();
    for (const s of this.subscribers) this.end(s);
  }

  /**
   * Events from now on that `filter` selects; with `afterSeq` (an SSE Last-Event-ID), first the
   * retained events after it. The live part starts at the hub's watermark, which may be up to a
   * poll interval old when nobody was subscribed: a new subscriber may then also get events of
   * the moments before it came, never fewer than it asked for.
   */
  subscribe(filter: EventFilter, afterSeq?: number): Subscription {
    const subscriber: Subscriber = { filter, queue: [], replaying: afterSeq !== undefined, closed: false };
    this.subscribers.add(subscriber);
    // Live batches cover transactions from the current watermark on; the replay covers those before it.
    const replayBefore = this.watermark!;
    if (afterSeq !== undefined) {
      void readEventsAfter(this.options.db, { afterSeq, beforeXid: replayBefore, filter: streamFilter(filter), limit: REPLAY_LIMIT })
        .then((missed) => subscriber.queue.unshift(...missed.filter((e) => matches(filter, e))))
        .catch((error: unknown) => {
          this.options.logger.warn({ err: error }, 'event replay failed');
          this.end(subscriber);
        })
        .finally(() => {
          subscriber.replaying = false;
          subscriber.notify?.();
        });
    }
    const hub = this;
    return {
      close: () => hub.end(subscriber),
      async *[Symbol.asyncIterator]() {
        try {
          while (!subscriber.closed) {
            if (!subscriber.replaying && subscriber.queue.length > 0) {
              yield subscriber.queue.shift()!;
              continue;
            }
            await new Promise<void>((resolve) => (subscriber.notify = resolve));
            subscriber.notify = undefined;
          }
        } finally {
          hub.end(subscriber);
        }
      },
    };
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  private end(subscriber: Subscriber): void {
    subscriber.closed = true;
    this.subscribers.delete(subscriber);
    subscriber.notify?.();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.fanOut();
      } catch (error) {
        this.options.logger.warn({ err: error }, 'event fan-out failed; retrying');
      }
      await this.wakeup.wait(this.options.pollMs);
    }
  }

  private async fanOut(): Promise<void> {
    const next = await currentWatermark(this.options.db);
    if (next === this.watermark) return;
    // Without subscribers there is nobody to read for; just move on.
    const events =
      this.subscribers.size === 0 ? [] : await readEventsBetween(this.options.db, { fromXid: this.watermark!, toXid: next });
    this.watermark = next;
    for (const event of events) {
      for (const s of this.subscribers) {
        if (!matches(s.filter, event)) continue;
        if (s.queue.length >= MAX_QUEUED) {
          this.options.logger.warn({ filter: s.filter }, 'dropping a live subscriber that stopped reading');
          this.end(s);
          continue;
        }
        s.queue.push(event);
        s.notify?.();
      }
    }
  }
}
