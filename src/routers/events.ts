/**
 * Data change events over the tRPC subscription (SSE underneath): what happened to images,
 * datasets, perspectives, captions and providers (REST clients use `GET /api/events`); and the
 * events the message broker would not take.
 */
import { tracked } from '@trpc/server';
import { eventMessage, listDeadLetters } from '../db/outbox.js';
import { publicProcedure, router } from '../trpc.js';
import { iso, subscribeOrRefuse } from './common.js';
import { dataEventsInput, deadLetterPage, deadLettersInput, type DataEventMessage } from './events.schemas.js';

export const eventsRouter = router({
  /**
   * Data change events, of all entity types or those in `entity`, optionally only those about one
   * dataset or caused by one job. Each is `tracked` by its sequence number, so the client's
   * reconnects resume where they stopped.
   */
  data: publicProcedure.input(dataEventsInput).subscription(async function* ({ ctx, input, signal }) {
    const afterSeq = input?.lastEventId ? Number(input.lastEventId) : undefined;
    const filter = { kind: 'data' as const, entities: input?.entity, datasetId: input?.datasetId, jobId: input?.jobId };
    const subscription = subscribeOrRefuse(() => ctx.events.subscribe(filter, afterSeq, ctx.scope));
    signal?.addEventListener('abort', () => subscription.close());
    for await (const event of subscription) yield tracked(String(event.seq), eventMessage(event) as DataEventMessage);
  }),

  deadLetters: publicProcedure
    .meta({
      openapi: {
        method: 'GET',
        path: '/api/events/dead-letters',
        tags: ['events'],
        summary: 'List events the message broker would not take',
        description:
          'Events moved aside, newest first: the broker refused them BROKER_MAX_REFUSALS times with a 4xx other than 408 and ' +
          '429, or they waited EVENT_MAX_UNDELIVERED_HOURS. Their stream’s later events went out. Kept EVENT_RETENTION_HOURS.',
        errorResponses: { 400: 'Invalid page', 500: 'Unexpected error' },
      },
    })
    .input(deadLettersInput)
    .output(deadLetterPage)
    .query(async ({ ctx, input }) => {
      const { items, total } = await listDeadLetters(ctx.db, { limit: input.limit, offset: (input.page - 1) * input.limit });
      return {
        items: items.map((d) => ({ ...d, occurredAt: iso(d.occurredAt), deadAt: iso(d.deadAt) })),
        total,
        page: input.page,
        limit: input.limit,
      };
    }),
});
