/**
 * Adaptive dispatch per (provider, model), shared by every replica through one row each in
 * job_queue.provider_states. Each dispatch round feeds back what its calls saw and gets, under the
 * rows' locks, how many calls each provider may have in flight:
 *
 * - an AIMD in-flight limit under the configured caps: halved on throttling (429, 503 with
 *   Retry-After) and provider failures, cut by a fifth while latency rises well above its slow
 *   moving average,
 *   at most once a second so one burst counts once; grown by one per limit's worth of successes;
 * - Retry-After: no call before it has passed;
 * - a circuit breaker: BREAKER_FAILURES provider failures in a row open it; after a cool-down one
 *   probe at a time goes through (half-open); a success closes it, a failed probe doubles the
 *   cool-down (up to BREAKER_MAX_COOLDOWN_MS).
 *
 * None of it spends an item's attempts: items wait unclaimed, and a throttled or probing call gives
 * its attempt back (src/jobs/dispatcher.ts).
 */
import { sql, type SQL } from 'drizzle-orm';
import type { Db, DbTime } from './client.js';

/** What one round's calls to a provider saw. */
export interface ProviderFeedback {
  provider: string;
  model: string;
  ok: number;
  /** 429s and 503s with Retry-After. */
  throttled: number;
  /** Transient failures that speak about the provider: 5xx, timeouts, refused connections. */
  failed: number;
  /** The longest Retry-After among the throttled calls. */
  retryAfterMs: number | null;
  /** Mean latency of the successful calls. */
  latencyMs: number | null;
}

export interface ProviderSettings {
  /** The most calls a provider may have in flight (MAX_CONCURRENT_JOBS × MAX_CONCURRENT_ITEMS). */
  maxLimit: number;
  breakerFailures: number;
  cooldownMs: number;
  maxCooldownMs: number;
}

export type BreakerView = 'closed' | 'open' | 'half-open';

export type ProviderState = {
  provider: string;
  model: string;
  concurrencyLimit: number;
  breaker: BreakerView;
  consecutiveFailures: number;
  blockedUntil: DbTime | null;
  openUntil: DbTime | null;
  latencyMs: number | null;
  baselineLatencyMs: number | null;
};

/** A provider's state after a round's feedback, with what it allows now. */
export interface ProviderBudget extends ProviderState {
  /** Calls it may have in flight now, across replicas (0 while blocked or open). */
  budget: number;
  /** Half-open: the calls it allows are probes. */
  probe: boolean;
  /** Milliseconds until a call may go again (Retry-After or the breaker's cool-down); 0 if now. */
  waitMs: number;
  /** Before this round's feedback: for logging what changed. */
  previous: { concurrencyLimit: number; breaker: BreakerView };
}

const BREAKER_VIEW = sql.raw(`case when breaker = 'open' and open_until <= now() then 'half-open' else breaker end`);

/** The key of a (provider, model) in maps: the service's and the database's views of it meet here. */
export const providerKey = (p: { provider: string; model: string }) => JSON.stringify([p.provider, p.model]);

/**
 * Items running per (provider, model), all replicas, as `(provider, model, running)`; `where` narrows
 * the jobs looked at. Per unfinished job through (job_id, status): a bitmap scan of the partial index
 * of running items would visit every item that ran since the last vacuum (bitmap scans never mark an
 * index entry dead).
 */
export const runningPerProvider = (where: SQL = sql`true`) => sql`
  select j.config->>'provider' as provider, j.config->>'model' as model,
         sum((select count(*) from job_queue.job_items r where r.job_id = j.job_id and r.status = 'running'))::int as running
  from job_queue.caption_jobs j
  where j.status in ('pending', 'running', 'paused') and ${where}
  group by 1, 2`;

/** The feedback as the relation `pf` that PROVIDER_CTES reads, for a WITH list. */
export const providerFeedbackCte = (feedback: readonly ProviderFeedback[]) => sql`
  pf as (
    select * from jsonb_to_recordset(${JSON.stringify(feedback)}::jsonb)
      as pf(provider text, model text, ok int, throttled int, failed int, "retryAfterMs" int, "latencyMs" float8)
  )`;

/**
 * The CTEs that apply a round's feedback (the relation `pf`, see providerFeedbackCte, defined
 * before them) to the providers' rows, locking them in (provider, model) order; `pupdated` returns
 * the rows as updated, with `previous_limit` and `previous_breaker`. A fragment, so the dispatcher
 * can update the providers in the statement that records its items (after the job rows' locks).
 */
export function providerCtes(s: ProviderSettings): SQL {
  const failures = sql`case when d.ok > 0 then d.failed else d.consecutive_failures + d.failed end`;
  // Closed and too many failures in a row, or half-open and the probe failed: (re)open.
  const opens = sql`((d.breaker = 'closed' and ${failures} >= ${s.breakerFailures})
                     or (d.breaker = 'open' and d.open_until <= now() and d.ok = 0 and d.failed > 0))`;
  const closes = sql`(d.breaker = 'open' and d.ok > 0)`;
  const cooldownMs = sql`least(${s.maxCooldownMs}::float8, ${s.cooldownMs}::float8 * 2 ^ least(d.opened_count, 30))`;
  return sql`
    pcur as (
      select p.*, pf.ok, pf.throttled, pf.failed, pf."retryAfterMs" as retry_after_ms, pf."latencyMs" as latency
      from job_queue.provider_states p join pf on pf.provider = p.provider and pf.model = p.model
      order by p.provider, p.model
      for update of p
    ), pnext as (
      select cur.*, n.new_latency, n.new_baseline,
             -- Slowing down: throttled, failing, or latency rising to twice its baseline and 100 ms above it.
             (cur.throttled > 0 or cur.failed > 0
              or (n.new_latency > 2 * n.new_baseline and n.new_latency - n.new_baseline > 100)) as slow_down,
             (cur.decreased_at is null or cur.decreased_at < now() - interval '1 second') as may_decrease
      from pcur cur
      -- Seconds since the last sample: the moving averages weigh a sample by time, not by rounds.
      cross join lateral (select greatest(extract(epoch from now() - cur.latency_at)::float8, 0) as dt) t
      cross join lateral (select
        -- A fast (2 s) and a slow (15 s) moving average of the calls' latency: latency is rising
        -- while the fast one runs well ahead of the slow one, which follows a lasting change.
        case when cur.latency is null then cur.latency_ms
             else coalesce(cur.latency_ms + (1 - exp(-t.dt / 2)) * (cur.latency - cur.latency_ms), cur.latency) end as new_latency,
        case when cur.latency is null then cur.baseline_latency_ms
             else coalesce(cur.baseline_latency_ms + (1 - exp(-t.dt / 15)) * (cur.latency - cur.baseline_latency_ms), cur.latency) end
          as new_baseline) n
    ), pupdated as (
      update job_queue.provider_states p
      set latency_ms = d.new_latency,
          baseline_latency_ms = d.new_baseline,
          latency_at = case when d.latency is null then d.latency_at else now() end,
          concurrency_limit = case
            when d.slow_down and d.may_decrease
              then greatest(1, least(${s.maxLimit}::float8, d.concurrency_limit) * case when d.throttled + d.failed > 0 then 0.5 else 0.8 end)
            when d.slow_down then least(${s.maxLimit}::float8, d.concurrency_limit)
            else greatest(1, least(${s.maxLimit}::float8, d.concurrency_limit + d.ok / greatest(d.concurrency_limit, 1))) end,
          decreased_at = case when d.slow_down and d.may_decrease then now() else d.decreased_at end,
          blocked_until = case when d.retry_after_ms is null then d.blocked_until
            else greatest(coalesce(d.blocked_until, now()), now() + make_interval(secs => d.retry_after_ms / 1000.0)) end,
          consecutive_failures = ${failures},
          breaker = case when ${opens} then 'open' when ${closes} then 'closed' else d.breaker end,
          open_until = case when ${opens} then now() + make_interval(secs => ${cooldownMs} / 1000.0)
                            when ${closes} then null else d.open_until end,
          opened_count = case when ${opens} then d.opened_count + 1 when ${closes} then 0 else d.opened_count end,
          outage_since = case when ${opens} and d.breaker = 'closed' then now() when ${closes} then null else d.outage_since end,
          updated_at = now()
      from pnext d where p.provider = d.provider and p.model = d.model
      returning p.*, d.concurrency_limit as previous_limit,
                case when d.breaker = 'open' and d.open_until <= now() then 'half-open' else d.breaker end as previous_breaker
    )`;
}

/** A row of `pupdated` as a ProviderBudget, in JSON. */
export const PROVIDER_BUDGET_JSON = sql`jsonb_build_object(
  'provider', provider, 'model', model, 'concurrencyLimit', concurrency_limit,
  'breaker', ${BREAKER_VIEW},
  'consecutiveFailures', consecutive_failures, 'blockedUntil', blocked_until, 'openUntil', open_until,
  'latencyMs', latency_ms, 'baselineLatencyMs', baseline_latency_ms,
  'budget', case when breaker = 'open' and open_until > now() then 0
                 when blocked_until > now() then 0
                 when breaker = 'open' then 1
                 else floor(concurrency_limit)::int end,
  'probe', breaker = 'open' and open_until <= now(),
  'waitMs', greatest(0, coalesce(ceil(extract(epoch from greatest(blocked_until, case when breaker = 'open' then open_until end) - now()) * 1000), 0))::int,
  'previous', jsonb_build_object('concurrencyLimit', previous_limit, 'breaker', previous_breaker))`;

/**
 * Gives providers never seen before a row at the full limit; true when some had none (their
 * feedback was not applied: the caller applies it again).
 */
async function ensureProviders(tx: Db, keys: readonly { provider: string; model: string }[], s: ProviderSettings): Promise<boolean> {
  const result = await tx.execute(sql`
    insert into job_queue.provider_states (provider, model, concurrency_limit)
    select k.provider, k.model, ${s.maxLimit}::float8
    from jsonb_to_recordset(${JSON.stringify(keys)}::jsonb) as k(provider text, model text)
    order by k.provider, k.model
    on conflict (provider, model) do nothing`);
  return (result.rowCount ?? 0) > 0;
}

/**
 * Applies a round's feedback to the providers' rows (see providerCtes) and returns each one's
 * budget; providers never seen before get a row at the full limit first.
 */
export async function updateProviders(
  tx: Db,
  feedback: readonly ProviderFeedback[],
  s: ProviderSettings,
): Promise<ProviderBudget[]> {
  if (feedback.length === 0) return [];
  const apply = async () => {
    const { rows } = await tx.execute<{ budget: ProviderBudget }>(sql`
      with ${providerFeedbackCte(feedback)}, ${providerCtes(s)}
      select ${PROVIDER_BUDGET_JSON} as budget from pupdated`);
    return rows.map((r) => r.budget);
  };
  const budgets = await apply();
  if (budgets.length < feedback.length && (await ensureProviders(tx, feedback, s))) return apply();
  return budgets;
}

/** Every provider's state with its calls in flight (all replicas), for statistics and metrics. */
export async function listProviders(db: Db): Promise<(ProviderState & { inFlight: number })[]> {
  const { rows } = await db.execute<ProviderState & { inFlight: number }>(sql`
    select p.provider, p.model, p.concurrency_limit as "concurrencyLimit", ${BREAKER_VIEW} as breaker,
           p.consecutive_failures as "consecutiveFailures", p.blocked_until as "blockedUntil", p.open_until as "openUntil",
           p.latency_ms as "latencyMs", p.baseline_latency_ms as "baselineLatencyMs",
           coalesce(r.running, 0) as "inFlight"
    from job_queue.provider_states p
    left join (${runningPerProvider()}) r on r.provider = p.provider and r.model = p.model
    order by p.provider, p.model`);
  return rows;
}
