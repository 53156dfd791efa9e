/**
 * tRPC is initialised here, once: the context every procedure gets, the error shape, and the base
 * procedure. Routers import `router` and `publicProcedure` from this file only.
 */
import { initTRPC, TRPCError } from '@trpc/server';
import type { OpenApiMeta } from 'trpc-to-openapi';
import { ZodError } from 'zod';
import type { Config } from './config.js';
import type { Db } from './db/client.js';
import { InvalidInputError, toTRPCError, type FieldError } from './errors.js';
import type { Scope } from './http/auth.js';
import type { EventHub } from './jobs/event-hub.js';
import type { Logger } from './logger.js';

export interface Context {
  db: Db;
  config: Config;
  logger: Logger;
  requestId: string;
  /** What the caller's bearer token allows (src/http/auth.ts). */
  scope: Scope;
  /** Live job events of this process (src/jobs/event-hub.ts). */
  events: EventHub;
}

export interface ErrorData {
  code: string;
  httpStatus: number;
  path?: string;
  /** One entry per failing field, for validation errors. */
  errors: FieldError[];
}

const t = initTRPC
  .context<Context>()
  .meta<OpenApiMeta>()
  .create({
    // Never put stack traces in error bodies, whatever NODE_ENV says; the log has them.
    isDev: false,
    errorFormatter({ shape, error }) {
      const internal = error.code === 'INTERNAL_SERVER_ERROR';
      const data: ErrorData = {
        code: shape.data.code,
        httpStatus: shape.data.httpStatus,
        path: shape.data.path,
        errors: fieldErrors(error),
      };
      // An unexpected error's message can carry SQL or internals: clients get a fixed text.
      return { ...shape, message: internal ? 'Internal server error' : shape.message, data };
    },
  });

function fieldErrors(error: TRPCError): FieldError[] {
  const cause = error.cause;
  if (cause instanceof ZodError) {
    return cause.issues.map((issue) => ({ path: issue.path.map(String).join('.') || '(input)', message: issue.message }));
  }
  if (cause instanceof InvalidInputError) return cause.errors;
  return [];
}

/** Turns the domain errors of repositories into the tRPC codes of the same meaning. */
const domainErrors = t.middleware(async ({ next }) => {
  const result = await next();
  if (!result.ok) {
    const mapped = toTRPCError(result.error.cause);
    if (mapped instanceof TRPCError) return { ...result, error: mapped };
  }
  return result;
});

export const router = t.router;
export const createCallerFactory = t.createCallerFactory;
export const publicProcedure = t.procedure.use(domainErrors);

/** For internal endpoints (item updates by executors): with INTERNAL_TOKEN set, only that token. */
export const internalProcedure = publicProcedure.use(({ ctx, next }) => {
  if (ctx.config.INTERNAL_TOKEN && ctx.scope !== 'internal') {
    throw new TRPCError({ code: 'UNAUTHORIZED', message: 'this internal endpoint needs the internal bearer token' });
  }
  return next();
});
