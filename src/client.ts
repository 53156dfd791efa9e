/**
 * The typed tRPC contract for the graphcap UI, from one entry point (`graphcap-data-service/client`):
 * types only, so importing it pulls no server code into a bundle.
 *
 * ```ts
 * import type { AppRouter, RouterInputs, RouterOutputs } from 'graphcap-data-service/client';
 * const trpc = createTRPCClient<AppRouter>({ links: [httpBatchLink({ url: 'http://127.0.0.1:32550/api/trpc', maxItems: 50 })] });
 * ```
 *
 * See clients/trpc-example for queries, mutations and the live progress subscription.
 */
import type { inferRouterInputs, inferRouterOutputs } from '@trpc/server';
import type { AppRouter } from './routers/index.js';
import type { ErrorData } from './trpc.js';

export type { AppRouter };
/** Every procedure's input, e.g. `RouterInputs['batch']['create']`. */
export type RouterInputs = inferRouterInputs<AppRouter>;
/** Every procedure's output, e.g. `RouterOutputs['batch']['status']`. */
export type RouterOutputs = inferRouterOutputs<AppRouter>;
/** `TRPCClientError<AppRouter>['data']`: the code, HTTP status and failing fields of an error. */
export type { ErrorData };

export type Job = RouterOutputs['batch']['status']['job'];
export type JobItem = RouterOutputs['batch']['status']['items']['items'][number];
export type JobStatus = Job['status'];
export type ItemStatus = JobItem['status'];
export type JobType = Job['type'];
export type CreateJobInput = RouterInputs['batch']['create'];
/** What `batch.events` yields: `{ id, data }`, where `id` is the event's sequence number (for resuming). */
export type TrackedJobEvent = RouterOutputs['batch']['events'] extends AsyncIterable<infer E> ? E : never;
/** One live job event (JOB_CREATED, JOB_STATUS_CHANGED, JOB_PROGRESS), as `onData` receives it in `.data`. */
export type JobEvent = TrackedJobEvent extends { data: infer D } ? D : never;
/** What `events.data` yields: `{ id, data }`, `id` being the event's sequence number. */
export type TrackedDataEvent = RouterOutputs['events']['data'] extends AsyncIterable<infer E> ? E : never;
/** One data change event (IMAGE_CREATED ... PROVIDER_DELETED), narrowed by its `type`. */
export type DataEvent = TrackedDataEvent extends { data: infer D } ? D : never;
/** A stored AI provider, as every read of one answers (the key itself is never returned: `hasApiKey`). */
export type Provider = RouterOutputs['providers']['get'];
/** What `access` answers: whether the service wants a token, and whether the caller may read and write. */
export type Access = RouterOutputs['access'];
