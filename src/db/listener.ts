/**
 * LISTEN on a dedicated connection (a pooled one would lose its LISTENs when released), reconnecting
 * after errors. Notifications are hints that can be missed while it reconnects, so `onConnect`
 * runs after every (re)connection to let the user catch up by polling.
 */
import pg from 'pg';
import type { Logger } from '../logger.js';

export interface ListenerOptions {
  url: string;
  channels: readonly string[];
  onNotification(channel: string, payload: string): void;
  onConnect(): void;
  logger: Logger;
  /** How the connection shows in pg_stat_activity (the dispatchers count each other by it). */
  applicationName?: string;
}

// Reconnect delays: 0.5 s, doubling to at most 30 s while the database stays away.
const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 30_000;

export class PgListener {
  private client: pg.Client | undefined;
  private stopped = false;
  private retryMs = FIRST_RETRY_MS;
  private retryTimer: NodeJS.Timeout | undefined;
  private applicationName: string;

  constructor(private readonly options: ListenerOptions) {
    this.applicationName = options.applicationName ?? 'graphcap-data-service-listener';
  }

  start(): void {
    void this.connect();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }

  /** Renames the connection, now and after a reconnect; a failure only leaves the old name until then. */
  async rename(applicationName: string): Promise<void> {
    this.applicationName = applicationName;
    await this.client?.query(`select set_config('application_name', $1, false)`, [applicationName]).catch(() => undefined);
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.options.url, application_name: this.applicationName });
    client.on('notification', (message) => this.options.onNotification(message.channel, message.payload ?? ''));
    client.on('error', (error) => this.lost(client, error));
    client.on('end', () => this.lost(client));
    this.client = client;
    try {
      await client.connect();
      for (const channel of this.options.channels) await client.query(`listen ${client.escapeIdentifier(channel)}`);
    } catch (error) {
      this.lost(client, error);
      return;
    }
    if (this.client !== client) return;
    this.retryMs = FIRST_RETRY_MS;
    this.options.logger.debug({ channels: this.options.channels }, 'listening for notifications');
    this.options.onConnect();
  }

  /** The connection failed or ended: drop it and try again later, once per connection. */
  private lost(client: pg.Client, error?: unknown): void {
    if (this.client !== client) return;
    this.client = undefined;
    client.end().catch(() => undefined);
    if (this.stopped) return;
    this.options.logger.warn({ err: error, retryInMs: this.retryMs }, 'notification connection lost; polling only until it is back');
    this.retryTimer = setTimeout(() => void this.connect(), this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
  }
}
