/**
 * The graphcap UI's way in: a typed tRPC client of the Data Service, built on `@trpc/client` and
 * the `AppRouter` type from `graphcap-data-service/client` (types only). It shows a mutation
 * (create a job), the live progress subscription (`batch.events`, over server-sent events), queries
 * (status, items) and a typed error.
 *
 * Run it against a service that has an Inference Bridge (see README.md):
 *   node --import tsx clients/trpc-example/example.ts http://127.0.0.1:32550
 */
import { pathToFileURL } from 'node:url';
import { createTRPCClient, httpBatchLink, httpSubscriptionLink, splitLink, TRPCClientError } from '@trpc/client';
// Browsers have EventSource; Node 20 needs this package for the subscription link.
import { EventSource } from 'eventsource';
import type { AppRouter, CreateJobInput, Job, JobEvent, JobItem } from 'graphcap-data-service/client';

export function createDataServiceClient(url: string, token?: string) {
  const authorization = token ? { Authorization: `Bearer ${token}` } : undefined;
  return createTRPCClient<AppRouter>({
    links: [
      splitLink({
        condition: (op) => op.type === 'subscription',
        true: httpSubscriptionLink({
          url: `${url}/api/trpc`,
          EventSource,
          // The eventsource package lets a token ride along (browsers send cookies instead).
          eventSourceOptions: authorization
            ? { fetch: (input, init) => fetch(input, { ...init, headers: { ...init?.headers, ...authorization } }) }
            : undefined,
        }),
        false: httpBatchLink({ url: `${url}/api/trpc`, headers: authorization, maxItems: 50 }),
      }),
    ],
  });
}

export type DataServiceClient = ReturnType<typeof createDataServiceClient>;

const FINISHED = ['completed', 'partial', 'failed', 'cancelled'];

/** Creates a job, follows its live events until it ends, and reads the result. */
export async function captionAndFollow(
  client: DataServiceClient,
  input: CreateJobInput,
  onEvent: (event: JobEvent) => void = () => {},
): Promise<{ job: Job; items: JobItem[] }> {
  // Mutation: the input is checked against the router's zod schema at compile time and again on the server.
  const created = await client.batch.create.mutate(input);

  // Subscription: this job's events. lastEventId '0' replays the job's events from the start, so
  // nothing is lost between the create and the stream opening.
  await new Promise<void>((resolve, reject) => {
    const subscription = client.batch.events.subscribe(
      { jobId: created.jobId, lastEventId: '0' },
      {
        onData: ({ data: event }) => {
          onEvent(event);
          if (event.type === 'JOB_STATUS_CHANGED' && FINISHED.includes(String(event.data.newStatus))) {
            subscription.unsubscribe();
            resolve();
          }
        },
        onError: (error) => {
          subscription.unsubscribe();
          reject(error);
        },
      },
    );
  });

  // Queries: the job with its counters, and its items with their captions (typed outputs).
  const { job } = await client.batch.status.query({ jobId: created.jobId, limit: 1 });
  const { items } = await client.batch.items.query({ jobId: created.jobId, limit: 100 });
  return { job, items };
}

/** Errors are TRPCClientError<AppRouter>: `data.code` is the tRPC code, `data.errors` names failing fields. */
export async function findJob(client: DataServiceClient, jobId: string): Promise<Job | undefined> {
  try {
    return (await client.batch.status.query({ jobId })).job;
  } catch (error) {
    if (error instanceof TRPCClientError && (error as TRPCClientError<AppRouter>).data?.code === 'NOT_FOUND') return undefined;
    throw error;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const client = createDataServiceClient(process.argv[2] ?? 'http://127.0.0.1:32550', process.env.API_TOKEN);
  const { job, items } = await captionAndFollow(
    client,
    {
      type: 'DATASET_PERSPECTIVE',
      datasetName: 'os_img',
      perspectives: ['art_critic'],
      config: { provider: 'gemini', model: 'gemini-2.0-flash-exp' },
    },
    (event) => console.log(event.type, JSON.stringify(event.data)),
  );
  console.log(`job ${job.jobId} ${job.status}: ${job.processedImages} of ${job.totalImages} captioned`);
  for (const item of items.slice(0, 2)) console.log(item.imagePath, JSON.stringify(item.result).slice(0, 120));
  console.log('unknown job:', await findJob(client, '00000000-0000-4000-8000-000000000000'));
}
