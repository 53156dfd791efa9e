import { describe, expect, it } from 'vitest';
import { backoffMs, canRetry } from '../../src/jobs/retry.js';

const policy = { maxAttempts: 5, baseMs: 1000, maxMs: 60_000 };

describe('retry policy', () => {
  it('allows attempts up to the limit and no more', () => {
    expect([1, 2, 3, 4, 5, 6].map((n) => canRetry(n, policy))).toEqual([true, true, true, true, false, false]);
  });

  it('doubles the ceiling per attempt, up to the cap (full jitter: the ceiling is the most it waits)', () => {
    const ceiling = (attempts: number) => backoffMs(attempts, policy, () => 0.999_999_9);
    expect([1, 2, 3, 4, 5, 6, 7, 8].map(ceiling)).toEqual([999, 1999, 3999, 7999, 15_999, 31_999, 59_999, 59_999]);
    expect(backoffMs(1000, policy, () => 0.5)).toBe(30_000);
  });

  it('spreads delays uniformly from zero to the ceiling', () => {
    expect(backoffMs(3, policy, () => 0)).toBe(0);
    expect(backoffMs(3, policy, () => 0.25)).toBe(1000);
    const samples = Array.from({ length: 2000 }, () => backoffMs(3, policy));
    expect(Math.min(...samples)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...samples)).toBeLessThan(4000);
    // Jitter, not a fixed delay: many distinct values across the whole range.
    expect(new Set(samples).size).toBeGreaterThan(500);
    expect(samples.filter((s) => s < 2000).length).toBeGreaterThan(800);
    expect(samples.filter((s) => s >= 2000).length).toBeGreaterThan(800);
  });

  it('stays at zero with a zero base', () => {
    expect(backoffMs(40, { maxAttempts: 50, baseMs: 0, maxMs: 0 })).toBe(0);
  });
});
