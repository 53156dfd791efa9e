/**
 * The Inference Bridge client: one `caption-from-path` call per item, as graphcap's bridge takes it
 * (`POST /api/v1/perspectives/caption-from-path`, snake_case, `provider_config` and `model`
 * required), with a timeout, the job's request id and an abort signal. The provider_config comes
 * from the stored provider the job names, read at call time (src/jobs/provider-registry.ts), or
 * from the job's own sealed one. Failures come out classified (src/jobs/errors.ts), with the key
 * scrubbed from the bridge's texts. It never logs: the request carries the key.
 *
 * It is undici's connection pool (the HTTP engine of Node's own fetch) rather than ky, the
 * service's HTTP client elsewhere: this is the one call made per item, and on the 2-core bench
 * machine a ky call cost 1.0-1.4 ms of CPU against 0.17-0.19 ms for the pool (client and server
 * in one process, 4,000 calls, 8 at a time), the largest share of the service's CPU per item.
 */
import { realpath } from 'node:fs/promises';
import path from 'node:path';
import { Pool } from 'undici';
import type { ClaimedItem } from '../db/dispatch.js';
import type { JobConfig } from '../db/jobs.js';
import { isSealed, open } from '../secrets.js';
import { resolveInWorkspace } from '../workspace/paths.js';
import { BRIDGE_API } from './bridge-monitor.js';
import {
  BridgeTimeoutError,
  classifyError,
  classifyStatus,
  PermanentError,
  ProviderUnavailableError,
  ReplicaError,
  TransientError,
} from './errors.js';
import type { CallProvider, ProviderRegistry } from './provider-registry.js';

const CAPTION_PATH = `${BRIDGE_API}/perspectives/caption-from-path`;
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
  /** The item's image, resolveImage's answer if asked before; else the call resolves it. */
  image?: Promise<string>;
  /** The job's stored provider, if the caller has just read it (the dispatcher does, for its rate limit). */
  provider?: CallProvider;
}

/** What a call needs of an item: its job's config, image and perspective (a claimed item, or a one-off caption without a job). */
export type CaptionTarget = Pick<ClaimedItem, 'imagePath' | 'perspective' | 'config'> & { jobId: string | null; itemId: string | null };

export interface InferenceBridge {
  /** The absolute real path of the item's image in the workspace; rejects with a PermanentError when it is not in it. */
  resolveImage(item: Pick<ClaimedItem, 'imagePath'>): Promise<string>;
  /** Resolves with the caption; rejects with a PermanentError or TransientError, or the signal's reason once aborted. */
  caption(item: CaptionTarget, options: CallOptions): Promise<Caption>;
  /** Closes the pooled connections. */
  close(): Promise<void>;
}

export interface InferenceBridgeOptions {
  /** The bridge's address, without its /api/v1 prefix (src/config.ts strips one given). */
  url: string;
  timeoutMs: number;
  /** A timed-out call's item is retried (BRIDGE_RETRY_TIMEOUTS), or fails. */
  retryTimeouts: boolean;
  workspacePath: string;
  /** Where the bridge sees the workspace: image_path is built from it (BRIDGE_WORKSPACE_PATH). */
  bridgeWorkspacePath: string;
  /** Opens the jobs' sealed provider secrets (src/secrets.ts), with the keys before it. */
  secretsKey: Buffer | undefined;
  previousSecretsKeys?: readonly Buffer[];
  /** The stored providers jobs name. */
  providers: ProviderRegistry;
}

export function createInferenceBridge(options: InferenceBridgeOptions): InferenceBridge {
  const base = new URL(options.url);
  // Keep-alive connections to the bridge, as many as calls in flight (the caps bound them).
  const pool = new Pool(base.origin, { connections: null, pipelining: 1 });
  const route = `${base.pathname.replace(/\/+$/, '')}${CAPTION_PATH}`;
  // The workspace root's real path, resolved once (and again after a failure): each call then
  // costs one realpath, its image's.
  let realRoot: Promise<string> | undefined;
  const workspaceRoot = () =>
    (realRoot ??= realpath(options.workspacePath).catch((error: unknown) => {
      realRoot = undefined;
      throw error;
    }));

  const resolveImage = (item: Pick<ClaimedItem, 'imagePath'>) =>
    workspaceRoot()
      .then((root) => resolveInWorkspace(options.workspacePath, item.imagePath, root))
      .catch((error: Error) => {
        throw new PermanentError(`image ${item.imagePath} cannot be read in the workspace: ${error.message}`);
      });

  return {
    resolveImage,
    async caption(item, { signal, requestId, image, provider }) {
      const real = await (image ?? resolveImage(item));
      // The same file as the bridge sees it: its workspace root, then the path inside ours.
      const imagePath = path.posix.join(options.bridgeWorkspacePath, path.relative(await workspaceRoot(), real).split(path.sep).join('/'));
      const c = item.config;
      const config = await providerConfig(c, options, provider);
      const secrets = typeof config.api_key === 'string' && config.api_key.length >= 4 ? [config.api_key] : [];
      // Options the job leaves unset are left out (JSON drops undefined), so the bridge's own defaults apply.
      const body = JSON.stringify({
        perspective: item.perspective,
        image_path: imagePath,
        provider: c.provider,
        provider_config: config,
        model: c.model,
        max_tokens: c.maxTokens,
        temperature: c.temperature,
        top_p: c.topP,
        repetition_penalty: c.repetitionPenalty,
        context: c.context,
        global_context: c.globalContext,
        resize_resolution: c.resizeResolution,
      });
      if (signal.aborted) throw signal.reason;
      // One controller for the call: the caller's abort and the timeout both end it.
      const call = new AbortController();
      const onAbort = () => call.abort(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      const timer = setTimeout(() => call.abort(new BridgeTimeoutError(options.timeoutMs)), options.timeoutMs);
      try {
        const response = await pool.request({
          path: route,
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'x-request-id': requestId,
            ...(item.jobId ? { 'x-job-id': item.jobId } : {}),
            ...(item.itemId ? { 'x-item-id': item.itemId } : {}),
          },
          body,
          signal: call.signal,
        });
        if (response.statusCode < 200 || response.statusCode >= 300) {
          const text = await response.body.text().catch(() => '');
          const retryAfter = response.headers['retry-after'];
          throw classifyStatus(response.statusCode, errorMessage(text, secrets), Array.isArray(retryAfter) ? retryAfter[0] : retryAfter);
        }
        let answer: unknown;
        try {
          answer = await response.body.json();
        } catch (error) {
          if (call.signal.aborted) throw error;
          throw new TransientError(`Inference Bridge answer could not be read: ${(error as Error).message}`, { cause: error });
        }
        return parseCaption(answer);
      } catch (error) {
        if (signal.aborted) throw signal.reason;
        throw classifyError(call.signal.aborted ? call.signal.reason : error, options.retryTimeouts);
      } finally {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
      }
    },
    close: () => pool.close(),
  };
}

/**
 * The bridge's provider_config for the call, key in the clear, for the request body only: the
 * job's own (sealed at create) or the stored provider's as it is now.
 */
async function providerConfig(config: JobConfig, options: InferenceBridgeOptions, given?: CallProvider): Promise<Record<string, unknown>> {
  const value: unknown = config.providerConfig;
  if (value !== undefined) {
    if (!isSealed(value)) return value as Record<string, unknown>;
    // Transient: another replica, with the right key, may run the item.
    if (!options.secretsKey) throw new ReplicaError('the job has sealed provider secrets and this replica has no SECRETS_KEY');
    try {
      return open(value, options.secretsKey, options.previousSecretsKeys) as Record<string, unknown>;
    } catch {
      throw new ReplicaError("the job's provider secrets cannot be opened with this replica's SECRETS_KEY");
    }
  }
  const provider = given ?? (await options.providers.get(config.provider));
  if (!provider) throw new PermanentError(`there is no provider named ${config.provider} (create it under /api/providers)`);
  if (!provider.isEnabled) throw new ProviderUnavailableError(`provider ${config.provider} is disabled`);
  if (provider.misconfigured) throw new ProviderUnavailableError(`provider ${config.provider} is marked misconfigured: change it, then resume its jobs`);
  if (!provider.bridgeConfig) throw new ReplicaError(provider.problem ?? `provider ${config.provider} cannot be used here`);
  return provider.bridgeConfig;
}

/**
 * The bridge's reason for an error answer (FastAPI's `detail`, else `error` or `message`, else the
 * text), without the key it was sent (a provider's error may quote it) and without pydantic's
 * echo of the request's fields, capped.
 */
export function errorMessage(text: string, secrets: readonly string[] = []): string {
  let message = text;
  try {
    const parsed = JSON.parse(text) as Record<string, unknown>;
    const field = parsed.detail ?? parsed.error ?? parsed.message;
    if (field !== undefined) message = typeof field === 'string' ? field : JSON.stringify(field);
  } catch {
    // not JSON: keep the text
  }
  for (const secret of secrets) message = message.split(secret).join('[redacted]');
  message = message.replace(/input_value=\{.*?\}, input_type=/gs, 'input_value=[redacted], input_type=');
  return (message.trim() || 'no message').slice(0, MAX_MESSAGE);
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
