/**
 * How a bridge call failed decides what happens to the item: a PermanentError fails it now, a
 * TransientError retries it after a backoff while it has attempts left. One place classifies.
 */
import { TimeoutError } from 'ky';

/** Retrying will not help: a bad image, an unknown perspective, a malformed request. */
export class PermanentError extends Error {
  override name = 'PermanentError';
}

/** It may work next time: the bridge or its provider is overloaded, down or slow. */
export class TransientError extends Error {
  override name = 'TransientError';
}

// 4xx means the request itself is wrong, except these, which ask the caller to come back later.
const RETRYABLE_4XX = new Set([408, 425, 429]);

/** Classifies a bridge answer that was not 2xx, keeping the bridge's own message. */
export function classifyStatus(status: number, message: string): PermanentError | TransientError {
  const text = `Inference Bridge answered ${status}: ${message}`;
  return status >= 400 && status < 500 && !RETRYABLE_4XX.has(status) ? new PermanentError(text) : new TransientError(text);
}

/** Classifies an error thrown before any answer: timeouts and network failures are transient. */
export function classifyError(error: unknown, timeoutMs: number): PermanentError | TransientError {
  if (error instanceof PermanentError || error instanceof TransientError) return error;
  if (error instanceof TimeoutError) {
    return new TransientError(`Inference Bridge did not answer within ${timeoutMs} ms`, { cause: error });
  }
  // fetch reports refused or reset connections as TypeError('fetch failed') with the system error as cause.
  const cause = (error as { cause?: { code?: string; message?: string } } | undefined)?.cause;
  const detail = cause?.code ?? cause?.message ?? (error instanceof Error ? error.message : String(error));
  return new TransientError(`Inference Bridge unreachable: ${detail}`, { cause: error });
}
