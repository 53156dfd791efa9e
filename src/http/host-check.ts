/**
 * Answers only requests that name a host the service is meant to be reached by (ALLOWED_HOSTS):
 * against DNS rebinding, where a page on another site points its own name at this machine and the
 * browser then calls the API as a same-origin request. /health stays open to any name (probes).
 */
import type { NextFunction, Request, Response } from 'express';
import type { Config } from '../config.js';
import { problem, sendProblem } from './problem.js';

/** The host part of a Host header, lower case, without port or IPv6 brackets. */
export function hostName(header: string | undefined): string {
  const value = (header ?? '').trim().toLowerCase();
  if (value.startsWith('[')) return value.slice(1, value.indexOf(']') > 0 ? value.indexOf(']') : undefined);
  return value.replace(/:\d*$/, '');
}

export function hostCheck(config: Config) {
  const allowed = config.ALLOWED_HOSTS && new Set(config.ALLOWED_HOSTS);
  return (req: Request, res: Response, next: NextFunction) => {
    if (!allowed || req.path === '/health' || allowed.has(hostName(req.headers.host))) return next();
    sendProblem(
      res,
      problem(421, `this service does not answer to the host ${JSON.stringify(hostName(req.headers.host).slice(0, 100))}: add it to ALLOWED_HOSTS`, {
        instance: req.path,
      }),
    );
  };
}
