/**
 * `GET /api/perspectives/batch/events`: job events as server-sent events, for every client that is
 * not the tRPC one. `?jobId=` narrows to one job; `Last-Event-ID` (or `?lastEventId=`) resumes.
 */
import type { Request, Response } from 'express';
import { z } from 'zod';
import { eventMessage } from '../db/outbox.js';
import type { EventHub } from '../jobs/event-hub.js';
import { problem, sendProblem } from './problem.js';

const KEEPALIVE_MS = 15_000;

const query = z.object({
  jobId: z.uuid({ error: 'must be a job id (a UUID)' }).optional(),
  lastEventId: z.coerce.number().int().min(0).optional(),
});

export function eventsRoute(hub: EventHub) {
  return async (req: Request, res: Response) => {
    const parsed = query.safeParse({ ...req.query, lastEventId: req.get('last-event-id') ?? req.query.lastEventId });
    if (!parsed.success) {
      const errors = parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message }));
      sendProblem(res, problem(400, `Input validation failed: ${errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`, { errors, instance: req.path }));
      return;
    }
    const { jobId, lastEventId } = parsed.data;
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache, no-transform',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    res.write('retry: 2000\n\n');
    const subscription = hub.subscribe({ jobId, afterSeq: lastEventId });
    const keepalive = setInterval(() => res.write(': keepalive\n\n'), KEEPALIVE_MS);
    req.on('close', () => subscription.close());
    try {
      for await (const event of subscription) {
        res.write(`id: ${event.seq}\nevent: ${event.type}\ndata: ${JSON.stringify(eventMessage(event))}\n\n`);
      }
    } finally {
      clearInterval(keepalive);
      res.end();
    }
  };
}
