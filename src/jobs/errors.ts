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

/**
 * The provider refused the credentials it was given (401, 403, an invalid key): every other call
 * with them would fail the same way. The item fails, and the provider is marked misconfigured so
 * its jobs pause until it is changed (src/jobs/dispatcher.ts).
 */
export class ProviderAuthError extends PermanentError {
  override name = 'ProviderAuthError';
}

/**
 * The bridge has no such route (FastAPI's plain 404 "Not Found"): INFERENCE_BRIDGE_URL does not
 * point at graphcap's bridge. Nothing about the item: it waits, its attempt given back.
 */
export class BridgeIncompatibleError extends TransientError {
  override name = 'BridgeIncompatibleError';
}

/**
 * The job's stored provider is disabled or marked misconfigured: the item waits, its attempt given
 * back, while the job is paused (src/db/provider-pauses.ts) until someone changes the provider.
 */
export class ProviderUnavailableError extends TransientError {
  override name = 'ProviderUnavailableError';
}

/**
 * No answer within BRIDGE_TIMEOUT_MS, and timed-out calls are not retried (BRIDGE_RETRY_TIMEOUTS):
 * the bridge may still be paying for the caption.
 */
export class TimedOutError extends PermanentError {
  override name = 'TimedOutError';
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

/**
 * graphcap's bridge reports every model-provider error as a 500 whose detail quotes the provider's
 * answer: "Error generating caption: Error processing <path>: Error code: 429 - {...}".
 */
const PROVIDER_STATUS = /Error code: (\d{3})\b/;
/** Invalid credentials as providers word them (Gemini answers 400 "API key not valid"). */
const INVALID_KEY = /invalid[_ ]api[_ ]key|api[_ ]key[_ ]not[_ ]valid|incorrect api key|invalid[_ ]x-api-key|authentication|unauthori[sz]ed|permission[_ ]denied/i;
/** "Please try again in 1s." / "in 20ms": OpenAI's and others' wait, in the provider's message. */
const TRY_AGAIN = /try again in (\d+(?:\.\d+)?)\s*(ms|s)\b/i;

/**
 * Classifies a bridge answer that was not 2xx, keeping the bridge's own message. graphcap's bridge
 * first: a provider's 429 inside a 500 is throttling, its 401/403 or an invalid key is a
 * ProviderAuthError, an unknown perspective or image is permanent with what to do about it; a 404
 * without a reason is a route the bridge lacks. Then plain HTTP: 429 and 503 with Retry-After
 * throttle, other 4xx (but 408, 425) are permanent, the rest transient.
 */
export function classifyStatus(status: number, message: string, retryAfter?: string | null): PermanentError | TransientError {
  const text = `Inference Bridge answered ${status}: ${message}`;
  const provider = status === 500 ? Number(PROVIDER_STATUS.exec(message)?.[1] ?? 0) : 0;
  if (provider === 429) {
    const hinted = TRY_AGAIN.exec(message);
    const wait = hinted ? Math.ceil(Number(hinted[1]) * (hinted[2]!.toLowerCase() === 's' ? 1000 : 1)) : null;
    return new ThrottledError(`the provider is rate-limiting: ${text}`, wait === null ? null : Math.min(wait, MAX_RETRY_AFTER_MS));
  }
  if (provider === 401 || provider === 403 || (provider >= 400 && provider < 500 && INVALID_KEY.test(message))) {
    return new ProviderAuthError(`the provider refused its credentials: ${text}`);
  }
  if (status === 404 && message === 'Not Found') {
    return new BridgeIncompatibleError(`${text} (no such route: is INFERENCE_BRIDGE_URL graphcap's Inference Bridge?)`);
  }
  if (status === 404 && message.startsWith('Unknown perspective')) {
    return new PermanentError(`${text} (the bridge loads perspectives when it starts: restart it after adding one)`);
  }
  if (status === 404 && message.startsWith('Image file not found')) {
    return new PermanentError(`${text} (does the bridge see the workspace at BRIDGE_WORKSPACE_PATH?)`);
  }
  const wait = parseRetryAfter(retryAfter);
  if (status === 429 || (status === 503 && wait !== null)) return new ThrottledError(text, wait);
  return status >= 400 && status < 500 && !RETRYABLE_4XX.has(status) ? new PermanentError(text) : new TransientError(text);
}

/**
 * Classifies an error thrown before any answer: network failures are transient; so is a timeout
 * when `retryTimeouts`, else it is a TimedOutError.
 */
export function classifyError(error: unknown, retryTimeouts = true): PermanentError | TransientError {
  if (error instanceof PermanentError || error instanceof TransientError) return error;
  if (error instanceof BridgeTimeoutError) {
    if (retryTimeouts) return new TransientError(error.message, { cause: error });
    return new TimedOutError(`${error.message}; not retried, since the bridge may still be working on it (BRIDGE_RETRY_TIMEOUTS=true retries)`, { cause: error });
  }
  // A refused, reset or closed connection: the system's or undici's error code (ECONNREFUSED, UND_ERR_SOCKET ...).
  const e = error as { code?: string; cause?: { code?: string; message?: string }; message?: string } | undefined;
  const detail = e?.code ?? e?.cause?.code ?? e?.cause?.message ?? (error instanceof Error ? error.message : String(error));
  return new TransientError(`Inference Bridge unreachable: ${detail}`, { cause: error });
}
