/**
 * The dispatcher loop: claim what the caps allow → call the Inference Bridge → record the outcome.
 * Every decision that must hold across replicas (caps, claims, leases, exactly-once recording) is
 * made in PostgreSQL by src/db/dispatch.ts; this loop only drives it. It polls every
 * POLL_INTERVAL_MS and is woken sooner by NOTIFY, which is only a hint: polling is the truth.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Config } from '../config.js';
import type { Db } from '../db/client.js';
import {
  claimItems,
  extendLeases,
  failJobsWithBrokenDependencies,
  listClaimableJobs,
  recordItemFailure,
  recordItemSuccess,
  releaseItems,
  rescueExpiredLeases,
  startRunnableJobs,
  type ClaimedItem,
} from '../db/dispatch.js';
import { CANCEL_CHANNEL, WORK_CHANNEL } from '../db/jobs.js';
import { PgListener } from '../db/listener.js';
import { requestContext, type Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { classifyError, PermanentError } from './errors.js';
import { Wakeup } from './wakeup.js';
import { createInferenceBridge, type InferenceBridge } from './inference.js';
import { backoffMs, canRetry, type RetryPolicy } from './retry.js';

/** Why an in-flight call was aborted; only a shutdown gives the item back. */
type AbortReason = 'cancelled' | 'lost' | 'shutdown';

interface InFlight {
  item: ClaimedItem;
  controller: AbortController;
  /** performance.now() by which the lease has surely expired unless renewed: abort before then. */
  leaseDeadline: number;
}

// Cancelled job ids remembered for calls claimed just before the cancel whose NOTIFY came first.
const REMEMBERED_CANCELS = 1000;

export interface DispatcherOptions {
  db: Db;
  /** Connection string for the LISTEN connection. */
  databaseUrl: string;
  config: Config;
  logger: Logger;
  metrics?: Pick<Metrics, 'itemOutcomes' | 'bridgeCalls' | 'dispatchRounds'>;
}

export class Dispatcher {
  private readonly db: Db;
  private readonly config: Config;
  private readonly logger: Logger;
  private readonly metrics: DispatcherOptions['metrics'];
  private readonly bridge: InferenceBridge;
  private readonly retry: RetryPolicy;
  private readonly leaseMs: number;
  private readonly owner: string;
  private readonly inFlight = new Map<string, InFlight>();
  private readonly runs = new Set<Promise<void>>();
  private readonly cancelledJobs = new Set<string>();
  private readonly wakeup = new Wakeup();
  private readonly listener: PgListener;
  private readonly leaseTimer: NodeJS.Timeout;
  /** The lease renewal in progress, if any; stop() waits for it before the database closes. */
  private renewal: Promise<void> | undefined;
  private stopping = false;
  /** A NOTIFY said jobs may start (create, retry, a finished job ...) since the last full round. */
  private queueChanged = true;
  private lastFullRound = 0;
  /** Jobs in which an item of ours finished since the last round: a slot there is free. */
  private readonly freedJobs = new Set<string>();
  private readonly loop: Promise<void>;

  constructor(options: DispatcherOptions) {
    const { config } = options;
    this.db = options.db;
    this.config = config;
    this.owner = config.REPLICA_ID;
    this.metrics = options.metrics;
    this.logger = options.logger.child({ component: 'dispatcher', replica: this.owner });
    this.bridge = createInferenceBridge({
      url: config.INFERENCE_BRIDGE_URL!,
      timeoutMs: config.BRIDGE_TIMEOUT_MS,
      workspacePath: config.WORKSPACE_PATH,
      secretsKey: config.SECRETS_KEY,
    });
    this.retry = { maxAttempts: config.MAX_ATTEMPTS, baseMs: config.RETRY_BASE_MS, maxMs: config.RETRY_MAX_MS };
    this.leaseMs = config.LEASE_SECONDS * 1000;
    this.listener = new PgListener({
      url: options.databaseUrl,
      channels: [WORK_CHANNEL, CANCEL_CHANNEL],
      onNotification: (channel, payload) => {
        if (channel === CANCEL_CHANNEL) this.abortJob(payload);
        else this.queueChanged = true;
        this.wakeup.wake();
      },
      // Whatever was notified while the connection was down: look now.
      onConnect: () => {
        this.queueChanged = true;
        this.wakeup.wake();
      },
      logger: this.logger,
    });
    this.listener.start();
    // A third of the lease: two renewals can fail before another replica may take the item.
    this.leaseTimer = setInterval(() => {
      if (this.renewal || this.inFlight.size === 0) return;
      this.renewal = this.renewLeases().finally(() => (this.renewal = undefined));
    }, Math.max(1, Math.floor(this.leaseMs / 3)));
    this.loop = this.run();
    this.logger.info(
      {
        bridge: config.INFERENCE_BRIDGE_URL,
        maxConcurrentJobs: config.MAX_CONCURRENT_JOBS,
        maxConcurrentItems: config.MAX_CONCURRENT_ITEMS,
        pollIntervalMs: config.POLL_INTERVAL_MS,
        leaseSeconds: config.LEASE_SECONDS,
      },
      'dispatcher started',
    );
  }

  /**
   * Graceful stop: no more claims; in-flight calls get `graceMs` to finish and be recorded; the
   * rest are aborted and their items released (pending again, the attempt not counted), so
   * another replica takes them at once instead of after the lease.
   */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    this.wakeup.wake();
    await this.loop;
    if (this.inFlight.size > 0) {
      this.logger.info({ items: this.inFlight.size, graceMs }, 'waiting for in-flight items');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.settled(), new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]);
      clearTimeout(timer);
      const left = [...this.inFlight.values()];
      for (const entry of left) this.abort(entry, 'shutdown');
      await this.settled();
      const ids = left.map((e) => e.item.itemId);
      if (ids.length > 0) {
        const released = await releaseItems(this.db, { owner: this.owner, itemIds: ids }).catch((error: unknown) => {
          this.logger.error({ err: error }, 'could not release items; they return when their lease expires');
          return 0;
        });
        this.logger.info({ released, aborted: ids.length }, 'released unfinished items for other replicas');
      }
    }
    clearInterval(this.leaseTimer);
    await this.renewal;
    await this.listener.stop();
    this.logger.info('dispatcher stopped');
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      const endRound = this.metrics?.dispatchRounds.startTimer();
      try {
        await this.round();
      } catch (error) {
        this.logger.error({ err: error }, 'dispatch round failed; trying again after the poll interval');
        // Back off to normal polling rather than spinning on wake-ups while the database is away.
        this.wakeup.clear();
      } finally {
        endRound?.();
      }
      if (this.stopping) break;
      await this.wakeup.wait(this.config.POLL_INTERVAL_MS);
    }
  }

  /**
   * One pass: sweep and start jobs, then claim and launch what each running job's cap allows. A
   * wake-up for slots freed here only claims in those jobs; the sweep, the start and the look at
   * every job run when the queue changed or a poll interval has passed. That keeps the queries
   * per finished item few.
   */
  private async round(): Promise<void> {
    const freed = [...this.freedJobs];
    this.freedJobs.clear();
    const full = this.queueChanged || performance.now() - this.lastFullRound >= this.config.POLL_INTERVAL_MS;
    if (full) {
      this.queueChanged = false;
      this.lastFullRound = performance.now();
      const rescued = await rescueExpiredLeases(this.db, this.config.MAX_ATTEMPTS);
      if (rescued.retried + rescued.failed > 0) this.logger.warn(rescued, 'rescued items whose lease expired');
      for (const failed of await failJobsWithBrokenDependencies(this.db)) {
        this.logger.warn(failed, 'job failed: a dependency did not complete');
      }
      for (const jobId of await startRunnableJobs(this.db, this.config.MAX_CONCURRENT_JOBS)) {
        this.logger.info({ jobId }, 'job started');
      }
    }
    const jobIds = full ? await listClaimableJobs(this.db, this.config.MAX_CONCURRENT_ITEMS) : freed;
    for (const jobId of jobIds) {
      if (this.stopping) return;
      const claimedAt = performance.now();
      const items = await claimItems(this.db, {
        jobId,
        owner: this.owner,
        leaseSeconds: this.config.LEASE_SECONDS,
        maxRunningPerJob: this.config.MAX_CONCURRENT_ITEMS,
        sliceItems: this.config.FAIR_SHARE_SLICE_ITEMS,
      });
      for (const item of items) this.launch(item, claimedAt);
    }
  }

  private launch(item: ClaimedItem, claimedAt: number): void {
    // The lease was set by the database after claimedAt, so this deadline comes no later than it.
    const entry: InFlight = { item, controller: new AbortController(), leaseDeadline: claimedAt + this.leaseMs };
    this.inFlight.set(item.itemId, entry);
    if (this.cancelledJobs.has(item.jobId)) this.abort(entry, 'cancelled');
    const requestId = item.requestId ?? randomUUID();
    const run = requestContext
      .run({ requestId }, () => this.execute(entry, requestId))
      .catch((error: unknown) => {
        // Left running under our lease: the rescue sweep retries it once the lease expires.
        this.logger.error({ err: error, itemId: item.itemId, jobId: item.jobId }, 'could not record an item outcome');
      })
      .finally(() => {
        this.inFlight.delete(item.itemId);
        this.runs.delete(run);
        this.freedJobs.add(item.jobId);
        this.wakeup.wake();
      });
    this.runs.add(run);
  }

  private async execute({ item, controller }: InFlight, requestId: string): Promise<void> {
    const log = { itemId: item.itemId, jobId: item.jobId, attempt: item.attempts };
    const started = performance.now();
    try {
      if (controller.signal.aborted) throw controller.signal.reason;
      const caption = await this.bridge.caption(item, { signal: controller.signal, requestId });
      const processingTime = Math.round(performance.now() - started);
      this.metrics?.bridgeCalls.observe({ outcome: 'ok' }, processingTime / 1000);
      const recorded = await recordItemSuccess(this.db, {
        itemId: item.itemId,
        jobId: item.jobId,
        owner: this.owner,
        processingTime,
        ...caption,
      });
      if (recorded) this.metrics?.itemOutcomes.inc({ outcome: 'completed' });
      this.logger.debug({ ...log, processingTime, recorded }, recorded ? 'item completed' : 'late result discarded');
    } catch (error) {
      if (controller.signal.aborted) {
        this.metrics?.bridgeCalls.observe({ outcome: 'aborted' }, (performance.now() - started) / 1000);
        this.logger.debug({ ...log, reason: controller.signal.reason as AbortReason }, 'bridge call aborted');
        return;
      }
      await this.recordFailure(item, error, Math.round(performance.now() - started));
    }
  }

  private async recordFailure(item: ClaimedItem, error: unknown, processingTime: number): Promise<void> {
    const failure = classifyError(error, this.config.BRIDGE_TIMEOUT_MS);
    const permanent = failure instanceof PermanentError;
    this.metrics?.bridgeCalls.observe({ outcome: permanent ? 'permanent' : 'transient' }, processingTime / 1000);
    const retry = !permanent && canRetry(item.attempts, this.retry);
    const message =
      retry || failure instanceof PermanentError ? failure.message : `${failure.message} (gave up after ${item.attempts} attempts)`;
    const retryInMs = retry ? backoffMs(item.attempts, this.retry) : null;
    const recorded = await recordItemFailure(this.db, {
      itemId: item.itemId,
      jobId: item.jobId,
      owner: this.owner,
      processingTime,
      error: message,
      retryInMs,
    });
    if (recorded) this.metrics?.itemOutcomes.inc({ outcome: retry ? 'retried' : 'failed' });
    this.logger.warn(
      { itemId: item.itemId, jobId: item.jobId, attempt: item.attempts, error: message, retryInMs, recorded },
      retry ? 'item attempt failed; will retry' : 'item failed',
    );
  }

  /** Renews the leases of everything in flight; aborts calls whose item is no longer ours. */
  private async renewLeases(): Promise<void> {
    const sentAt = performance.now();
    try {
      const { renewed, lost } = await extendLeases(this.db, {
        owner: this.owner,
        itemIds: [...this.inFlight.keys()],
        leaseSeconds: this.config.LEASE_SECONDS,
      });
      for (const id of renewed) {
        const entry = this.inFlight.get(id);
        if (entry) entry.leaseDeadline = sentAt + this.leaseMs;
      }
      for (const id of lost) {
        const entry = this.inFlight.get(id);
        if (entry) this.abort(entry, 'lost');
      }
    } catch (error) {
      this.logger.warn({ err: error }, 'could not renew leases');
    }
    // Renewal kept failing: another replica may take these items any moment, so stop calling.
    const now = performance.now();
    for (const entry of this.inFlight.values()) if (entry.leaseDeadline <= now) this.abort(entry, 'lost');
  }

  private abortJob(jobId: string): void {
    this.cancelledJobs.add(jobId);
    if (this.cancelledJobs.size > REMEMBERED_CANCELS) this.cancelledJobs.delete(this.cancelledJobs.values().next().value!);
    for (const entry of this.inFlight.values()) if (entry.item.jobId === jobId) this.abort(entry, 'cancelled');
  }

  private abort(entry: InFlight, reason: AbortReason): void {
    if (!entry.controller.signal.aborted) entry.controller.abort(reason);
  }

  private settled(): Promise<unknown> {
    return Promise.all([...this.runs]);
  }
}
