/**
 * Domain errors thrown by repositories and services. One function maps them to tRPC codes; the
 * REST face turns those into problem details (src/http/problem.ts).
 */
import { TRPCError } from '@trpc/server';

export interface FieldError {
  path: string;
  message: string;
}

export class NotFoundError extends Error {
  override name = 'NotFoundError';
}

export class ConflictError extends Error {
  override name = 'ConflictError';
}

/** Input that passed its schema but is still wrong (unknown image, empty job ...): a 400. */
export class InvalidInputError extends Error {
  override name = 'InvalidInputError';
  constructor(
    message: string,
    readonly errors: FieldError[] = [],
  ) {
    super(message);
  }
}

/** The most field errors an answer lists (the rest are only counted): an answer stays small whatever the input. */
export const MAX_REPORTED_ERRORS = 20;
/** The field errors a one-line message names. */
export const MAX_NAMED = 5;
/** The longest path and message of a field error an answer carries (a message may quote the input). */
const MAX_PATH = 200;
const MAX_MESSAGE = 500;

const clip = (text: string, max: number) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/** What an answer carries of `errors`: the first MAX_REPORTED_ERRORS, each clipped. */
export function reportedFieldErrors(errors: readonly FieldError[]): FieldError[] {
  return errors.slice(0, MAX_REPORTED_ERRORS).map((e) => ({ path: clip(e.path, MAX_PATH), message: clip(e.message, MAX_MESSAGE) }));
}

/** One line naming the first few errors and counting the rest (of `total`): `a: x; b: y; and 99 more`. */
export function describeFieldErrors(errors: readonly FieldError[], total = errors.length): string {
  const named = reportedFieldErrors(errors.slice(0, MAX_NAMED)).map((e) => `${e.path}: ${e.message}`).join('; ');
  return total > MAX_NAMED ? `${named}; and ${total - MAX_NAMED} more` : named;
}

/** A limit of how much one caller may hold at once (live subscribers): 429, try again later. */
export class TooManyError extends Error {
  override name = 'TooManyError';
}

/** Maps a domain error to the tRPC error of the same meaning; anything else passes through. */
export function toTRPCError(error: unknown): unknown {
  if (error instanceof NotFoundError) return new TRPCError({ code: 'NOT_FOUND', message: error.message, cause: error });
  if (error instanceof ConflictError) return new TRPCError({ code: 'CONFLICT', message: error.message, cause: error });
  if (error instanceof TooManyError) return new TRPCError({ code: 'TOO_MANY_REQUESTS', message: error.message, cause: error });
  if (error instanceof InvalidInputError) {
    return new TRPCError({ code: 'BAD_REQUEST', message: error.message, cause: error });
  }
  if (postgresCode(error) === QUERY_CANCELED) {
    return new TRPCError({
      code: 'TIMEOUT',
      message: 'the query took longer than this service allows (API_STATEMENT_TIMEOUT_MS): narrow it, or try again',
      cause: error,
    });
  }
  return error;
}

/** PostgreSQL's code for a query it cancelled: here, the API pool's statement_timeout. */
const QUERY_CANCELED = '57014';

/** The SQLSTATE of a database error, also when a library wrapped it (drizzle puts it in `cause`). */
function postgresCode(error: unknown): string | undefined {
  for (let e = error, depth = 0; e && typeof e === 'object' && depth < 4; e = (e as { cause?: unknown }).cause, depth += 1) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
}
