/**
 * Live fan-out of committed events to this process's subscribers (SSE and the tRPC subscription),
 * whatever replica wrote them: woken by LISTEN, backed by polling. Reads advance by transaction
 * watermark (src/db/outbox.ts), so an event whose transaction commits late still arrives.
 */
import type { Db } from '../db/client.js';
import { PgListener } from '../db/listener.js';
import { dataStream, type DataEntity } from '../db/data-events.js';
import { currentWatermark, EVENTS_CHANNEL, readEventsAfter, readEventsBetween, type OutboxEvent, type StreamFilter } from '../db/outbox.js';
import { TooManyError } from '../errors.js';
import type { Logger } from '../logger.js';
import { Wakeup } from './wakeup.js';

/** Events a resuming subscriber's replay reads at a time, as it takes them. */
const REPLAY_PAGE = 200;
/**
 * Bytes of live events (their JSON) a subscriber may have waiting; one that falls further behind
 * (it stopped reading, or reads slower than events come) is dropped, and can resume with its last
 * event id. A bound in bytes, since a data event may list a thousand ids.
 */
const MAX_QUEUED_BYTES = 4 * 1024 * 1024;

export interface Subscription extends AsyncIterable<OutboxEvent> {
  close(): void;
  /** Why the hub ended it, when it did (not when the reader closed it). */
  readonly droppedBecause: string | undefined;
  /** Settles when it ends, whoever ends it. */
  readonly ended: Promise<void>;
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
  owner: string;
  /** Live events, with their size; held back until the replay is out. */
  queue: { event: OutboxEvent; bytes: number }[];
  queuedBytes: number;
  notify?: () => void;
  closed: boolean;
  droppedBecause?: string;
  ended: Promise<void>;
  resolveEnded: () => void;
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
    private readonly options: {
      db: Db;
      databaseUrl: string;
      logger: Logger;
      pollMs: number;
      /** Subscribers at most, in all and per owner (a token's scope). */
      maxSubscribers: number;
      maxPerOwner: number;
      /** Told the number of subscribers when it changes, and of each one dropped (metrics). */
      onSubscribers?: (count: number) => void;
      onDropped?: () => void;
    },
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
  subscribe(filter: EventFilter, afterSeq?: number, owner = 'anonymous'): Subscription {
    const { maxSubscribers, maxPerOwner } = this.options;
    if (this.subscribers.size >= maxSubscribers) throw new TooManyError(`this service follows ${maxSubscribers} event streams already; try again later`);
    let owned = 0;
    for (const s of this.subscribers) if (s.owner === owner) owned += 1;
    if (owned >= maxPerOwner) throw new TooManyError(`this token follows ${maxPerOwner} event streams already; close one first`);
    let resolveEnded!: () => void;
    const ended = new Promise<void>((resolve) => (resolveEnded = resolve));
    const subscriber: Subscriber = { filter, owner, queue: [], queuedBytes: 0, closed: false, ended, resolveEnded };
    this.subscribers.add(subscriber);
    this.options.onSubscribers?.(this.subscribers.size);
    // Live batches cover transactions from the current watermark on; the replay covers those before it.
    const replayBefore = this.watermark!;
    const hub = this;
    return {
      close: () => hub.end(subscriber),
      get droppedBecause() {
        return subscriber.droppedBecause;
      },
      ended,
      async *[Symbol.asyncIterator]() {
        try {
          // What was missed, a page at a time as the reader takes it, up to where the live part starts.
          for (let after = afterSeq; after !== undefined && !subscriber.closed; ) {
            const page = await hub.replayPage(subscriber, after, replayBefore);
            for (const event of page) if (matches(filter, event) && !subscriber.closed) yield event;
            after = page.length === REPLAY_PAGE ? page.at(-1)!.seq : undefined;
          }
          while (!subscriber.closed) {
            const next = subscriber.queue.shift();
            if (next) {
              subscriber.queuedBytes -= next.bytes;
              yield next.event;
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

  private async replayPage(subscriber: Subscriber, afterSeq: number, beforeXid: string): Promise<OutboxEvent[]> {
    try {
      return await readEventsAfter(this.options.db, { afterSeq, beforeXid, filter: streamFilter(subscriber.filter), limit: REPLAY_PAGE });
    } catch (error) {
      this.options.logger.warn({ err: error }, 'event replay failed');
      this.end(subscriber, 'the replay of missed events failed; resume with the last event id');
      return [];
    }
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  private end(subscriber: Subscriber, reason?: string): void {
    if (subscriber.closed) return;
    if (reason) {
      subscriber.droppedBecause = reason;
      this.options.onDropped?.();
    }
    subscriber.closed = true;
    subscriber.queue = [];
    subscriber.queuedBytes = 0;
    subscriber.resolveEnded();
    this.subscribers.delete(subscriber);
    this.options.onSubscribers?.(this.subscribers.size);
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
      let bytes: number | undefined;
      for (const s of this.subscribers) {
        if (!matches(s.filter, event)) continue;
        bytes ??= Buffer.byteLength(JSON.stringify(event.data)) + 200;
        if (s.queuedBytes + bytes > MAX_QUEUED_BYTES) {
          this.options.logger.warn({ filter: s.filter }, 'dropping a live subscriber that fell behind');
          this.end(s, 'fell too far behind the events; resume with the last event id');
          continue;
        }
        s.queue.push({ event, bytes });
        s.queuedBytes += bytes;
        s.notify?.();
      }
    }
  }
}
