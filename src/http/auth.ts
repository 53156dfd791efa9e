/**
 * Access control, off by default for local use: with API_TOKEN set, /api needs
 * `Authorization: Bearer <token>`; API_READ_TOKEN opens reads only; with INTERNAL_TOKEN set, the
 * internal item-update endpoint needs that token. What a token may do is decided here and enforced
 * in the procedure layer (src/trpc.ts), so both faces agree. Tokens are compared in constant time.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { Config } from '../config.js';
import { problem, sendProblem } from './problem.js';

/**
 * What the caller's token allows: nothing special, reads only (API_READ_TOKEN), the public API, or
 * the internal endpoints too.
 */
export type Scope = 'anonymous' | 'read' | 'api' | 'internal';

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
  if (config.API_READ_TOKEN && sameSecret(given, config.API_READ_TOKEN)) return 'read';
  return 'anonymous';
}

/** The API is closed when any token is configured. */
export const apiClosed = (config: Config) => Boolean(config.API_TOKEN ?? config.INTERNAL_TOKEN ?? config.API_READ_TOKEN);

/** What a caller may do with the public API: `tokenRequired` says whether the service wants a token at all. */
export interface Access {
  tokenRequired: boolean;
  read: boolean;
  write: boolean;
}

export function accessOf(scope: Scope, config: Config): Access {
  if (!apiClosed(config)) return { tokenRequired: false, read: true, write: true };
  return { tokenRequired: true, read: scope !== 'anonymous', write: scope === 'api' || scope === 'internal' };
}

/**
 * Refuses requests without a valid token when `required` says one is needed. Any configured token
 * (read, API or internal) passes: what it may do is the procedure layer's call.
 */
export function requireToken(config: Config, required: (config: Config) => boolean) {
  return (req: Request, res: Response, next: NextFunction) => {
    if (!required(config) || scopeOf(req, config) !== 'anonymous') return next();
    res.setHeader('WWW-Authenticate', 'Bearer');
    const given = req.get('authorization') ? 'a valid' : 'a';
    sendProblem(res, problem(401, `this endpoint needs ${given} bearer token`, { instance: req.path }));
  };
}

/**
 * Paths under /api that answer without a token: the access endpoint (REST and tRPC) tells a caller,
 * a board page say, whether it needs a token and what the one it has allows. A tRPC batch that
 * names it with other procedures is not one of these paths.
 */
const OPEN_API_PATHS = new Set(['/access', '/trpc/access']);

/** The gate of /api: a token when one is configured, except on the open paths. */
export function apiGate(config: Config) {
  const gate = requireToken(config, apiClosed);
  return (req: Request, res: Response, next: NextFunction) => {
    if (req.method === 'GET' && OPEN_API_PATHS.has(req.path)) return next();
    gate(req, res, next);
  };
}
