/**
 * Type-level tests of the tRPC contract the graphcap UI compiles against (src/client.ts). They fail
 * (at type-check time: `npm run typecheck`, and vitest's typecheck of this file) when a schema
 * change alters what the UI sees. A deliberate contract change updates this file with it.
 */
import type { createTRPCClient, TRPCClientError } from '@trpc/client';
import { describe, expectTypeOf, it } from 'vitest';
import type {
  AppRouter,
  CreateJobInput,
  DataEvent,
  ErrorData,
  ItemStatus,
  Job,
  JobEvent,
  JobItem,
  JobStatus,
  JobType,
  RouterInputs,
  RouterOutputs,
} from '../../src/client.js';

/** The keys a caller must give. */
type RequiredKeys<T> = { [K in keyof T]-?: object extends Pick<T, K> ? never : K }[keyof T];
type Client = ReturnType<typeof createTRPCClient<AppRouter>>;

type JobStatuses = 'pending' | 'running' | 'paused' | 'completed' | 'partial' | 'failed' | 'cancelled';
type ItemStatuses = 'pending' | 'running' | 'completed' | 'failed' | 'cancelled';
type JobTypes = 'MULTI_PERSPECTIVE' | 'DATASET_PERSPECTIVE' | 'BACKFILL' | 'DEPENDENCY_CHAIN';
/** The data event variant whose `type` may be T. */
type VariantOf<E, T extends string> = E extends { type: infer U } ? (T extends U ? E : never) : never;
type EventOf<T extends string> = VariantOf<DataEvent, T>;
type Page<T> = { items: T[]; total: number; page: number; limit: number };

describe('the tRPC contract (types)', () => {
  it('exposes the batch and workspace procedures with the right kinds', () => {
    expectTypeOf<Client['batch']['create']>().toHaveProperty('mutate');
    expectTypeOf<Client['batch']['cancel']>().toHaveProperty('mutate');
    expectTypeOf<Client['batch']['pause']>().toHaveProperty('mutate');
    expectTypeOf<Client['batch']['resume']>().toHaveProperty('mutate');
    expectTypeOf<Client['batch']['reorder']>().toHaveProperty('mutate');
    expectTypeOf<Client['batch']['retryFailed']>().toHaveProperty('mutate');
    expectTypeOf<Client['batch']['updateItem']>().toHaveProperty('mutate');
    expectTypeOf<Client['workspace']['sync']>().toHaveProperty('mutate');
    expectTypeOf<Client['batch']['list']>().toHaveProperty('query');
    expectTypeOf<Client['batch']['status']>().toHaveProperty('query');
    expectTypeOf<Client['batch']['items']>().toHaveProperty('query');
    expectTypeOf<Client['batch']['failedItems']>().toHaveProperty('query');
    expectTypeOf<Client['batch']['statistics']>().toHaveProperty('query');
    expectTypeOf<Client['batch']['events']>().toHaveProperty('subscribe');
  });

  it('create requires type, perspectives and config (provider, model), and nothing else', () => {
    expectTypeOf<RequiredKeys<CreateJobInput>>().toEqualTypeOf<'type' | 'perspectives' | 'config'>();
    expectTypeOf<RequiredKeys<CreateJobInput['config']>>().toEqualTypeOf<'provider' | 'model'>();
    expectTypeOf<CreateJobInput['type']>().toEqualTypeOf<JobTypes>();
    expectTypeOf<CreateJobInput['perspectives']>().toEqualTypeOf<string[]>();
    expectTypeOf<CreateJobInput['imagePaths']>().toEqualTypeOf<string[] | undefined>();
    expectTypeOf<CreateJobInput['datasetId']>().toEqualTypeOf<string | undefined>();
    expectTypeOf<CreateJobInput['datasetName']>().toEqualTypeOf<string | undefined>();
    expectTypeOf<CreateJobInput['priority']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<CreateJobInput['dependsOn']>().toEqualTypeOf<string[] | undefined>();
    expectTypeOf<CreateJobInput['idempotencyKey']>().toEqualTypeOf<string | undefined>();
    expectTypeOf<CreateJobInput['config']['temperature']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<NonNullable<CreateJobInput['config']['providerConfig']>['api_key']>().toEqualTypeOf<string | undefined>();
    expectTypeOf<RouterInputs['batch']['create']>().toEqualTypeOf<CreateJobInput>();
    expectTypeOf<RouterOutputs['batch']['create']>().toEqualTypeOf<Job>();
  });

  it('a job has counters, progress, statuses and ISO timestamps, and never its provider secrets', () => {
    expectTypeOf<JobStatus>().toEqualTypeOf<JobStatuses>();
    expectTypeOf<JobType>().toEqualTypeOf<JobTypes>();
    expectTypeOf<Job['jobId']>().toEqualTypeOf<string>();
    expectTypeOf<Job['progress']>().toEqualTypeOf<number>();
    expectTypeOf<Job['totalImages']>().toEqualTypeOf<number>();
    expectTypeOf<Job['processedImages']>().toEqualTypeOf<number>();
    expectTypeOf<Job['failedImages']>().toEqualTypeOf<number>();
    expectTypeOf<Job['queuePosition']>().toEqualTypeOf<number | null>();
    expectTypeOf<Job['createdAt']>().toEqualTypeOf<string>();
    expectTypeOf<Job['startedAt']>().toEqualTypeOf<string | null>();
    expectTypeOf<Job['completedAt']>().toEqualTypeOf<string | null>();
    expectTypeOf<Job['archived']>().toEqualTypeOf<boolean>();
    expectTypeOf<Job['dependsOn']>().toEqualTypeOf<string[]>();
    expectTypeOf<Job['config']['hasProviderConfig']>().toEqualTypeOf<boolean>();
    expectTypeOf<Job['config']>().not.toHaveProperty('providerConfig');
  });

  it('status returns the job and a page of items whose status is the item union', () => {
    type Status = RouterOutputs['batch']['status'];
    expectTypeOf<Status['job']>().toEqualTypeOf<Job>();
    expectTypeOf<Status['job']['progress']>().toEqualTypeOf<number>();
    expectTypeOf<Status['items']>().toEqualTypeOf<Page<JobItem>>();
    expectTypeOf<Status['items']['items'][number]['status']>().toEqualTypeOf<ItemStatuses>();
    expectTypeOf<ItemStatus>().toEqualTypeOf<ItemStatuses>();
    expectTypeOf<JobItem['result']>().toEqualTypeOf<Record<string, unknown> | null>();
    expectTypeOf<JobItem['processingTime']>().toEqualTypeOf<number | null>();
    expectTypeOf<JobItem['captionId']>().toEqualTypeOf<string | null>();
    expectTypeOf<RequiredKeys<RouterInputs['batch']['status']>>().toEqualTypeOf<'jobId'>();
    expectTypeOf<RouterInputs['batch']['status']['itemStatus']>().toEqualTypeOf<ItemStatuses[] | undefined>();
  });

  it('lists are pages with their filters', () => {
    expectTypeOf<RouterOutputs['batch']['list']>().toEqualTypeOf<Page<Job>>();
    expectTypeOf<RouterOutputs['batch']['items']>().toEqualTypeOf<Page<JobItem>>();
    expectTypeOf<RouterOutputs['batch']['failedItems']>().toEqualTypeOf<Page<JobItem>>();
    // The whole input is optional: `list.query()` works.
    expectTypeOf<undefined>().toExtend<RouterInputs['batch']['list']>();
    type ListInput = Exclude<RouterInputs['batch']['list'], void | undefined>;
    expectTypeOf<RequiredKeys<ListInput>>().toEqualTypeOf<never>();
    expectTypeOf<ListInput['status']>().toEqualTypeOf<JobStatuses[] | undefined>();
    expectTypeOf<ListInput['type']>().toEqualTypeOf<JobTypes[] | undefined>();
    expectTypeOf<ListInput['archived']>().toEqualTypeOf<boolean | undefined>();
    expectTypeOf<ListInput['order']>().toEqualTypeOf<'asc' | 'desc' | undefined>();
    expectTypeOf<ListInput['page']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<ListInput['limit']>().toEqualTypeOf<number | undefined>();
  });

  it('retry-failed, reorder and statistics have their documented shapes', () => {
    expectTypeOf<RouterOutputs['batch']['retryFailed']>().toEqualTypeOf<{ retried: number; job: Job }>();
    expectTypeOf<RouterOutputs['batch']['reorder']['queue'][number]>().toEqualTypeOf<{
      jobId: string;
      position: number;
      priority: number;
      status: JobStatuses;
    }>();
    type Stats = RouterOutputs['batch']['statistics'];
    expectTypeOf<Stats['jobs']>().toEqualTypeOf<Record<JobStatuses | 'total', number>>();
    expectTypeOf<Stats['items']>().toEqualTypeOf<Record<ItemStatuses | 'total', number>>();
    expectTypeOf<Stats['failureRate']>().toEqualTypeOf<number | null>();
    expectTypeOf<Stats['processingTime']>().toEqualTypeOf<{ meanMs: number | null; p95Ms: number | null }>();
  });

  it('the progress subscription yields job events', () => {
    expectTypeOf<JobEvent['type']>().toEqualTypeOf<'JOB_CREATED' | 'JOB_STATUS_CHANGED' | 'JOB_PROGRESS'>();
    expectTypeOf<JobEvent['data']['status']>().toEqualTypeOf<JobStatuses>();
    expectTypeOf<JobEvent['jobId']>().toEqualTypeOf<string | null>();
    expectTypeOf<JobEvent['seq']>().toEqualTypeOf<number>();
    expectTypeOf<JobEvent['occurredAt']>().toEqualTypeOf<string>();
    type EventsInput = Exclude<RouterInputs['batch']['events'], void | undefined>;
    expectTypeOf<EventsInput>().toEqualTypeOf<{ jobId?: string | undefined; lastEventId?: string | null | undefined }>();
  });

  it('the data subscription yields data change events, each payload narrowed by its type', () => {
    expectTypeOf<'CAPTION_CREATED' | 'DATASET_MEMBERS_CHANGED' | 'PROVIDER_UPDATED'>().toExtend<DataEvent['type']>();
    expectTypeOf<DataEvent['data']['ids']>().toEqualTypeOf<string[]>();
    type Members = EventOf<'DATASET_MEMBERS_CHANGED'>['data'];
    expectTypeOf<Members['added']>().toEqualTypeOf<string[]>();
    expectTypeOf<Members['datasetId']>().toEqualTypeOf<string>();
    type Perspective = EventOf<'PERSPECTIVE_UPDATED'>['data'];
    expectTypeOf<Perspective['newRevision']>().toEqualTypeOf<boolean | undefined>();
    // A provider event names the fields that changed; it has no field for a key.
    type ProviderData = EventOf<'PROVIDER_UPDATED'>['data'];
    expectTypeOf<keyof ProviderData>().toEqualTypeOf<'entity' | 'source' | 'ids' | 'name' | 'changes'>();
    type EventsInput = Exclude<RouterInputs['events']['data'], void | undefined>;
    expectTypeOf<EventsInput['entity']>().toEqualTypeOf<('image' | 'dataset' | 'perspective' | 'caption' | 'provider')[] | undefined>();
  });

  it('errors carry the code, HTTP status and the failing fields', () => {
    expectTypeOf<NonNullable<TRPCClientError<AppRouter>['data']>>().toEqualTypeOf<ErrorData>();
    expectTypeOf<ErrorData['errors']>().toEqualTypeOf<{ path: string; message: string }[]>();
    expectTypeOf<ErrorData['httpStatus']>().toEqualTypeOf<number>();
  });
});
