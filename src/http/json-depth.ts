/**
 * Refuses request bodies nested deeper than any input of the API can be: parts of the REST
 * adapter walk the input recursively, and a body nested thousands of levels deep overflowed the
 * stack (a 500). Checked without recursion, on the parsed body, before any handler sees it.
 */
import type { NextFunction, Request, Response } from 'express';
import { problem, sendProblem } from './problem.js';

/** Deeper than every schema of the API (a caption's result is the deepest, a few levels). */
export const MAX_JSON_DEPTH = 64;

/** Whether `value` has arrays or objects nested more than `max` levels deep. */
export function deeperThan(value: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (node === null || typeof node !== 'object') continue;
    if (depth >= max) return true;
    for (const child of Object.values(node)) if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
  }
  return false;
}

export function refuseDeepJson(req: Request, res: Response, next: NextFunction): void {
  if (req.body !== undefined && deeperThan(req.body, MAX_JSON_DEPTH)) {
    sendProblem(res, problem(400, `The request body is nested deeper than ${MAX_JSON_DEPTH} levels`, { instance: req.path }));
    return;
  }
  next();
}
