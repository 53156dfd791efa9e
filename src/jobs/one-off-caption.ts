/**
 * A caption made at once for one image and perspective (graphcap studio's interactive view),
 * through the service so the browser never holds an API key: the stored provider's key goes to
 * the bridge from here. The same provider rules as jobs apply: enabled, not misconfigured, a model
 * it lists, its stored rate limit, and no call while its circuit breaker is open. The caption is
 * stored like any other (no job), and returned.
 */
import { TRPCError } from '@trpc/server';
import { sql } from 'drizzle-orm';
import { createCaption, type CaptionRow } from '../db/captions.js';
import type { Db } from '../db/client.js';
import type { JobConfig } from '../db/jobs.js';
import { findImagesByPath, getImage } from '../db/images.js';
import { findPerspectivesByName } from '../db/perspectives.js';
import { findProviderByName, markProviderMisconfigured, providerProblems } from '../db/providers.js';
import { InvalidInputError } from '../errors.js';
import type { BridgeContext } from '../trpc.js';
import { fromClientPath, toWorkspaceRelative, workspacePathProblem } from '../workspace/paths.js';
import { classifyError, PermanentError, ProviderAuthError, ThrottledError } from './errors.js';

export interface OneOffInput {
  imageId?: string;
  imagePath?: string;
  perspective: string;
  provider: string;
  model?: string;
  options?: Omit<JobConfig, 'provider' | 'model' | 'providerConfig'>;
}

export async function generateCaption(
  deps: { db: Db; bridge: BridgeContext | undefined; requestId: string; retryTimeouts: boolean; workspaceRoots: readonly string[]; signal?: AbortSignal },
  input: OneOffInput,
): Promise<CaptionRow> {
  const { db, bridge } = deps;
  if (!bridge) throw new TRPCError({ code: 'SERVICE_UNAVAILABLE', message: 'INFERENCE_BRIDGE_URL is not set: no caption can be made' });
  if (bridge.monitor.state === 'incompatible') {
    throw new TRPCError({ code: 'SERVICE_UNAVAILABLE', message: `the Inference Bridge is incompatible: ${bridge.monitor.snapshot().detail}` });
  }
  const image = await findImage(db, input, deps.workspaceRoots);
  const [perspective] = await findPerspectivesByName(db, [input.perspective]);
  if (!perspective || !perspective.enabled) {
    const message = perspective ? `perspective ${input.perspective} is disabled` : `unknown perspective ${JSON.stringify(input.perspective)}`;
    throw new InvalidInputError(message, [{ path: 'perspective', message }]);
  }
  const stored = await findProviderByName(db, input.provider);
  if (!stored) {
    const message = `unknown provider ${JSON.stringify(input.provider)} (create it with POST /api/providers)`;
    throw new InvalidInputError(`provider: ${message}`, [{ path: 'provider', message }]);
  }
  const model = input.model ?? stored.defaultModel ?? stored.models.find((m) => m.isEnabled)?.name;
  if (!model) throw new InvalidInputError('model: required (the provider has no default model)', [{ path: 'model', message: 'required (the provider has no default model)' }]);
  // The job's field names are config.*; this input's are top-level.
  const problems = (await providerProblems(db, { provider: input.provider, model })).map((e) => ({ ...e, path: e.path.replace(/^config\./, '') }));
  if (problems.length > 0) throw new InvalidInputError(problems.map((e) => `${e.path}: ${e.message}`).join('; '), problems);
  if (stored.misconfiguredAt) {
    throw new TRPCError({ code: 'CONFLICT', message: `provider ${stored.name} refused its credentials (${stored.misconfiguredReason}): change it first` });
  }
  await refuseWhileBreakerOpen(db, input.provider, model);
  const waitMs = bridge.pacer.take(input.provider, stored.requestsPerMinute);
  if (waitMs > 0) {
    throw new TRPCError({ code: 'TOO_MANY_REQUESTS', message: `provider ${input.provider} is at its rate limit: try again in ${Math.ceil(waitMs / 1000)} s` });
  }
  const config: JobConfig = { ...input.options, provider: input.provider, model };
  let caption;
  try {
    caption = await bridge.client.caption(
      { jobId: null, itemId: null, imagePath: image.path, perspective: input.perspective, config },
      { signal: deps.signal ?? new AbortController().signal, requestId: deps.requestId },
    );
  } catch (error) {
    const failure = classifyError(error, deps.retryTimeouts);
    if (failure instanceof ProviderAuthError) await markProviderMisconfigured(db, input.provider, failure.message);
    if (failure instanceof ThrottledError) throw new TRPCError({ code: 'TOO_MANY_REQUESTS', message: failure.message });
    throw new TRPCError({ code: failure instanceof PermanentError ? 'BAD_GATEWAY' : 'SERVICE_UNAVAILABLE', message: failure.message });
  }
  return createCaption(db, {
    imageId: image.id,
    perspectiveId: perspective.id,
    model,
    provider: input.provider,
    result: caption.result,
    rawText: caption.rawText,
  });
}

/** The image by id, or by a workspace path in any form the API takes; a 400 naming the field otherwise. */
async function findImage(db: Db, input: OneOffInput, roots: readonly string[]): Promise<{ id: string; path: string }> {
  if (input.imageId) {
    const row = await getImage(db, input.imageId).catch(() => undefined);
    if (!row) throw new InvalidInputError(`imageId: unknown image ${input.imageId}`, [{ path: 'imageId', message: `unknown image ${input.imageId}` }]);
    return { id: row.id, path: row.path };
  }
  const given = fromClientPath(input.imagePath ?? '', roots);
  const problem = workspacePathProblem(given);
  if (problem) throw new InvalidInputError(`imagePath: ${problem}`, [{ path: 'imagePath', message: problem }]);
  const [row] = await findImagesByPath(db, [toWorkspaceRelative(given)]);
  if (!row) {
    const message = `unknown image ${JSON.stringify(given)} (not registered; sync its dataset first)`;
    throw new InvalidInputError(`imagePath: ${message}`, [{ path: 'imagePath', message }]);
  }
  return { id: row.id, path: row.path };
}

/** 503 while the (provider, model)'s circuit breaker is open and its cool-down has not passed. */
async function refuseWhileBreakerOpen(db: Db, provider: string, model: string): Promise<void> {
  const { rows } = await db.execute<{ waitMs: number }>(sql`
    select ceil(extract(epoch from open_until - now()) * 1000)::int as "waitMs" from job_queue.provider_states
    where provider = ${provider} and model = ${model} and breaker = 'open' and open_until > now()`);
  if (rows[0]) {
    throw new TRPCError({
      code: 'SERVICE_UNAVAILABLE',
      message: `provider ${provider} (model ${model}) is failing: its circuit breaker is open for ${Math.ceil(rows[0].waitMs / 1000)} s more`,
    });
  }
}
