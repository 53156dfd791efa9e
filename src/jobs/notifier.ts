/**
 * Delivers the outbox to the message broker: `POST {MESSAGE_BROKER_URL}/events`, one event per
 * request, at least once, in order per stream (one event of a stream out at a time, across all
 * replicas), retried with backoff while the broker is down. Without a broker, events only serve
 * live subscribers and are marked delivered. Delivered events are pruned after a retention period.
 * It also rolls up the captions jobs stored into their events.
 */
import ky, { HTTPError } from 'ky';
import type { Config } from '../config.js';
import type { Db } from '../db/client.js';
import { rollUpCaptionChanges } from '../db/data-events.js';
import { PgListener } from '../db/listener.js';
import {
  claimDeliverable,
  discardUndelivered,
  eventMessage,
  EVENTS_CHANNEL,
  expireUndelivered,
  markDead,
  markDelivered,
  markDeliveryFailed,
  pruneDelivered,
  type OutboxEvent,
} from '../db/outbox.js';
import type { Logger } from '../logger.js';
import { backoffMs } from './retry.js';
import { Wakeup } from './wakeup.js';

/** Events leased per round; streams are sent in parallel, each stream one event at a time. */
const BATCH = 100;
const PRUNE_EVERY_MS = 10 * 60_000;
const EXPIRE_EVERY_MS = 60_000;

/** The broker's answer says it will not take this event, whatever we do (not 408 nor 429: those say "later"). */
const refusedForGood = (error: unknown) =>
  error instanceof HTTPError && error.response.status >= 400 && error.response.status < 500 && ![408, 429].includes(error.response.status);

export interface NotifierOptions {
  db: Db;
  config: Config;
  logger: Logger;
  /** Connection string for LISTEN. */
  databaseUrl: string;
  /** Reports each delivery outcome (metrics): `dead` is an event moved aside. */
  onDelivery?: (outcome: 'delivered' | 'failed' | 'dead', count?: number) => void;
}

export class Notifier {
  private readonly wakeup = new Wakeup();
  private readonly listener: PgListener;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private lastPrune = 0;
  private lastExpiry = 0;
  private lastRollUp = 0;
  private readonly send?: (event: OutboxEvent) => Promise<void>;

  constructor(private readonly options: NotifierOptions) {
    const { config } = options;
    this.listener = new PgListener({
      url: options.databaseUrl,
      channels: [EVENTS_CHANNEL],
      onNotification: () => this.wakeup.wake(),
      onConnect: () => this.wakeup.wake(),
      logger: options.logger,
    });
    if (config.MESSAGE_BROKER_URL) {
      const client = ky.create({ prefixUrl: config.MESSAGE_BROKER_URL, timeout: config.BROKER_TIMEOUT_MS, retry: 0 });
      this.send = async (event) => {
        await client.post('events', {
          json: eventMessage(event),
          headers: event.requestId ? { 'x-request-id': event.requestId } : {},
        });
      };
    }
  }

  start(): void {
    // Without a broker, undelivered events are only marked delivered, which the poll does often
    // enough: no need to wake on every committed change.
    if (this.send) this.listener.start();
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wakeup.wake();
    await this.loop;
    await this.listener.stop();
  }

  private async run(): Promise<void> {
    const { db, config, logger } = this.options;
    while (!this.stopped) {
      let busy = false;
      try {
        await this.rollUpCaptions();
        if (this.send) busy = (await this.deliverRound()) === BATCH;
        else await discardUndelivered(db);
        if (this.send && config.EVENT_MAX_UNDELIVERED_HOURS > 0 && Date.now() - this.lastExpiry > EXPIRE_EVERY_MS) {
          this.lastExpiry = Date.now();
          const expired = await expireUndelivered(db, config.EVENT_MAX_UNDELIVERED_HOURS);
          if (expired > 0) {
            this.options.onDelivery?.('dead', expired);
            logger.error({ expired, hours: config.EVENT_MAX_UNDELIVERED_HOURS }, 'events undelivered too long were moved aside as dead letters');
          }
        }
        if (Date.now() - this.lastPrune > PRUNE_EVERY_MS) {
          this.lastPrune = Date.now();
          const pruned = await pruneDelivered(db, config.EVENT_RETENTION_HOURS);
          if (pruned > 0) logger.info({ pruned }, 'pruned delivered events');
        }
      } catch (error) {
        logger.warn({ err: error }, 'event delivery round failed');
      }
      if (!busy) await this.wakeup.wait(Math.min(config.NOTIFIER_POLL_MS, config.CAPTION_EVENT_ROLLUP_MS));
    }
  }

  /** Every CAPTION_EVENT_ROLLUP_MS, the captions jobs stored since become events (src/db/data-events.ts). */
  private async rollUpCaptions(): Promise<void> {
    if (Date.now() - this.lastRollUp < this.options.config.CAPTION_EVENT_ROLLUP_MS) return;
    this.lastRollUp = Date.now();
    while ((await rollUpCaptionChanges(this.options.db)) > 0 && !this.stopped);
  }

  /** One round: lease each stream's next event, send them, record the outcomes. Returns how many. */
  private async deliverRound(): Promise<number> {
    const { db, config, logger } = this.options;
    const events = await claimDeliverable(db, { owner: config.REPLICA_ID, limit: BATCH, leaseMs: config.BROKER_TIMEOUT_MS * 2 });
    const delivered: { id: number; seq: number }[] = [];
    await Promise.all(
      events.map(async (event) => {
        try {
          await this.send!(event);
          delivered.push({ id: event.id, seq: event.seq });
          this.options.onDelivery?.('delivered');
        } catch (error) {
          this.options.onDelivery?.('failed');
          if (refusedForGood(error) && event.attempts >= config.BROKER_MAX_REFUSALS) {
            if (await markDead(db, { id: event.id, seq: event.seq, error: (error as Error).message })) {
              this.options.onDelivery?.('dead');
              logger.error({ eventId: event.eventId, type: event.type, attempts: event.attempts, err: error }, 'the broker refuses this event: moved aside as a dead letter');
              return;
            }
          }
          const retryInMs = backoffMs(event.attempts, { maxAttempts: Infinity, baseMs: config.RETRY_BASE_MS, maxMs: config.RETRY_MAX_MS });
          logger.warn({ eventId: event.eventId, type: event.type, err: error, retryInMs }, 'event delivery failed; will retry');
          await markDeliveryFailed(db, { id: event.id, seq: event.seq, error: (error as Error).message, retryInMs });
        }
      }),
    );
    await markDelivered(db, delivered);
    if (delivered.length > 0) this.wakeup.wake();
    return events.length;
  }
}
