/**
 * How a bridge call failed decides what happens to the item: a PermanentError fails it now, a
 * TransientError retries it after a backoff while it has attempts left. One place classifies.
 */

/** Retrying will not help: a bad image, an unknown perspective, a malformed request. */
export class PermanentError extends Error {
  override name = 'PermanentError';
}

/** It may work next time: the bridge or its provider is overloaded, down or slow. */
export class TransientError extends Error {
  override name = 'TransientError';
}

/** A bridge call that took longer than BRIDGE_TIMEOUT_MS: the reason its call was aborted. */
export class BridgeTimeoutError extends Error {
  override name = 'BridgeTimeoutError';
  constructor(readonly timeoutMs: number) {
    super(`Inference Bridge did not answer within ${timeoutMs} ms`);
  }
}

/**
 * This replica cannot make the call (it lacks the key to open the job's secrets): nothing about
 * the provider, so adaptive dispatch does not count it; another replica may succeed.
 */
export class ReplicaError extends TransientError {
  override name = 'ReplicaError';
}

/**
 * The provider asked us to slow down (429, or 503 with Retry-After): a statement about the
 * provider, not the item. The item goes back to the queue without spending an attempt, and no call
 * goes to the provider before `retryAfterMs` (when it said) has passed.
 */
export class ThrottledError extends TransientError {
  override name = 'ThrottledError';
  constructor(
    message: string,
    readonly retryAfterMs: number | null,
  ) {
    super(message);
  }
}

/** Longest Retry-After honoured; a provider asking for more is asked again after this. */
const MAX_RETRY_AFTER_MS = 10 * 60_000;

/** Retry-After in milliseconds: delta-seconds or an HTTP date (RFC 9110); null when absent or unreadable. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | null {
  if (!value) return null;
  const trimmed = value.trim();
  const ms = /^\d+$/.test(trimmed) ? Number(trimmed) * 1000 : Date.parse(trimmed) - now;
  if (!Number.isFinite(ms)) return null;
  return Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS);
}

// 4xx means the request itself is wrong, except these, which ask the caller to come back later.
const RETRYABLE_4XX = new Set([408, 425, 429]);

/** Classifies a bridge answer that was not 2xx, keeping the bridge's own message. */
export function classifyStatus(status: number, message: string, retryAfter?: string | null): PermanentError | TransientError {
  const text = `Inference Bridge answered ${status}: ${message}`;
  const wait = parseRetryAfter(retryAfter);
  if (status === 429 || (status === 503 && wait !== null)) return new ThrottledError(text, wait);
  return status >= 400 && status < 500 && !RETRYABLE_4XX.has(status) ? new PermanentError(text) : new TransientError(text);
}

/** Classifies an error thrown before any answer: timeouts and network failures are transient. */
export function classifyError(error: unknown): PermanentError | TransientError {
  if (error instanceof PermanentError || error instanceof TransientError) return error;
  if (error instanceof BridgeTimeoutError) return new TransientError(error.message, { cause: error });
  // A refused, reset or closed connection: the system's or undici's error code (ECONNREFUSED, UND_ERR_SOCKET ...).
  const e = error as { code?: string; cause?: { code?: string; message?: string }; message?: string } | undefined;
  const detail = e?.code ?? e?.cause?.code ?? e?.cause?.message ?? (error instanceof Error ? error.message : String(error));
  return new TransientError(`Inference Bridge unreachable: ${detail}`, { cause: error });
}
