/**
 * tRPC is initialised here, once: the context every procedure gets, the error shape, and the base
 * procedure. Routers import `router` and `publicProcedure` from this file only.
 */
import { initTRPC, TRPCError } from '@trpc/server';
import type { OpenApiMeta } from 'trpc-to-openapi';
import { ZodError } from 'zod';
import type { Config } from './config.js';
import type { Db } from './db/client.js';
import { describeFieldErrors, InvalidInputError, MAX_NAMED, reportedFieldErrors, toTRPCError, type FieldError } from './errors.js';
import { accessOf, type Scope } from './http/auth.js';
import type { BridgeMonitor } from './jobs/bridge-monitor.js';
import type { CaptionExporter } from './jobs/caption-exporter.js';
import type { EventHub } from './jobs/event-hub.js';
import type { InferenceBridge } from './jobs/inference.js';
import type { ItemWriter } from './jobs/item-writer.js';
import type { WorkspaceWatcher } from './jobs/workspace-watcher.js';
import type { ProviderPacer } from './jobs/provider-pacer.js';
import type { ProviderRegistry } from './jobs/provider-registry.js';
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
  /** Writes the items a create left for later (src/jobs/item-writer.ts). */
  itemWriter: ItemWriter;
  /** Writes captions back to graphcap's captions.jsonl files (src/jobs/caption-exporter.ts). */
  captionExporter: CaptionExporter;
  /** The workspace's imports, one at a time, and its watcher (src/jobs/workspace-watcher.ts). */
  workspace: WorkspaceWatcher;
  /** The Inference Bridge, for one-off captions; undefined without INFERENCE_BRIDGE_URL. */
  bridge?: BridgeContext;
}

export interface BridgeContext {
  client: InferenceBridge;
  monitor: BridgeMonitor;
  providers: ProviderRegistry;
  pacer: ProviderPacer;
}

export interface ErrorData {
  code: string;
  httpStatus: number;
  path?: string;
  /** One entry per failing field, for validation errors: the first MAX_REPORTED_ERRORS. */
  errors: FieldError[];
  /** How many fields failed in all. */
  errorCount: number;
}

/** Procedure meta: trpc-to-openapi's, plus what the access check needs to know. */
export type Meta = OpenApiMeta<{
  /** A mutation that changes nothing (a POST only for its body, like analyze-images): reads may call it. */
  readsOnly?: boolean;
}>;

const t = initTRPC
  .context<Context>()
  .meta<Meta>()
  .create({
    // Never put stack traces in error bodies, whatever NODE_ENV says; the log has them.
    isDev: false,
    errorFormatter({ shape, error }) {
      const all = fieldErrors(error);
      const data: ErrorData = {
        code: shape.data.code,
        httpStatus: shape.data.httpStatus,
        path: shape.data.path,
        errors: reportedFieldErrors(all),
        errorCount: all.length,
      };
      return { ...shape, message: messageOf(error, shape.message, all), data };
    },
  });

/**
 * The message a client gets: a fixed text for an unexpected error (its own can carry SQL or
 * internals); for invalid input, one line naming the first few fields (zod's own message is every
 * issue as JSON, as big as the input).
 */
function messageOf(error: TRPCError, message: string, errors: readonly FieldError[]): string {
  if (error.code === 'INTERNAL_SERVER_ERROR') return 'Internal server error';
  if (error.cause instanceof ZodError) return `Input validation failed: ${describeFieldErrors(errors)}`;
  // A domain error's own message names its fields; one that names many is cut down the same way.
  if (error.cause instanceof InvalidInputError && (errors.length > MAX_NAMED || message.length > 1000)) return describeFieldErrors(errors);
  return message;
}

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

/**
 * PostgreSQL text cannot hold U+0000: an input with it anywhere (a filter, a string deep in a body,
 * a key) is refused here, naming where, instead of reaching the database as a 500.
 */
const noNulCharacters = t.middleware(async ({ getRawInput, next }) => {
  const where = nulCharacterPath(await getRawInput());
  if (where !== undefined) {
    const message = 'must not contain a NUL character (U+0000)';
    throw new InvalidInputError(`${where}: ${message}`, [{ path: where, message }]);
  }
  return next();
});

/**
 * Where the first string or key with a NUL character is, as a dotted path; undefined for none.
 * Breadth first over a list, not recursion: a body nested thousands deep cannot overflow the stack.
 * Paths are only built for a hit (a 10,000-path create checks 10,000 strings and builds none).
 */
function nulCharacterPath(input: unknown): string | undefined {
  if (typeof input === 'string') return input.includes('\u0000') ? '(input)' : undefined;
  const frames: { value: unknown; parent: number; key: string }[] = [{ value: input, parent: -1, key: '' }];
  const pathOf = (frame: number, key: string) => {
    const keys = [key];
    for (let f = frame; f > 0; f = frames[f]!.parent) keys.unshift(frames[f]!.key);
    return keys.join('.');
  };
  for (let i = 0; i < frames.length; i += 1) {
    const { value } = frames[i]!;
    if (value === null || typeof value !== 'object') continue;
    const entries: Iterable<[string | number, unknown]> = Array.isArray(value) ? value.entries() : Object.entries(value);
    for (const [k, v] of entries) {
      const key = String(k);
      if (key.includes('\u0000') || (typeof v === 'string' && v.includes('\u0000'))) return pathOf(i, key);
      if (v !== null && typeof v === 'object') frames.push({ value: v, parent: i, key });
    }
  }
  return undefined;
}

/**
 * The access rule of both faces (what a token allows: src/http/auth.ts): with a token configured,
 * nothing without one; queries and subscriptions with any token; changes (every mutation but those
 * marked `readsOnly`) only with the API or internal token, so the read token gets FORBIDDEN.
 * The HTTP gate refuses tokenless requests before they get here; this holds for in-process callers too.
 */
const accessRule = t.middleware(({ ctx, type, meta, next }) => {
  const access = accessOf(ctx.scope, ctx.config);
  if (!access.read) throw new TRPCError({ code: 'UNAUTHORIZED', message: 'this endpoint needs a bearer token' });
  if (type === 'mutation' && !meta?.readsOnly && !access.write) {
    throw new TRPCError({ code: 'FORBIDDEN', message: 'this token can only read; changes need the API token' });
  }
  return next();
});

export const router = t.router;
export const createCallerFactory = t.createCallerFactory;
/** For the few procedures anyone may call, whatever their token (the access endpoint). */
export const openProcedure = t.procedure.use(domainErrors).use(noNulCharacters);
export const publicProcedure = openProcedure.use(accessRule);

/** For internal endpoints (item updates by executors): with INTERNAL_TOKEN set, only that token. */
export const internalProcedure = publicProcedure.use(({ ctx, next }) => {
  if (ctx.config.INTERNAL_TOKEN && ctx.scope !== 'internal') {
    throw new TRPCError({ code: 'UNAUTHORIZED', message: 'this internal endpoint needs the internal bearer token' });
  }
  return next();
});
