/**
 * Server-sent events, for every client that is not the tRPC one: `GET /api/perspectives/batch/events`
 * (job events; `?jobId=` narrows to one job) and `GET /api/events` (data change events; `?entity=`,
 * `?datasetId=`, `?jobId=` narrow them). `Last-Event-ID` (or `?lastEventId=`) resumes.
 */
import type { Request, Response } from 'express';
import { z } from 'zod';
import { DATA_ENTITIES } from '../db/data-events.js';
import { eventMessage } from '../db/outbox.js';
import { describeFieldErrors, reportedFieldErrors, TooManyError } from '../errors.js';
import type { Config } from '../config.js';
import type { EventFilter, EventHub, Subscription } from '../jobs/event-hub.js';
import { scopeOf } from './auth.js';
import { problem, sendProblem } from './problem.js';

const KEEPALIVE_MS = 15_000;

const lastEventId = z.coerce.number().int().min(0).optional();
const jobId = z.uuid({ error: 'must be a job id (a UUID)' }).optional();

const jobQuery = z.object({ jobId, lastEventId });

/** `entity` repeated or comma-separated: `?entity=image,caption` or `?entity=image&entity=caption`. */
const dataQuery = z.object({
  entity: z
    .preprocess(
      (v) => (v === undefined ? undefined : [v].flat().flatMap((s) => String(s).split(',')).filter((s) => s !== '')),
      z.array(z.enum(DATA_ENTITIES, { error: `must be one of ${DATA_ENTITIES.join(', ')}` })).max(DATA_ENTITIES.length * 2),
    )
    .optional(),
  datasetId: z.uuid({ error: 'must be a dataset id (a UUID)' }).optional(),
  jobId,
  lastEventId,
});

export const jobEventsRoute = (hub: EventHub, config: Config) =>
  eventsRoute(hub, config, jobQuery, (q): EventFilter => ({ kind: 'job', jobId: q.jobId }));

export const dataEventsRoute = (hub: EventHub, config: Config) =>
  eventsRoute(hub, config, dataQuery, (q): EventFilter => ({
    kind: 'data',
    entities: q.entity?.length ? [...new Set(q.entity)] : undefined,
    datasetId: q.datasetId,
    jobId: q.jobId,
  }));

function eventsRoute<Q extends { lastEventId?: number }>(hub: EventHub, config: Config, query: z.ZodType<Q>, toFilter: (q: Q) => EventFilter) {
  return async (req: Request, res: Response) => {
    const parsed = query.safeParse({ ...req.query, lastEventId: req.get('last-event-id') ?? req.query.lastEventId });
    if (!parsed.success) {
      const errors = parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message }));
      sendProblem(
        res,
        problem(400, `Input validation failed: ${describeFieldErrors(errors)}`, {
          errors: reportedFieldErrors(errors),
          errorCount: errors.length,
          instance: req.path,
        }),
      );
      return;
    }
    let subscription: Subscription;
    try {
      subscription = hub.subscribe(toFilter(parsed.data), parsed.data.lastEventId, scopeOf(req, config));
    } catch (error) {
      if (!(error instanceof TooManyError)) throw error;
      res.set('Retry-After', '10');
      sendProblem(res, problem(429, error.message, { instance: req.path }));
      return;
    }
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache, no-transform',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    res.write('retry: 2000\n\n');
    const keepalive = setInterval(() => res.write(': keepalive\n\n'), KEEPALIVE_MS);
    const closed = new Promise<void>((resolve) => res.once('close', resolve));
    req.on('close', () => subscription.close());
    try {
      for await (const event of subscription) {
        // A client that does not read fills the socket: wait for it, so the events wait in the
        // hub, whose bound then drops it, instead of in socket buffers without one.
        if (!res.write(`id: ${event.seq}\nevent: ${event.type}\ndata: ${JSON.stringify(eventMessage(event))}\n\n`)) {
          await Promise.race([new Promise((resolve) => res.once('drain', resolve)), closed, subscription.ended]);
        }
      }
      // Dropped: said to a client that still reads; one that does not is cut off.
      if (subscription.droppedBecause && res.writableNeedDrain) res.destroy();
      else if (subscription.droppedBecause) res.write(`event: dropped\ndata: ${JSON.stringify({ reason: subscription.droppedBecause })}\n\n`);
    } finally {
      clearInterval(keepalive);
      res.end();
    }
  };
}
