/**
 * RFC 9457 problem details: the one error shape of the REST face. Errors come from three places
 * (procedures via trpc-to-openapi, express.json() body errors, unknown routes); all end here.
 */
import { STATUS_CODES } from 'node:http';
import type { NextFunction, Request, Response } from 'express';
import type { FieldError } from '../errors.js';
import { currentRequestId } from '../logger.js';

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  instance?: string;
  requestId?: string;
  errors?: FieldError[];
}

const CODES: Record<number, string> = {
  400: 'BAD_REQUEST',
  401: 'UNAUTHORIZED',
  403: 'FORBIDDEN',
  404: 'NOT_FOUND',
  405: 'METHOD_NOT_SUPPORTED',
  409: 'CONFLICT',
  413: 'PAYLOAD_TOO_LARGE',
  415: 'UNSUPPORTED_MEDIA_TYPE',
  429: 'TOO_MANY_REQUESTS',
  500: 'INTERNAL_SERVER_ERROR',
  502: 'BAD_GATEWAY',
  503: 'SERVICE_UNAVAILABLE',
  504: 'GATEWAY_TIMEOUT',
};

export function problem(status: number, detail: string, extra: Partial<Problem> = {}): Problem {
  return {
    type: 'about:blank',
    title: STATUS_CODES[status] ?? 'Error',
    status,
    detail,
    code: CODES[status] ?? (status >= 500 ? 'INTERNAL_SERVER_ERROR' : 'BAD_REQUEST'),
    requestId: currentRequestId(),
    ...extra,
  };
}

export function sendProblem(res: Response, p: Problem): void {
  res.status(p.status).type('application/problem+json').send(JSON.stringify(p));
}

/** The body trpc-to-openapi writes for an error, shaped by our errorFormatter. */
interface OpenApiErrorBody {
  message?: string;
  code?: string;
  data?: { errors?: FieldError[] };
}

function fromOpenApiError(status: number, body: OpenApiErrorBody, instance: string): Problem {
  const errors = body.data?.errors?.length ? body.data.errors : undefined;
  let detail = body.message ?? STATUS_CODES[status] ?? 'Error';
  if (errors && detail === 'Input validation failed') {
    detail = `${detail}: ${errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`;
  }
  // Only an unexpected error hides its text (502-504 say what the bridge or provider did).
  if (status === 500) detail = 'Internal server error';
  return problem(status, detail, { code: body.code ?? problem(status, '').code, instance, errors });
}

/**
 * Rewrites every error response of the wrapped REST handler into problem details. The handler
 * writes its JSON with one res.end(); we intercept that call only when the status is >= 400.
 */
export function problemResponses(req: Request, res: Response, next: NextFunction): void {
  const end = res.end.bind(res) as (...args: unknown[]) => Response;
  res.end = ((chunk?: unknown, ...rest: unknown[]) => {
    if (res.statusCode < 400 || res.headersSent || typeof chunk !== 'string') return end(chunk, ...rest);
    let body: OpenApiErrorBody = {};
    try {
      body = JSON.parse(chunk) as OpenApiErrorBody;
    } catch {
      // Not JSON: fall back to the status alone.
    }
    const text = JSON.stringify(fromOpenApiError(res.statusCode, body, req.originalUrl.split('?')[0]!));
    res.setHeader('Content-Type', 'application/problem+json');
    res.setHeader('Content-Length', Buffer.byteLength(text));
    return end(text, ...rest);
  }) as Response['end'];
  next();
}
