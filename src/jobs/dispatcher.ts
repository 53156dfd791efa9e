/**
 * The dispatcher loop: record what finished and claim what the caps allow → call the Inference
 * Bridge → hand the outcome back to the loop. Every decision that must hold across replicas (caps,
 * claims, leases, exactly-once recording) is made in PostgreSQL by src/db/dispatch.ts; this loop
 * only drives it. It polls every POLL_INTERVAL_MS and is woken sooner by NOTIFY, which is only a
 * hint: polling is the truth.
 *
 * Outcomes are not recorded by the call that produced them but by the loop, all that arrived since
 * its last round in one transaction that also claims the next items (group commit). While one
 * round's transaction runs, the next round's outcomes gather, so the batch grows with the load and
 * a lone item is recorded at once.
 *
 * Slots are handed on without waiting for a round: each job keeps a reserve of pending items leased
 * to this replica, and a call that ends well starts the next reserved item of its job at once, in
 * the slot it leaves. The round that records the ended item makes the started one running in the
 * same statement (src/db/dispatch.ts), so the database never counts fewer running items than there
 * are calls and the caps hold across replicas; a call's cycle is then the bridge call alone, not the
 * bridge call plus a commit.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Config } from '../config.js';
import type pg from 'pg';
import { withPreparedStatements, type Db } from '../db/client.js';
import {
  dispatcherConnectionName,
  extendLeases,
  failJobsWithBrokenDependencies,
  recordAndClaim,
  recordAndSwap,
  releaseItems,
  rescueExpiredLeases,
  STOPPING_DISPATCHER,
  type ClaimedItem,
  type ItemOutcome,
  type ItemRef,
  type RecordAndClaimResult,
  type RecordAndSwapResult,
  type ReserveState,
} from '../db/dispatch.js';
import { CANCEL_CHANNEL, JOB_FINISHED, PROVIDERS_CHANNEL, WORK_CHANNEL } from '../db/channels.js';
import { PgListener } from '../db/listener.js';
import { pauseJobsOfBlockedProviders, pauseJobWithReason } from '../db/provider-pauses.js';
import { providerKey, type ProviderBudget, type ProviderSettings } from '../db/provider-states.js';
import { countDispatchers } from '../db/dispatch.js';
import { markProviderMisconfigured } from '../db/providers.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import type { BridgeState } from './bridge-monitor.js';
import {
  BridgeIncompatibleError,
  classifyError,
  PermanentError,
  ProviderAuthError,
  ProviderUnavailableError,
  ReplicaError,
  ThrottledError,
  TimedOutError,
} from './errors.js';
import { Wakeup } from './wakeup.js';
import type { InferenceBridge } from './inference.js';
import type { ProviderPacer } from './provider-pacer.js';
import type { ProviderRegistry } from './provider-registry.js';
import { backoffMs, canRetry, type RetryPolicy } from './retry.js';

/** Why an in-flight call was aborted; only a shutdown gives the item back. */
type AbortReason = 'cancelled' | 'lost' | 'shutdown';

/** An item this replica holds, from its claim until its outcome is recorded. */
interface InFlight {
  item: ClaimedItem;
  controller: AbortController;
  /** performance.now() by which the lease has surely expired unless renewed: abort before then. */
  leaseDeadline: number;
  /** Its call began from the reserve and no round has made it running yet (its row is still pending). */
  reserved: boolean;
  image?: Promise<string>;
}

/** An item of a job's reserve: pending, leased to this replica, not called yet. */
interface Reserved {
  item: ClaimedItem;
  leaseDeadline: number;
  /** Its image's path, resolved while it waits (a file system round trip less when its call begins). */
  image: Promise<string>;
}

/** A job's reserve and whether the last round that looked at the job let its slots be handed on. */
interface JobReserve {
  items: Reserved[];
  flowing: boolean;
}

// Reserved items per slot a job holds here: enough that a slot does not run dry between two rounds
// when calls end several times faster than a round commits (an instant bridge: ~1.5 ms a call
// against ~6 ms a round on the 2-core bench machine).
const RESERVE_PER_SLOT = 8;

const ref = (item: ClaimedItem): ItemRef => ({ itemId: item.itemId, jobId: item.jobId });

// Cancelled job ids remembered for calls claimed just before the cancel whose NOTIFY came first.
const REMEMBERED_CANCELS = 1000;

export interface DispatcherOptions {
  db: Db;
  /** The pool behind `db`: the round runs on one of its connections with prepared statements. */
  pool: pg.Pool;
  /** Connection string for the LISTEN connection. */
  databaseUrl: string;
  config: Config;
  logger: Logger;
  metrics?: Pick<Metrics, 'itemOutcomes' | 'bridgeCalls' | 'itemStarts' | 'dispatchRounds'>;
  /** The bridge client (the service owns and closes it). */
  bridge: InferenceBridge;
  /** The stored providers jobs name: dropped from the cache when a replica says one changed. */
  providers: ProviderRegistry;
  /** Providers' stored rate limits. */
  pacer: ProviderPacer;
  /** What the bridge monitor knows: nothing is claimed while the bridge is incompatible. */
  bridgeState?: () => BridgeState;
  /** A caption call met a route the bridge lacks. */
  onMissingRoute?: (detail: string) => void;
}

export class Dispatcher {
  private readonly db: Db;
  private readonly pool: pg.Pool;
  private readonly config: Config;
  private readonly logger: Logger;
  private readonly metrics: DispatcherOptions['metrics'];
  private readonly bridge: InferenceBridge;
  private readonly providers: ProviderRegistry;
  private readonly pacer: ProviderPacer;
  private readonly bridgeState: () => BridgeState;
  private readonly onMissingRoute: (detail: string) => void;
  private readonly retry: RetryPolicy;
  private readonly leaseMs: number;
  private readonly owner: string;
  /** Items held: their call is running, or its outcome waits to be recorded. Their leases are renewed. */
  private readonly inFlight = new Map<string, InFlight>();
  /** Bridge calls still running. */
  private readonly calls = new Set<Promise<void>>();
  /** Outcomes waiting for the next round to record them. */
  private outcomes: ItemOutcome[] = [];
  /** Per job: pending items leased to this replica for the next calls (see the top of this file). */
  private readonly reserves = new Map<string, JobReserve>();
  /** Reserved items to give back in the next round: their job stopped running or its turn ended, or their lease ran low. */
  private toRelease: ItemRef[] = [];
  /** Items whose call a shutdown aborted: given back at the end of stop(). */
  private readonly aborted: string[] = [];
  private readonly cancelledJobs = new Set<string>();
  /** Adaptive dispatch per (provider, model), or undefined for the static caps only. */
  private readonly providerSettings: ProviderSettings | undefined;
  /**
   * performance.now() before which no call goes to a provider (key: providerKey): its Retry-After
   * or open breaker, known here the moment an answer says so, before the next round tells the
   * database and with it the other replicas.
   */
  private readonly providerBlocks = new Map<string, number>();
  /** Stored providers that refused their key here and are being marked misconfigured (providerRefused). */
  private readonly marking = new Set<string>();
  private readonly wakeup = new Wakeup();
  private readonly listener: PgListener;
  private readonly leaseTimer: NodeJS.Timeout;
  /** The lease renewal in progress, if any; stop() waits for it before the database closes. */
  private renewal: Promise<void> | undefined;
  /** No more starts or claims; outcomes are still recorded. */
  private stopping = false;
  /** The calls have settled: the loop records what is left once and ends. */
  private closing = false;
  /** A NOTIFY said jobs may start (create, retry, a finished job ...) since the last full round. */
  private queueChanged = true;
  /** A job finished or was cancelled since the last look at the jobs that depend on others. */
  private jobFinished = true;
  private lastFullRound = 0;
  private lastSweep = 0;
  private readonly loop: Promise<void>;

  constructor(options: DispatcherOptions) {
    const { config } = options;
    this.db = options.db;
    this.pool = options.pool;
    this.config = config;
    this.owner = config.REPLICA_ID;
    this.metrics = options.metrics;
    this.logger = options.logger.child({ component: 'dispatcher', replica: this.owner });
    this.bridge = options.bridge;
    this.providers = options.providers;
    this.pacer = options.pacer;
    this.bridgeState = options.bridgeState ?? (() => 'unknown');
    this.onMissingRoute = options.onMissingRoute ?? (() => {});
    this.retry = { maxAttempts: config.MAX_ATTEMPTS, baseMs: config.RETRY_BASE_MS, maxMs: config.RETRY_MAX_MS };
    this.leaseMs = config.LEASE_SECONDS * 1000;
    this.providerSettings = config.ADAPTIVE_DISPATCH
      ? {
          maxLimit: config.MAX_CONCURRENT_JOBS * config.MAX_CONCURRENT_ITEMS,
          breakerFailures: config.BREAKER_FAILURES,
          cooldownMs: config.BREAKER_COOLDOWN_MS,
          maxCooldownMs: config.BREAKER_MAX_COOLDOWN_MS,
        }
      : undefined;
    this.listener = new PgListener({
      url: options.databaseUrl,
      channels: [WORK_CHANNEL, CANCEL_CHANNEL, PROVIDERS_CHANNEL],
      applicationName: dispatcherConnectionName(this.owner),
      onNotification: (channel, payload) => {
        // A provider changed (a new key, enabled again ...): the next call reads it anew.
        if (channel === PROVIDERS_CHANNEL) this.providers.invalidate();
        if (channel === CANCEL_CHANNEL) this.abortJob(payload);
        if (channel === CANCEL_CHANNEL || payload === JOB_FINISHED) this.jobFinished = true;
        this.queueChanged = true;
        this.wakeup.wake();
      },
      // Whatever was notified while the connection was down: look now.
      onConnect: () => {
        this.providers.invalidate();
        this.queueChanged = true;
        this.jobFinished = true;
        this.wakeup.wake();
      },
      logger: this.logger,
    });
    this.listener.start();
    // A third of the lease: two renewals can fail before another replica may take the item.
    this.leaseTimer = setInterval(() => {
      if (this.renewal || (this.inFlight.size === 0 && this.reserves.size === 0)) return;
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
        adaptiveDispatch: config.ADAPTIVE_DISPATCH,
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
    // No longer counted among the dispatchers: the others' shares of the slots grow at once. Not
    // awaited: a connection that hangs must not hold up the stop (the name goes with it anyway).
    void this.listener.rename(STOPPING_DISPATCHER);
    if (this.calls.size > 0) {
      this.logger.info({ items: this.calls.size, graceMs }, 'waiting for in-flight items');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.settled(), new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]);
      clearTimeout(timer);
      for (const entry of this.inFlight.values()) this.abort(entry, 'shutdown');
      await this.settled();
    }
    this.closing = true;
    this.wakeup.wake();
    await this.loop;
    const reserved = [...this.reserves.values()].flatMap((r) => r.items.map((x) => x.item.itemId)).concat(this.toRelease.map((x) => x.itemId));
    this.reserves.clear();
    if (this.aborted.length + reserved.length > 0) {
      const itemIds = [...this.aborted, ...reserved];
      const released = await releaseItems(this.db, { owner: this.owner, itemIds }).catch((error: unknown) => {
        this.logger.error({ err: error }, 'could not release items; they return when their lease expires');
        return 0;
      });
      this.logger.info({ released, aborted: this.aborted.length, reserved: reserved.length }, 'released unfinished items for other replicas');
    }
    clearInterval(this.leaseTimer);
    await this.renewal;
    await this.listener.stop();
    this.logger.info('dispatcher stopped');
  }

  private async run(): Promise<void> {
    for (;;) {
      const last = this.closing;
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
      if (last) return;
      await this.wakeup.wait(this.config.POLL_INTERVAL_MS);
    }
  }

  /**
   * One pass: record the outcomes gathered since the last round, claim and launch the calls. A full
   * round (the queue changed, or a poll interval passed) also starts jobs and looks at every running
   * job, in one transaction, and then sweeps expired leases and ends jobs with broken dependencies.
   * A wake-up for finished items alone is one statement (recordAndSwap): their slots go to the
   * next items of their jobs, and a full round follows only when the caps may allow more.
   */
  private async round(): Promise<void> {
    // Whether each item's row is still pending, as of now: rounds run one at a time, and only a round's result changes it.
    const outcomes = this.outcomes.map((o): ItemOutcome => ({ ...o, reserved: this.inFlight.get(o.itemId)?.reserved === true }));
    this.outcomes = [];
    const ended = new Set(outcomes.map((o) => o.itemId));
    const promote: ItemRef[] = [];
    for (const entry of this.inFlight.values()) if (entry.reserved && !ended.has(entry.item.itemId)) promote.push(ref(entry.item));
    const release = this.toRelease;
    this.toRelease = [];
    const claim = this.mayStart();
    const now = performance.now();
    const full = claim && (this.queueChanged || now - this.lastFullRound >= this.config.POLL_INTERVAL_MS);
    if (full) {
      this.queueChanged = false;
      this.lastFullRound = now;
    }
    try {
      await this.recordAndLaunch({ outcomes, promote, release }, full, claim);
    } catch (error) {
      // Nothing of the transaction stands: record these next time (they stay ours under the lease).
      this.outcomes = outcomes.concat(this.outcomes);
      this.toRelease = release.concat(this.toRelease);
      throw error;
    }
    // After the calls are launched: a new job's first call does not wait for these.
    if (full) await this.sweep(now);
  }

  /** New calls may begin: not while stopping, nor into a bridge that lacks the caption route. */
  private mayStart(): boolean {
    return !this.stopping && this.bridgeState() !== 'incompatible';
  }

  /** Expired leases, broken dependencies, jobs of blocked providers, the count of replicas: on full rounds. */
  private async sweep(now: number): Promise<void> {
    // Leases last many poll intervals: a sweep per poll interval is soon enough.
    const sweep = now - this.lastSweep >= this.config.POLL_INTERVAL_MS;
    if (sweep) {
      this.lastSweep = now;
      this.pacer.setReplicas(await countDispatchers(this.db, this.owner));
      for (const paused of await pauseJobsOfBlockedProviders(this.db, this.config.PROVIDER_OUTAGE_PAUSE_MINUTES)) {
        this.logger.warn(paused, 'job paused: its provider cannot serve it');
        this.abortReserve(paused.jobId);
      }
      const rescued = await rescueExpiredLeases(this.db, this.config.MAX_ATTEMPTS);
      if (rescued.retried + rescued.failed > 0) {
        this.logger.warn(rescued, 'rescued items whose lease expired');
        // Their slots are free: a full round now, not a poll interval later.
        this.queueChanged = true;
        this.wakeup.wake();
      }
    }
    if (sweep || this.jobFinished) {
      this.jobFinished = false;
      for (const failed of await failJobsWithBrokenDependencies(this.db)) {
        this.logger.warn(failed, 'job failed: a dependency did not complete');
      }
    }
  }

  private async recordAndLaunch(
    handed: { outcomes: ItemOutcome[]; promote: ItemRef[]; release: ItemRef[] },
    full: boolean,
    claim: boolean,
  ): Promise<void> {
    const { outcomes, promote, release } = handed;
    if (outcomes.length + promote.length + release.length === 0 && !full) return;
    const claimedAt = performance.now();
    const caps = {
      owner: this.owner,
      ...handed,
      leaseSeconds: this.config.LEASE_SECONDS,
      maxRunningPerJob: this.config.MAX_CONCURRENT_ITEMS,
      sliceItems: this.config.FAIR_SHARE_SLICE_ITEMS,
      providers: this.providerSettings,
    };
    // A full round's claims, launched before its commit (onClaimed).
    let early: ClaimedItem[] | undefined;
    const onClaimed = (items: ClaimedItem[]) => {
      early = items;
      this.takeClaimed(items, claimedAt);
    };
    let result: RecordAndClaimResult & Partial<Pick<RecordAndSwapResult, 'more' | 'reserved'>>;
    try {
      result = await withPreparedStatements(this.pool, (db) =>
        full || !claim
          ? recordAndClaim(db, { ...caps, startJobsUpTo: full ? this.config.MAX_CONCURRENT_JOBS : undefined, claimIn: [], claim, onClaimed })
          : recordAndSwap(db, { ...caps, reserve: this.reserveWanted(outcomes) }),
      );
    } catch (error) {
      // Launched before a commit that then failed: those items are not ours.
      for (const item of early ?? []) {
        const entry = this.inFlight.get(item.itemId);
        if (entry) this.abort(entry, 'lost');
      }
      throw error;
    }
    const { started, recorded, claimed, promoted, reserves, providers, more, reserved = [] } = result;
    if (more) {
      this.queueChanged = true;
      this.wakeup.wake();
    }
    for (const jobId of started) this.logger.info({ jobId }, 'job started');
    this.settle(outcomes, recorded);
    this.learn(providers);
    const madeRunning = new Set(promoted);
    for (const { itemId } of promote) {
      const entry = this.inFlight.get(itemId);
      if (!entry) continue;
      // Not ours any more (cancelled, or taken after its lease ran out): stop the call.
      if (madeRunning.has(itemId)) entry.reserved = false;
      else this.abort(entry, 'lost');
    }
    for (const [jobId, state] of reserves) this.setReserve(jobId, state);
    for (const item of reserved) {
      const image = this.bridge.resolveImage(item);
      image.catch(() => {}); // a failure is the call's, when it begins
      this.reserves.get(item.jobId)?.items.push({ item, leaseDeadline: claimedAt + this.leaseMs, image });
    }
    if (!early) this.takeClaimed(claimed, claimedAt);
  }

  /** Launches a round's claims (a reserved item among them leaves the reserve). */
  private takeClaimed(claimed: readonly ClaimedItem[], claimedAt: number): void {
    for (const item of claimed) {
      const r = this.reserves.get(item.jobId);
      if (r) r.items = r.items.filter((x) => x.item.itemId !== item.itemId);
      // A reserved item the round claimed while a hand-on started it: its row is running now.
      const entry = this.inFlight.get(item.itemId);
      if (entry) entry.reserved = false;
      else this.launch(item, claimedAt + this.leaseMs);
    }
  }

  /** Per job of these outcomes: how many items to add to its reserve, RESERVE_PER_SLOT for each slot it holds here. */
  private reserveWanted(outcomes: readonly ItemOutcome[]): { jobId: string; n: number }[] {
    const slots = new Map<string, number>();
    for (const entry of this.inFlight.values()) slots.set(entry.item.jobId, (slots.get(entry.item.jobId) ?? 0) + 1);
    const wanted: { jobId: string; n: number }[] = [];
    for (const jobId of new Set(outcomes.map((o) => o.jobId))) {
      const r = this.reserves.get(jobId);
      const n = RESERVE_PER_SLOT * (slots.get(jobId) ?? 0) - (r?.items.length ?? 0);
      if (n > 0 && r?.flowing !== false) wanted.push({ jobId, n });
    }
    return wanted;
  }

  /** What a round said of a job's reserve (ReserveState). */
  private setReserve(jobId: string, state: ReserveState): void {
    const r = this.reserves.get(jobId);
    if (state === 'release') {
      if (r) this.toRelease.push(...r.items.map((x) => ref(x.item)));
      this.reserves.delete(jobId);
    } else if (r) r.flowing = state === 'flow';
    else this.reserves.set(jobId, { items: [], flowing: state === 'flow' });
  }

  /**
   * A call of this job ended well: its slot goes on to the job's next reserved item now. The next
   * round records the ended item and makes the started one running in one statement.
   */
  private handOn(jobId: string): void {
    const r = this.reserves.get(jobId);
    if (!r?.flowing || !this.mayStart() || this.cancelledJobs.has(jobId)) return;
    const now = performance.now();
    for (let next = r.items.shift(); next; next = r.items.shift()) {
      // Its lease missed renewals: another replica may take it soon, so give it back instead.
      if (next.leaseDeadline - now < this.leaseMs / 3) {
        this.toRelease.push(ref(next.item));
        continue;
      }
      if ((this.providerBlocks.get(providerKey(next.item.config)) ?? 0) > now || this.isBeingMarked(next.item)) {
        r.items.unshift(next);
        return;
      }
      this.launch(next.item, next.leaseDeadline, next.image);
      return;
    }
  }

  /** Takes in the providers' states after a round: blocks to keep, changes to log. */
  private learn(providers: readonly ProviderBudget[]): void {
    const now = performance.now();
    for (const p of providers) {
      if (p.waitMs > 0) this.blockProvider(p, now + p.waitMs);
      const at = { provider: p.provider, model: p.model, concurrencyLimit: Math.round(p.concurrencyLimit * 100) / 100 };
      if (p.breaker !== p.previous.breaker) {
        if (p.breaker === 'open') this.logger.warn({ ...at, consecutiveFailures: p.consecutiveFailures, probeInMs: p.waitMs }, 'circuit breaker opened: no calls to this provider until a probe succeeds');
        else if (p.breaker === 'closed') this.logger.info(at, 'circuit breaker closed: the provider answers again');
      }
      if (Math.floor(p.concurrencyLimit) < Math.floor(p.previous.concurrencyLimit)) {
        this.logger.info({ ...at, from: Math.floor(p.previous.concurrencyLimit), to: Math.floor(p.concurrencyLimit), waitMs: p.waitMs }, 'provider limit lowered');
      }
    }
  }

  /** No call to this provider before `until` (performance.now() time); a later block already known stays. */
  private blockProvider(p: { provider: string; model: string }, until: number): void {
    const key = providerKey(p);
    this.providerBlocks.set(key, Math.max(this.providerBlocks.get(key) ?? 0, until));
  }

  /** The outcomes' items are no longer held: recorded, or late (cancelled, rescued) and dropped. */
  private settle(outcomes: readonly ItemOutcome[], recorded: readonly ItemOutcome[]): void {
    const written = new Set(recorded.map((o) => o.itemId));
    const counts = { completed: 0, failed: 0, retried: 0, deferred: 0, late: outcomes.length - recorded.length };
    for (const o of outcomes) {
      this.inFlight.delete(o.itemId);
      if (!written.has(o.itemId)) {
        this.logger.debug({ itemId: o.itemId, jobId: o.jobId }, 'late result discarded');
        continue;
      }
      const outcome = o.status === 'completed' || o.status === 'deferred' ? o.status : o.retryInMs === null ? 'failed' : 'retried';
      counts[outcome] += 1;
      this.metrics?.itemOutcomes.inc({ outcome });
      if (o.status === 'deferred') {
        this.logger.debug({ itemId: o.itemId, jobId: o.jobId, error: o.error, retryInMs: o.retryInMs }, 'item deferred; attempt given back');
      } else if (o.status === 'failed') {
        this.logger.warn(
          { itemId: o.itemId, jobId: o.jobId, error: o.error, retryInMs: o.retryInMs },
          o.retryInMs === null ? 'item failed' : 'item attempt failed; will retry',
        );
      }
    }
    if (outcomes.length > 0) this.logger.debug(counts, 'outcomes recorded');
  }

  /**
   * `leaseDeadline`: the lease was set by the database after the round began, so this comes no later
   * than it. `image`: given for an item from the reserve, whose row is still pending.
   */
  private launch(item: ClaimedItem, leaseDeadline: number, image?: Promise<string>): void {
    const reserved = image !== undefined;
    const entry: InFlight = { item, controller: new AbortController(), leaseDeadline, reserved, image };
    this.metrics?.itemStarts.inc({ via: reserved ? 'reserve' : 'claim' });
    this.inFlight.set(item.itemId, entry);
    if (this.cancelledJobs.has(item.jobId)) this.abort(entry, 'cancelled');
    // Claimed in a round that did not know yet what an answer since said: wait, attempt given back.
    const blockedForMs = (this.providerBlocks.get(providerKey(item.config)) ?? 0) - performance.now();
    const refused = this.isBeingMarked(item);
    if ((this.providerSettings && blockedForMs > 0) || refused) {
      this.outcomes.push({
        itemId: item.itemId,
        jobId: item.jobId,
        processingTime: 0,
        status: 'deferred',
        error: refused ? `not sent: provider ${item.config.provider} refused its key` : 'not sent: the provider asked to wait',
        retryInMs: refused ? this.config.POLL_INTERVAL_MS : Math.ceil(blockedForMs),
      });
      this.wakeup.wake();
      return;
    }
    const call: Promise<void> = this.call(entry)
      .catch((error: unknown) => {
        // Left running under our lease: the rescue sweep retries it once the lease expires.
        this.logger.error({ err: error, itemId: item.itemId, jobId: item.jobId }, 'bridge call failed unexpectedly');
        this.inFlight.delete(item.itemId);
      })
      .finally(() => this.calls.delete(call));
    this.calls.add(call);
  }

  /** Calls the bridge for one item and hands the outcome to the loop. */
  private async call({ item, controller, image }: InFlight): Promise<void> {
    const requestId = item.requestId ?? randomUUID();
    const started = performance.now();
    let outcome: ItemOutcome;
    try {
      if (controller.signal.aborted) throw controller.signal.reason;
      // The job's stored provider, read once for its rate limit and its provider_config.
      const provider = item.config.providerConfig === undefined ? await this.providers.get(item.config.provider) : undefined;
      const pacedForMs = this.pacer.take(item.config.provider, provider?.requestsPerMinute ?? null);
      if (pacedForMs > 0) {
        this.blockProvider(item.config, performance.now() + pacedForMs);
        this.inFlight.delete(item.itemId);
        this.outcomes.push({
          itemId: item.itemId,
          jobId: item.jobId,
          processingTime: 0,
          status: 'deferred',
          error: `not sent: provider ${item.config.provider} is at its rate limit`,
          retryInMs: pacedForMs,
          signal: { kind: 'paced', retryAfterMs: pacedForMs },
        });
        this.wakeup.wake();
        return;
      }
      const caption = await this.bridge.caption(item, { signal: controller.signal, requestId, image, provider });
      const latencyMs = performance.now() - started;
      const processingTime = Math.round(latencyMs);
      this.metrics?.bridgeCalls.observe({ outcome: 'ok' }, processingTime / 1000);
      outcome = { itemId: item.itemId, jobId: item.jobId, processingTime, status: 'completed', ...caption, signal: { kind: 'ok', latencyMs } };
    } catch (error) {
      const processingTime = Math.round(performance.now() - started);
      if (controller.signal.aborted) {
        const reason = controller.signal.reason as AbortReason;
        this.metrics?.bridgeCalls.observe({ outcome: 'aborted' }, processingTime / 1000);
        this.logger.debug({ itemId: item.itemId, jobId: item.jobId, requestId, reason }, 'bridge call aborted');
        this.inFlight.delete(item.itemId);
        if (reason === 'shutdown') this.aborted.push(item.itemId);
        return;
      }
      outcome = this.failure(item, error, processingTime);
    }
    this.outcomes.push(outcome);
    if (outcome.status === 'completed') this.handOn(item.jobId);
    this.wakeup.wake();
  }

  /**
   * A failed call. Permanent: the item fails (a refused key also marks its provider). Throttled
   * (429, 503 with Retry-After), or a failed probe of a half-open breaker: the provider's state,
   * not the item's, so it waits without spending the attempt; so does an item whose provider is
   * disabled or misconfigured, that met a bridge without the route, or whose secrets this replica
   * cannot open. Otherwise retried after a backoff while attempts are left.
   */
  private failure(item: ClaimedItem, error: unknown, processingTime: number): ItemOutcome {
    const failure = classifyError(error, this.config.BRIDGE_RETRY_TIMEOUTS);
    const permanent = failure instanceof PermanentError;
    this.metrics?.bridgeCalls.observe({ outcome: permanent ? 'permanent' : 'transient' }, processingTime / 1000);
    const base = { itemId: item.itemId, jobId: item.jobId, processingTime };
    if (failure instanceof BridgeIncompatibleError) this.onMissingRoute(failure.message);
    if (failure instanceof BridgeIncompatibleError || failure instanceof ProviderUnavailableError) {
      // Nothing the item did: it waits for the bridge or the provider to be fixed, the job for its pause.
      this.blockProvider(item.config, performance.now() + this.config.POLL_INTERVAL_MS);
      this.queueChanged = true;
      return { ...base, status: 'deferred', error: failure.message, retryInMs: this.config.POLL_INTERVAL_MS };
    }
    if (failure instanceof ReplicaError) {
      // This replica lacks the key to the secrets: the item goes back without spending its attempt,
      // for a replica that has it (start-up says which secrets this one cannot open).
      return { ...base, status: 'deferred', error: failure.message, retryInMs: Math.max(1000, this.config.POLL_INTERVAL_MS * 10) };
    }
    if (failure instanceof ProviderAuthError) this.providerRefused(item, failure.message);
    const adaptive = this.providerSettings !== undefined;
    if (adaptive && failure instanceof ThrottledError) {
      const waitMs = failure.retryAfterMs ?? backoffMs(1, this.retry);
      if (failure.retryAfterMs !== null) this.blockProvider(item.config, performance.now() + failure.retryAfterMs);
      return { ...base, status: 'deferred', error: failure.message, retryInMs: waitMs, signal: { kind: 'throttled', retryAfterMs: failure.retryAfterMs } };
    }
    // Whether it speaks about the provider: this replica's own trouble (no key for the secrets) does
    // not, nor does an item's own (permanent), but a call that never ended does.
    const aboutProvider = (!permanent || failure instanceof TimedOutError) && !(failure instanceof ReplicaError);
    const signal = aboutProvider ? ({ kind: 'failed' } as const) : undefined;
    if (adaptive && item.probe && signal) {
      return { ...base, status: 'deferred', error: failure.message, retryInMs: 0, signal };
    }
    const retry = !permanent && canRetry(item.attempts, this.retry);
    const message = retry || permanent ? failure.message : `${failure.message} (gave up after ${item.attempts} attempts)`;
    return { ...base, status: 'failed', error: message, retryInMs: retry ? backoffMs(item.attempts, this.retry) : null, signal };
  }

  /**
   * The provider refused the key: no more of its calls from here, and its jobs pause. A stored
   * provider is marked misconfigured (every replica's sweep then pauses its jobs); a job that
   * brought its own provider_config is paused alone.
   */
  private providerRefused(item: ClaimedItem, reason: string): void {
    const { provider } = item.config;
    const stored = item.config.providerConfig === undefined;
    // Until the mark is written (and the registry read again) the cache still says the key is
    // good: the provider's calls wait here meanwhile (isBeingMarked).
    if (stored) this.marking.add(provider);
    else this.blockProvider(item.config, performance.now() + this.config.POLL_INTERVAL_MS);
    const done = stored
      ? markProviderMisconfigured(this.db, provider, reason)
      : pauseJobWithReason(this.db, item.jobId, `its provider_config was refused (${reason}): create a new job with a working one`);
    done
      .then(
        (changed) => {
          if (changed) this.logger.warn({ provider, jobId: item.jobId, reason }, 'provider refused its credentials: its jobs pause');
        },
        (error: unknown) => this.logger.error({ err: error, provider }, 'could not mark the provider misconfigured'),
      )
      .finally(() => {
        this.providers.invalidate();
        this.marking.delete(provider);
        this.queueChanged = true;
        this.wakeup.wake();
      });
  }

  /** The item's stored provider refused its key here and is being marked misconfigured. */
  private isBeingMarked(item: ClaimedItem): boolean {
    return this.marking.size > 0 && item.config.providerConfig === undefined && this.marking.has(item.config.provider);
  }

  /** The job was paused: its reserve goes back at the next round. */
  private abortReserve(jobId: string): void {
    const r = this.reserves.get(jobId);
    if (!r) return;
    this.toRelease.push(...r.items.map((x) => ref(x.item)));
    this.reserves.delete(jobId);
  }

  /** Renews the leases of everything held; aborts calls whose item is no longer ours. */
  private async renewLeases(): Promise<void> {
    const sentAt = performance.now();
    try {
      const reserved = new Map<string, Reserved>();
      for (const r of this.reserves.values()) for (const x of r.items) reserved.set(x.item.itemId, x);
      const { renewed, lost } = await extendLeases(this.db, {
        owner: this.owner,
        itemIds: [...this.inFlight.keys(), ...reserved.keys()],
        leaseSeconds: this.config.LEASE_SECONDS,
      });
      for (const id of renewed) {
        const held = this.inFlight.get(id) ?? reserved.get(id);
        if (held) held.leaseDeadline = sentAt + this.leaseMs;
      }
      const gone = new Set<string>();
      for (const id of lost) {
        const entry = this.inFlight.get(id);
        if (entry) this.abort(entry, 'lost');
        else if (reserved.has(id)) gone.add(id);
      }
      if (gone.size > 0) for (const r of this.reserves.values()) r.items = r.items.filter((x) => !gone.has(x.item.itemId));
    } catch (error) {
      this.logger.warn({ err: error }, 'could not renew leases');
    }
    // Renewal kept failing: another replica may take these items any moment, so stop calling.
    const now = performance.now();
    for (const entry of this.inFlight.values()) if (entry.leaseDeadline <= now) this.abort(entry, 'lost');
  }

  private abortJob(jobId: string): void {
    this.cancelledJobs.add(jobId);
    this.reserves.delete(jobId);
    if (this.cancelledJobs.size > REMEMBERED_CANCELS) this.cancelledJobs.delete(this.cancelledJobs.values().next().value!);
    for (const entry of this.inFlight.values()) if (entry.item.jobId === jobId) this.abort(entry, 'cancelled');
  }

  private abort(entry: InFlight, reason: AbortReason): void {
    if (!entry.controller.signal.aborted) entry.controller.abort(reason);
  }

  private settled(): Promise<unknown> {
    return Promise.all([...this.calls]);
  }
}
