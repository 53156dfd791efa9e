/**
 * Data change events over the tRPC subscription (SSE underneath): what happened to images,
 * datasets, perspectives, captions and providers. REST clients use `GET /api/events`.
 */
import { tracked } from '@trpc/server';
import { eventMessage } from '../db/outbox.js';
import { publicProcedure, router } from '../trpc.js';
import { subscribeOrRefuse } from './common.js';
import { dataEventsInput, type DataEventMessage } from './events.schemas.js';

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
});
