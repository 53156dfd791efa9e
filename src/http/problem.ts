/**
 * RFC 9457 problem details: the one error shape of the REST face. Errors come from three places
 * (procedures via trpc-to-openapi, express.json() body errors, unknown routes); all end here.
 */
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { NextFunction, Request, Response } from 'express';
import { describeFieldErrors, type FieldError } from '../errors.js';
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
  /** How many fields failed in all (`errors` lists the first few). */
  errorCount?: number;
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
  data?: { errors?: FieldError[]; errorCount?: number };
}

function fromOpenApiError(status: number, body: OpenApiErrorBody, instance: string): Problem {
  const errors = body.data?.errors?.length ? body.data.errors : undefined;
  const errorCount = body.data?.errorCount ?? errors?.length ?? 0;
  let detail = body.message ?? STATUS_CODES[status] ?? 'Error';
  // trpc-to-openapi keeps its own message for invalid input: name the fields as the tRPC face does.
  if (errors && detail === 'Input validation failed') detail = `${detail}: ${describeFieldErrors(errors, errorCount)}`;
  // Only an unexpected error hides its text (502-504 say what the bridge or provider did).
  if (status === 500) detail = 'Internal server error';
  const counted = errors ? { errors, errorCount } : {};
  return problem(status, detail, { code: body.code ?? problem(status, '').code, instance, ...counted });
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

/**
 * Node's answer to a request it cannot parse (a request line or headers over its 16 KB limit: a
 * long path parameter; a malformed request), as a problem document instead of a bare status line.
 */
export function answerClientError(error: NodeJS.ErrnoException, socket: Duplex): void {
  if (error.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const status = error.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
  const detail = status === 431 ? 'The request line and headers may take at most 16 KB (a path parameter that long is no id)' : 'Malformed HTTP request';
  const body = JSON.stringify(problem(status, detail));
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/problem+json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
