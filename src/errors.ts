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

/** Maps a domain error to the tRPC error of the same meaning; anything else passes through. */
export function toTRPCError(error: unknown): unknown {
  if (error instanceof NotFoundError) return new TRPCError({ code: 'NOT_FOUND', message: error.message, cause: error });
  if (error instanceof ConflictError) return new TRPCError({ code: 'CONFLICT', message: error.message, cause: error });
  if (error instanceof InvalidInputError) {
    return new TRPCError({ code: 'BAD_REQUEST', message: error.message, cause: error });
  }
  return error;
}
