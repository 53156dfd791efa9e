/**
 * Access control, off by default for local use: with API_TOKEN set, /api needs
 * `Authorization: Bearer <token>`; with INTERNAL_TOKEN set, the internal item-update endpoint needs
 * that token (checked in src/trpc.ts, so both faces agree). Tokens are compared in constant time.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { Config } from '../config.js';
import { problem, sendProblem } from './problem.js';

/** What the caller's token allows: nothing special, the public API, or the internal endpoints too. */
export type Scope = 'anonymous' | 'api' | 'internal';

// Hashing first makes both sides the same length, so the comparison leaks neither content nor length.
function sameSecret(given: string, expected: string): boolean {
  const digest = (value: string) => createHash('sha256').update(value).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

export function scopeOf(req: Request, config: Config): Scope {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(req.get('authorization') ?? '');
  const given = match?.[1];
  if (!given) return 'anonymous';
  if (config.INTERNAL_TOKEN && sameSecret(given, config.INTERNAL_TOKEN)) return 'internal';
  if (config.API_TOKEN && sameSecret(given, config.API_TOKEN)) return 'api';
  return 'anonymous';
}

/**
 * Refuses requests without a valid token when `required` says one is needed. Any configured token
 * (API or internal) opens the API.
 */
export function requireToken(config: Config, required: (config: Config) => boolean) {
  return (req: Request, res: Response, next: NextFunction) => {
    if (!required(config) || scopeOf(req, config) !== 'anonymous') return next();
    res.setHeader('WWW-Authenticate', 'Bearer');
    const given = req.get('authorization') ? 'a valid' : 'a';
    sendProblem(res, problem(401, `this endpoint needs ${given} bearer token`, { instance: req.path }));
  };
}

/** The API is closed when any token is configured. */
export const apiClosed = (config: Config) => Boolean(config.API_TOKEN ?? config.INTERNAL_TOKEN);
