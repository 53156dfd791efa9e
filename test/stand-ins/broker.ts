/**
 * A stand-in message broker: a real HTTP server on loopback that takes `POST /events` (README, "Following jobs live") and
 * records what arrives. It can answer 500, or go down (connections refused) and come back on the
 * same port.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface ReceivedEvent {
  id: string;
  seq: number;
  type: string;
  occurredAt: string;
  jobId: string | null;
  data: Record<string, unknown>;
  requestId: string | null;
  /** The X-Request-Id header of the delivery. */
  headerRequestId?: string;
}

export type BrokerMode = 'up' | 'error';

/** The outbox stream an event was sent in (its order is kept within it): a job's, or an entity type's. */
export function streamOf(event: { type: string; jobId: string | null; data: Record<string, unknown> }): string {
  return event.type.startsWith('JOB_') ? `job:${event.jobId}` : `data:${String(event.data.entity)}`;
}

export class StandInBroker {
  /** Every delivery that was acknowledged, in arrival order (repeats included). */
  readonly received: ReceivedEvent[] = [];
  /** Deliveries answered with an error. */
  refused = 0;
  /** Most deliveries of one stream (job) in flight at once. */
  maxInFlightPerStream = 0;
  mode: BrokerMode = 'up';
  /** Events it answers 400 for, whatever the mode (a broker that will never take them). */
  rejects: (event: ReceivedEvent) => boolean = () => false;
  rejected = 0;
  private server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly inFlight = new Map<string, number>();
  private port = 0;

  private constructor(private readonly delayMs: number) {
    this.server = this.create();
  }

  static async start(options: { delayMs?: number } = {}): Promise<StandInBroker> {
    const broker = new StandInBroker(options.delayMs ?? 0);
    await broker.listen();
    return broker;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Unique events acknowledged, by id, in first-arrival order. */
  unique(): ReceivedEvent[] {
    const seen = new Set<string>();
    return this.received.filter((e) => (seen.has(e.id) ? false : (seen.add(e.id), true)));
  }

  /** Stops listening: deliveries are refused until `up()`. */
  async down(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const socket of this.sockets) socket.destroy();
    });
  }

  async up(): Promise<void> {
    this.server = this.create();
    await this.listen();
  }

  async close(): Promise<void> {
    if (this.server.listening) await this.down();
  }

  private create(): Server {
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (chunk) => (body += String(chunk)));
      req.on('end', async () => {
        if (req.method !== 'POST' || req.url !== '/events') {
          res.writeHead(404).end();
          return;
        }
        const event = JSON.parse(body) as ReceivedEvent;
        const stream = streamOf(event);
        const now = (this.inFlight.get(stream) ?? 0) + 1;
        this.inFlight.set(stream, now);
        this.maxInFlightPerStream = Math.max(this.maxInFlightPerStream, now);
        if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
        this.inFlight.set(stream, (this.inFlight.get(stream) ?? 1) - 1);
        if (this.rejects(event)) {
          this.rejected += 1;
          res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"schema violation"}');
          return;
        }
        if (this.mode === 'error') {
          this.refused += 1;
          res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"broker is unwell"}');
          return;
        }
        this.received.push({ ...event, headerRequestId: req.headers['x-request-id'] as string | undefined });
        res.writeHead(202).end();
      });
    });
    server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    return server;
  }

  private async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (this.server.address() as AddressInfo).port;
  }
}
