/**
 * A provider's stored rate limit (requests per minute) across replicas: each replica keeps, per
 * provider, the start times of its calls in the last minute and lets a call go only while they
 * number fewer than its share of the limit (the limit over the dispatchers connected, as for item
 * slots; at least one). The shares add up to the limit, so the provider never sees more calls in
 * any minute than it allows; while a replica is alone it has all of it. Beside the adaptive limit,
 * which answers the provider's own 429s: this one keeps them from happening.
 */

const WINDOW_MS = 60_000;

export class ProviderPacer {
  private readonly starts = new Map<string, number[]>();
  private replicas = 1;

  /** The dispatchers connected to the database (this one included): each gets its share. */
  setReplicas(n: number): void {
    this.replicas = Math.max(1, Math.floor(n));
  }

  /**
   * Takes a call of the provider now if its share of `perMinute` allows, and returns 0; otherwise
   * returns the milliseconds until it will (nothing taken). No limit: always 0.
   */
  take(provider: string, perMinute: number | null, now = performance.now()): number {
    if (perMinute === null) return 0;
    const share = Math.max(1, Math.floor(perMinute / this.replicas));
    let times = this.starts.get(provider);
    if (!times) this.starts.set(provider, (times = []));
    while (times.length > 0 && times[0]! <= now - WINDOW_MS) times.shift();
    if (times.length < share) {
      times.push(now);
      return 0;
    }
    // The share is full: the oldest start must leave the window first.
    return Math.max(1, Math.ceil(times[times.length - share]! + WINDOW_MS - now));
  }
}
