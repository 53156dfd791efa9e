/** The retry policy for transient failures: an attempt limit and a backoff schedule. */

export interface RetryPolicy {
  /** Attempts an item gets in all, the first included. */
  maxAttempts: number;
  /** Ceiling of the first backoff, in milliseconds; it doubles per attempt. */
  baseMs: number;
  /** The backoff never exceeds this, in milliseconds. */
  maxMs: number;
}

/** Whether an item that has made `attempts` attempts may have another. */
export function canRetry(attempts: number, policy: RetryPolicy): boolean {
  return attempts < policy.maxAttempts;
}

/**
 * Milliseconds to wait after the `attempts`-th failed attempt: exponential backoff with full
 * jitter, uniform in [0, min(maxMs, baseMs * 2^(attempts - 1))], so replicas retrying at once
 * spread out instead of hitting a recovering bridge together. With the defaults (1 s base, 60 s
 * cap, 5 attempts) the ceilings are 1, 2, 4 and 8 s, at most 15 s of waiting in all; later ones
 * would be 16, 32, then 60 s each.
 */
export function backoffMs(attempts: number, policy: RetryPolicy, random: () => number = Math.random): number {
  // The exponent stops at 30 so a large attempt count cannot overflow to Infinity.
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(Math.max(attempts - 1, 0), 30));
  return Math.floor(random() * ceiling);
}
