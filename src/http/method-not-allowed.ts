/**
 * A request whose path is an operation's but whose method is none of that path's: 405 with
 * `Allow`, as HTTP asks, instead of the 404 of a path that does not exist.
 */
import type { NextFunction, Request, Response } from 'express';
import { templatePattern } from '../metrics.js';
import { problem, sendProblem } from './problem.js';

export function methodNotAllowed(paths: Record<string, object>) {
  const templates = Object.entries(paths).map(([template, operations]) => ({
    pattern: templatePattern(template),
    methods: Object.keys(operations).map((m) => m.toUpperCase()),
  }));
  return (req: Request, res: Response, next: NextFunction) => {
    const allowed = new Set(templates.filter((t) => t.pattern.test(req.path)).flatMap((t) => t.methods));
    if (allowed.size === 0 || allowed.has(req.method) || (req.method === 'HEAD' && allowed.has('GET'))) return next();
    const allow = [...allowed].sort().join(', ');
    res.set('Allow', allow);
    sendProblem(res, problem(405, `${req.method} is not allowed on ${req.path} (allowed: ${allow})`, { instance: req.path }));
  };
}
