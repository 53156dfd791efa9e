/** The batch captioning queue: `/api/perspectives/batch/*`. Thin: parse, call the repository, shape. */
import { tracked } from '@trpc/server';
import { z } from 'zod';
import { captionCoverage } from '../db/captions.js';
import { eventMessage } from '../db/outbox.js';
import { findDataset } from '../db/datasets.js';
import { findImagesByPath } from '../db/images.js';
import { listItems, updateItem } from '../db/items.js';
import {
  archiveJob,
  cancelJob,
  createJob,
  getJob,
  listJobs,
  pauseJob,
  reorderJobs,
  restoreJob,
  resumeJob,
  retryFailedItems,
} from '../db/jobs.js';
import { findPerspectivesByName, listEnabledPerspectiveNames } from '../db/perspectives.js';
import { getStatistics } from '../db/statistics.js';
import { InvalidInputError, type FieldError } from '../errors.js';
import { sealJobConfig } from '../secrets.js';
import { internalProcedure, publicProcedure, router } from '../trpc.js';
import type { JobEventMessage } from './events.schemas.js';
import { fromClientPath, toWorkspaceRelative, workspacePathProblem, workspaceRoots } from '../workspace/paths.js';
import {
  analyzeInput,
  analyzeOutput,
  createJobInput,
  failedItemsInput,
  item,
  itemPage,
  itemUpdateInput,
  job,
  jobIdParam,
  jobPage,
  jobStatusInput,
  jobStatusOutput,
  listItemsInput,
  listJobsInput,
  reorderInput,
  reorderOutput,
  retryFailedOutput,
  statisticsInput,
  statisticsOutput,
  toItem,
  toJob,
} from './batch.schemas.js';
import { iso, isoOrNull, subscribeOrRefuse } from './common.js';

/** The job config with its own providerConfig, if any, in the bridge's snake_case (see inlineProviderConfig). */
function toBridgeShape(config: z.infer<typeof createJobInput>['config']) {
  const given = config.providerConfig;
  if (!given) return { ...config, providerConfig: undefined };
  const limits = given.rate_limits ?? (given.rateLimits && { requests_per_minute: given.rateLimits.requestsPerMinute, tokens_per_minute: given.rateLimits.tokensPerMinute });
  const providerConfig: Record<string, unknown> = {
    name: given.name ?? config.provider,
    kind: given.kind,
    environment: given.environment ?? 'cloud',
    base_url: given.base_url ?? given.baseUrl,
    api_key: given.api_key ?? given.apiKey,
    models: given.models ?? [config.model],
    fetch_models: given.fetch_models ?? given.fetchModels,
    rate_limits: limits,
  };
  return { ...config, providerConfig: JSON.parse(JSON.stringify(providerConfig)) as Record<string, unknown> };
}

/** The given paths a refused create named as unregistered images (its errors name imagePaths.<index>). */
function unknownImagePaths(error: unknown, given: readonly string[] | undefined): string[] {
  if (!(error instanceof InvalidInputError) || !given) return [];
  return error.errors.flatMap((e) => {
    const index = /^imagePaths\.(\d+)$/.exec(e.path)?.[1];
    return index !== undefined && e.message.startsWith('unknown image') ? [toWorkspaceRelative(given[Number(index)]!)] : [];
  });
}

const BASE = '/api/perspectives/batch';
const tags = ['batch'];

const errors = {
  input: { 400: 'Invalid input', 500: 'Unexpected error' },
  job: { 400: 'Invalid job id', 404: 'Job not found', 500: 'Unexpected error' },
  jobState: { 400: 'Invalid job id', 404: 'Job not found', 409: 'Not allowed in the job’s current state', 500: 'Unexpected error' },
};

export const batchRouter = router({
  create: publicProcedure
    .meta({
      openapi: {
        method: 'POST',
        path: `${BASE}/create`,
        tags,
        summary: 'Create a caption job',
        description:
          'Creates a job of (image, perspective) items: the job and its first items in one transaction, the rest ' +
          'written in the background within moments (totalImages counts them all from the start). Unknown images, ' +
          'perspectives, datasets or dependencies, or a job with no items, are refused with 400 and nothing is written. ' +
          'A repeated idempotencyKey returns the first job.',
        successDescription: 'The new job (or the first job created with the same idempotencyKey).',
        errorResponses: { 400: 'Invalid input: each failing field is named', 413: 'Body too large', 500: 'Unexpected error' },
      },
    })
    .input(createJobInput)
    .output(job)
    .mutation(async ({ ctx, input }) => {
      const config = sealJobConfig(toBridgeShape(input.config), ctx.config.SECRETS_KEY);
      const limits = { maxItems: ctx.config.MAX_JOB_ITEMS, chunkItems: ctx.config.JOB_ITEM_CHUNK };
      const roots = workspaceRoots(ctx.config);
      const imagePaths = input.imagePaths?.map((p) => fromClientPath(p, roots));
      const create = () => createJob(ctx.db, { ...input, imagePaths, config }, limits);
      const created = await create().catch(async (error: unknown) => {
        // Files copied in but not registered yet (the watcher may not have seen them): taken in now.
        const unknown = unknownImagePaths(error, imagePaths);
        if (unknown.length === 0 || (await ctx.workspace.register(unknown)).registered.length === 0) throw error;
        return create();
      });
      // Items past the first chunk are written after the answer.
      if (created.totalImages > limits.chunkItems) ctx.itemWriter.wake();
      return toJob(created);
    }),

  list: publicProcedure
    .meta({
      openapi: {
        method: 'GET',
        path: `${BASE}/list`,
        tags,
        summary: 'List jobs',
        description: 'Jobs filtered by status, type, user, archived and creation time; queue order by default.',
        successDescription: 'A page of jobs.',
        errorResponses: errors.input,
      },
    })
    .input(listJobsInput)
    .output(jobPage)
    .query(async ({ ctx, input }) => {
      const { items, total } = await listJobs(ctx.db, input);
      return { items: items.map(toJob), total, page: input.page, limit: input.limit };
    }),

  status: publicProcedure
    .meta({
      openapi: {
        method: 'GET',
        path: `${BASE}/status/{jobId}`,
        tags,
        summary: 'Get a job with a page of its items',
        description: 'The job’s status, counters, progress and timings, and a page of its items (filter with itemStatus).',
        successDescription: 'The job and a page of its items.',
        errorResponses: errors.job,
      },
    })
    .input(jobStatusInput)
    .output(jobStatusOutput)
    .query(async ({ ctx, input }) => {
      const row = await getJob(ctx.db, input.jobId);
      const items = await listItems(ctx.db, input.jobId, { status: input.itemStatus, page: input.page, limit: input.limit }, row);
      return {
        job: toJob(row),
        items: { items: items.items.map(toItem), total: items.total, page: input.page, limit: input.limit },
      };
    }),

  cancel: publicProcedure
    .meta({
      openapi: {
        method: 'POST',
        path: `${BASE}/cancel/{jobId}`,
        tags,
        summary: 'Cancel a pending, running or paused job',
        description: 'No more dispatch; unfinished items are cancelled. 409 when the job has already finished.',
        successDescription: 'The cancelled job.',
        errorResponses: errors.jobState,
      },
    })
    .input(jobIdParam)
    .output(job)
    .mutation(async ({ ctx, input }) => toJob(await cancelJob(ctx.db, input.jobId))),

  pause: publicProcedure
    .meta({
      openapi: {
        method: 'POST',
        path: `${BASE}/pause/{jobId}`,
        tags,
        summary: 'Pause a pending or running job',
        description:
          'Nothing new is dispatched; items already in flight finish and are recorded. The job keeps its queue ' +
          'position and frees its job slot for the next job. 409 unless the job is pending or running.',
        successDescription: 'The paused job.',
        errorResponses: errors.jobState,
      },
    })
    .input(jobIdParam)
    .output(job)
    .mutation(async ({ ctx, input }) => toJob(await pauseJob(ctx.db, input.jobId))),

  resume: publicProcedure
    .meta({
      openapi: {
        method: 'POST',
        path: `${BASE}/resume/{jobId}`,
        tags,
        summary: 'Resume a paused job',
        description:
          'Back to pending at its queue position; it runs again when a job slot is free. 409 unless the job is paused.',
        successDescription: 'The resumed job.',
        errorResponses: errors.jobState,
      },
    })
    .input(jobIdParam)
    .output(job)
    .mutation(async ({ ctx, input }) => toJob(await resumeJob(ctx.db, input.jobId))),

  reorder: publicProcedure
    .meta({
      openapi: {
        method: 'POST',
        path: `${BASE}/reorder`,
        tags,
        summary: 'Change queue order',
        description: 'Move jobs to explicit places in the queue, or set priorities. Returns the resulting queue.',
        successDescription: 'The queue after the change.',
        errorResponses: { 400: 'Invalid input', 404: 'Job not found', 409: 'A job has already finished', 500: 'Unexpected error' },
      },
    })
    .input(reorderInput)
    .output(reorderOutput)
    .mutation(async ({ ctx, input }) => ({ queue: await reorderJobs(ctx.db, input) })),

  analyzeImages: publicProcedure
    .meta({
      // A POST for its body only: it changes nothing, so the read token may call it.
      readsOnly: true,
      openapi: {
        method: 'POST',
        path: `${BASE}/analyze-images`,
        tags,
        summary: 'Which captions exist and which are missing',
        description: 'For images (paths or a dataset) and perspectives (default: every enabled one).',
        successDescription: 'Caption coverage: counts per perspective and the missing pairs.',
        errorResponses: errors.input,
      },
    })
    .input(analyzeInput)
    .output(analyzeOutput)
    .mutation(async ({ ctx, input }) => {
      const fieldErrors: FieldError[] = [];
      const names = input.perspectives ?? (await listEnabledPerspectiveNames(ctx.db));
      const found = new Map((await findPerspectivesByName(ctx.db, names)).map((p) => [p.name, p]));
      names.forEach((n, i) => {
        if (!found.has(n)) fieldErrors.push({ path: `perspectives.${i}`, message: `unknown perspective ${JSON.stringify(n)}` });
      });
      let images: { ids: string[] } | { datasetId: string } | undefined;
      if (input.imagePaths) {
        const roots = workspaceRoots(ctx.config);
        input.imagePaths = input.imagePaths.map((p) => fromClientPath(p, roots));
        input.imagePaths.forEach((p, i) => {
          const problem = workspacePathProblem(p);
          if (problem) fieldErrors.push({ path: `imagePaths.${i}`, message: problem });
        });
        if (fieldErrors.length === 0) {
          const rows = await findImagesByPath(ctx.db, input.imagePaths.map(toWorkspaceRelative));
          const known = new Set(rows.map((r) => r.path));
          input.imagePaths.forEach((p, i) => {
            if (!known.has(toWorkspaceRelative(p))) fieldErrors.push({ path: `imagePaths.${i}`, message: `unknown image ${JSON.stringify(p)}` });
          });
          images = { ids: rows.map((r) => r.id) };
        }
      } else {
        const dataset = await findDataset(ctx.db, { id: input.datasetId, name: input.datasetName });
        if (!dataset) fieldErrors.push({ path: input.datasetId ? 'datasetId' : 'datasetName', message: 'unknown dataset' });
        else images = { datasetId: dataset.id };
      }
      if (fieldErrors.length > 0 || !images) {
        throw new InvalidInputError(fieldErrors.map((e) => `${e.path}: ${e.message}`).join('; '), fieldErrors);
      }
      const coverage = await captionCoverage(ctx.db, {
        images,
        perspectives: names.map((n) => ({ id: found.get(n)!.id, name: n })),
        missingLimit: input.missingLimit,
      });
      return { ...coverage, perspectives: names };
    }),

  archive: publicProcedure
    .meta({
      openapi: {
        method: 'POST',
        path: `${BASE}/archive/{jobId}`,
        tags,
        summary: 'Archive a finished job',
        description: 'Its items move to job_archives. 409 when the job has not finished or is already archived.',
        successDescription: 'The archived job.',
        errorResponses: errors.jobState,
      },
    })
    .input(jobIdParam)
    .output(job)
    .mutation(async ({ ctx, input }) => toJob(await archiveJob(ctx.db, input.jobId))),

  restore: publicProcedure
    .meta({
      openapi: {
        method: 'POST',
        path: `${BASE}/restore/{jobId}`,
        tags,
        summary: 'Restore an archived job',
        description: 'Brings an archived job and its items back from job_archives. 409 when the job is not archived.',
        successDescription: 'The restored job.',
        errorResponses: errors.jobState,
      },
    })
    .input(jobIdParam)
    .output(job)
    .mutation(async ({ ctx, input }) => toJob(await restoreJob(ctx.db, input.jobId))),

  retryFailed: publicProcedure
    .meta({
      openapi: {
        method: 'POST',
        path: `${BASE}/retry-failed/{jobId}`,
        tags,
        summary: 'Put a job’s failed items back in the queue',
        description: 'Takes a partial or failed job back to pending; returns how many items were retried.',
        successDescription: 'How many items went back to the queue, and the job.',
        errorResponses: errors.jobState,
      },
    })
    .input(jobIdParam)
    .output(retryFailedOutput)
    .mutation(async ({ ctx, input }) => {
      const { retried, job: row } = await retryFailedItems(ctx.db, input.jobId);
      return { retried, job: toJob(row) };
    }),

  statistics: publicProcedure
    .meta({
      openapi: {
        method: 'GET',
        path: `${BASE}/statistics`,
        tags,
        summary: 'Queue statistics',
        description:
          'Jobs and items by status, throughput, processing time (mean, p95), failure rate, oldest pending job, the adaptive ' +
          'dispatch state per provider, misconfigured providers, and the Inference Bridge’s state.',
        successDescription: 'Queue figures.',
        errorResponses: errors.input,
      },
    })
    .input(statisticsInput)
    .output(statisticsOutput)
    .query(async ({ ctx, input }) => {
      const stats = await getStatistics(ctx.db, input.windowMinutes);
      const providers = stats.providers.map((p) => ({
        ...p,
        blockedUntil: isoOrNull(p.blockedUntil),
        openUntil: isoOrNull(p.openUntil),
      }));
      const misconfiguredProviders = stats.misconfiguredProviders.map((p) => ({ ...p, since: iso(p.since) }));
      const monitor = ctx.bridge?.monitor.snapshot();
      const bridge = monitor ? { state: monitor.state, unknownPerspectives: monitor.unknownPerspectives } : null;
      return { ...stats, providers, misconfiguredProviders, bridge, generatedAt: iso(stats.generatedAt) };
    }),

  updateItem: internalProcedure
    .meta({
      openapi: {
        method: 'POST',
        path: `${BASE}/items/{itemId}`,
        tags: ['batch-internal'],
        summary: 'Update one item (internal, for external executors)',
        description:
          'Status, result, error, processing time. Transitions that do not exist are 409; a repeated identical ' +
          'update is accepted and changes nothing. Completing an item stores its caption.',
        successDescription: 'The item after the update.',
        errorResponses: {
          400: 'Invalid input',
          401: 'Missing or wrong token (the internal token when INTERNAL_TOKEN is set)',
          404: 'Item not found',
          409: 'Transition not allowed',
          500: 'Unexpected error',
        },
      },
    })
    .input(itemUpdateInput)
    .output(item)
    .mutation(async ({ ctx, input }) => {
      const { itemId, ...update } = input;
      return toItem(await updateItem(ctx.db, itemId, update));
    }),

  items: publicProcedure
    .meta({
      openapi: {
        method: 'GET',
        path: `${BASE}/items/{jobId}/list`,
        tags,
        summary: 'List a job’s items',
        description: 'Paginated, in the job’s order, filterable by status and perspective. Completed items carry their caption.',
        successDescription: 'A page of the job’s items.',
        errorResponses: errors.job,
      },
    })
    .input(listItemsInput)
    .output(itemPage)
    .query(async ({ ctx, input }) => {
      const { items, total } = await listItems(ctx.db, input.jobId, input);
      return { items: items.map(toItem), total, page: input.page, limit: input.limit };
    }),

  /**
   * Live job events (JOB_CREATED, JOB_STATUS_CHANGED, JOB_PROGRESS) over SSE, for all jobs or one.
   * Each event is `tracked` by its sequence number, so the client's reconnects resume where they
   * stopped. REST clients use `GET /api/perspectives/batch/events`.
   */
  events: publicProcedure
    .input(z.object({ jobId: z.uuid().optional(), lastEventId: z.string().regex(/^\d+$/).nullish() }).optional())
    .subscription(async function* ({ ctx, input, signal }) {
      const afterSeq = input?.lastEventId ? Number(input.lastEventId) : undefined;
      const subscription = subscribeOrRefuse(() => ctx.events.subscribe({ kind: 'job', jobId: input?.jobId }, afterSeq, ctx.scope));
      signal?.addEventListener('abort', () => subscription.close());
      for await (const event of subscription) yield tracked(String(event.seq), eventMessage(event) as JobEventMessage);
    }),

  failedItems: publicProcedure
    .meta({
      openapi: {
        method: 'GET',
        path: `${BASE}/items/{jobId}/failed`,
        tags,
        summary: 'List a job’s failed items with their errors',
        description: 'The job’s failed items, paginated, each with the error that failed it.',
        successDescription: 'A page of the job’s failed items.',
        errorResponses: errors.job,
      },
    })
    .input(failedItemsInput)
    .output(itemPage)
    .query(async ({ ctx, input }) => {
      const { items, total } = await listItems(ctx.db, input.jobId, { ...input, status: ['failed'] });
      return { items: items.map(toItem), total, page: input.page, limit: input.limit };
    }),
});
