/**
 * Conditional GETs on the REST face: every 200 answer to a GET gets a strong ETag computed from its
 * body (so it changes exactly when the content does) and a Cache-Control that suits the resource;
 * a GET whose If-None-Match holds that tag gets 304 with no body. The REST handler writes its JSON
 * with one res.end(), which is intercepted here (as src/http/problem.ts does for errors).
 */
import { createHash } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';

/** Revisions of a perspective never change; everything else may, so clients revalidate (cheaply, with the tag). */
const CACHE_CONTROL: readonly [RegExp, string][] = [
  [/^\/api\/perspectives\/[^/]+\/versions\/[^/]+$/i, 'private, max-age=86400, immutable'],
];
export const DEFAULT_CACHE_CONTROL = 'private, no-cache';

export function cacheControlFor(path: string): string {
  return CACHE_CONTROL.find(([pattern]) => pattern.test(path))?.[1] ?? DEFAULT_CACHE_CONTROL;
}

/** A strong entity tag: sha256 of the exact bytes sent, base64url. */
export function entityTag(body: string | Buffer): string {
  return `"${createHash('sha256').update(body).digest('base64url')}"`;
}

/**
 * Whether an If-None-Match header matches the tag: `*`, or one of its listed tags. Per RFC 9110
 * this comparison is weak, so a `W/` prefix from a cache is ignored.
 */
export function ifNoneMatchHits(header: string | undefined, tag: string): boolean {
  if (!header) return false;
  if (header.trim() === '*') return true;
  return header.split(',').some((t) => t.trim().replace(/^W\//, '') === tag);
}

export function conditionalGet(req: Request, res: Response, next: NextFunction): void {
  if (req.method !== 'GET') return next();
  const end = res.end.bind(res) as (...args: unknown[]) => Response;
  res.end = ((chunk?: unknown, ...rest: unknown[]) => {
    const body = typeof chunk === 'string' || Buffer.isBuffer(chunk) ? chunk : undefined;
    if (res.statusCode !== 200 || res.headersSent || body === undefined) return end(chunk, ...rest);
    const tag = entityTag(body);
    res.setHeader('ETag', tag);
    res.setHeader('Cache-Control', cacheControlFor(req.path));
    if (ifNoneMatchHits(req.get('if-none-match'), tag)) {
      res.statusCode = 304;
      res.removeHeader('Content-Type');
      res.removeHeader('Content-Length');
      return end(...rest.filter((r) => typeof r === 'function'));
    }
    return end(chunk, ...rest);
  }) as Response['end'];
  next();
}
