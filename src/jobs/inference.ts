/**
 * The Inference Bridge client: one `caption-from-path` call per item (API.md), with a timeout, the
 * job's request id and an abort signal. Failures come out classified (src/jobs/errors.ts). It
 * never logs: the request carries the job's provider_config, which may hold secrets.
 */
import ky from 'ky';
import type { ClaimedItem } from '../db/dispatch.js';
import type { JobConfig } from '../db/jobs.js';
import { isSealed, open } from '../secrets.js';
import { resolveInWorkspace } from '../workspace.js';
import { classifyError, classifyStatus, PermanentError, ReplicaError, TransientError } from './errors.js';

const CAPTION_PATH = 'perspectives/caption-from-path';
// The part of an error body kept as the item's error.
const MAX_MESSAGE = 1000;

export interface Caption {
  /** The structured caption: what is stored. */
  result: Record<string, unknown>;
  rawText: string | null;
}

export interface CallOptions {
  signal: AbortSignal;
  /** Sent as X-Request-Id, so the bridge's logs match ours. */
  requestId: string;
}

export interface InferenceBridge {
  /** Resolves with the caption; rejects with a PermanentError or TransientError, or the signal's reason once aborted. */
  caption(item: ClaimedItem, options: CallOptions): Promise<Caption>;
}

export interface InferenceBridgeOptions {
  url: string;
  timeoutMs: number;
  workspacePath: string;
  /** Opens the jobs' sealed provider secrets (src/secrets.ts). */
  secretsKey: Buffer | undefined;
}

export function createInferenceBridge(options: InferenceBridgeOptions): InferenceBridge {
  const client = ky.create({ prefixUrl: options.url, timeout: options.timeoutMs, retry: 0, throwHttpErrors: false });

  return {
    async caption(item, { signal, requestId }) {
      const imagePath = await resolveInWorkspace(options.workspacePath, item.imagePath).catch((error: Error) => {
        throw new PermanentError(`image ${item.imagePath} cannot be read in the workspace: ${error.message}`);
      });
      const c = item.config;
      // Options the job leaves unset are left out, so the bridge's own defaults apply.
      const body = {
        perspective: item.perspective,
        image_path: imagePath,
        provider: c.provider,
        provider_config: providerConfig(c, options.secretsKey),
        model: c.model,
        max_tokens: c.maxTokens,
        temperature: c.temperature,
        top_p: c.topP,
        repetition_penalty: c.repetitionPenalty,
        context: c.context,
        global_context: c.globalContext,
        resize_resolution: c.resizeResolution,
      };
      let response: Response;
      try {
        response = await client.post(CAPTION_PATH, {
          json: body,
          signal,
          headers: { 'x-request-id': requestId, 'x-job-id': item.jobId, 'x-item-id': item.itemId },
        });
      } catch (error) {
        if (signal.aborted) throw signal.reason;
        throw classifyError(error, options.timeoutMs);
      }
      if (!response.ok) throw classifyStatus(response.status, await errorMessage(response), response.headers.get('retry-after'));
      let answer: unknown;
      try {
        answer = await response.json();
      } catch (error) {
        if (signal.aborted) throw signal.reason;
        throw new TransientError(`Inference Bridge answer could not be read: ${(error as Error).message}`, { cause: error });
      }
      return parseCaption(answer);
    },
  };
}

/** The job's provider secrets in the clear, for the request body only. */
function providerConfig(config: JobConfig, key: Buffer | undefined): unknown {
  const value: unknown = config.providerConfig;
  if (value === undefined || !isSealed(value)) return value;
  // Transient: another replica, with the right key, may run the item.
  if (!key) throw new ReplicaError('the job has sealed provider secrets and this replica has no SECRETS_KEY');
  try {
    return open(value, key);
  } catch {
    throw new ReplicaError("the job's provider secrets cannot be opened with this replica's SECRETS_KEY");
  }
}

/** The bridge's reason for an error answer: FastAPI's `detail`, else `error` or `message`, else the text. */
async function errorMessage(response: Response): Promise<string> {
  const text = await response.text().catch(() => '');
  let message = text;
  try {
    const parsed = JSON.parse(text) as Record<string, unknown>;
    const field = parsed.detail ?? parsed.error ?? parsed.message;
    if (field !== undefined) message = typeof field === 'string' ? field : JSON.stringify(field);
  } catch {
    // not JSON: keep the text
  }
  return (message.trim() || response.statusText || 'no message').slice(0, MAX_MESSAGE);
}

function parseCaption(body: unknown): Caption {
  const answer = body as { result?: unknown; raw_text?: unknown } | null;
  if (!answer || typeof answer.result !== 'object' || answer.result === null || Array.isArray(answer.result)) {
    // Retrying the same request would most likely get the same malformed answer.
    throw new PermanentError('Inference Bridge answered 200 without a result object');
  }
  return {
    result: answer.result as Record<string, unknown>,
    rawText: typeof answer.raw_text === 'string' ? answer.raw_text : null,
  };
}
