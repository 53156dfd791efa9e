/** Schemas shared by the routers: pagination, ids, timestamps, query helpers. */
import { z } from 'zod';
import { parseDbTime, type DbTime } from '../db/client.js';
import { toTRPCError } from '../errors.js';

/**
 * A query-string boolean: `true`/`false` on REST, a real boolean over tRPC. (A plain z.boolean()
 * would be coerced with Boolean() by trpc-to-openapi, turning `?archived=false` into true.)
 */
export const queryBoolean = z.preprocess<unknown, z.ZodBoolean, boolean>((given) => {
  const value: unknown = given; // typed boolean for tRPC callers; REST sends 'true' / 'false'
  if (value === 'true') return true;
  if (value === 'false') return false;
  return value;
}, z.boolean());

/**
 * Query-string numbers are coerced explicitly, so the REST and tRPC faces accept the same input.
 * Typed as taking a number, so tRPC callers (the UI) are told to pass one.
 * (trpc-to-openapi would otherwise switch coercion on inside the shared schema after a first REST call.)
 */
export const queryInt = (min: number, max: number) => z.coerce.number<number>().int().min(min).max(max);

/**
 * A number in a request body, taken as sent. trpc-to-openapi switches on z.coerce for every number
 * of an input object on each REST call, bodies included, so "1", true and null would pass as
 * numbers; it leaves pipes alone, and the OpenAPI document still shows this schema.
 */
export const bodyNumber = (schema: z.ZodNumber) => schema.pipe(z.custom<number>());

/** A boolean in a request body, taken as sent (trpc-to-openapi would coerce "no" to true); see bodyNumber. */
export const bodyBoolean = z.boolean().pipe(z.custom<boolean>());

export const page = queryInt(1, 1_000_000).default(1).describe('Page number, from 1.');
export const limit = queryInt(1, 100).default(20).describe('Items per page, 1 to 100.');
export const order = z.enum(['asc', 'desc']).default('asc').describe('Sort direction.');

/** A list parameter: repeat it (`?status=a&status=b`) or pass one value. */
export const queryList = <T extends z.ZodType>(item: T, max = 20) => z.array(item).max(max);

export const uuid = (what: string) => z.uuid({ error: `must be a ${what} id (a UUID)` });

/** Timestamps leave the service as ISO 8601 strings in UTC. */
export const timestamp = z.iso.datetime().describe('ISO 8601 time in UTC.');
/** A time to filter by: ISO 8601 allows year 0000, which PostgreSQL has no date for (1 BC comes before AD 1). */
export const timeFilter = timestamp.refine((value) => !value.startsWith('0000-'), { error: 'must be a time from the year 0001 on' });
const PG_UTC_TIME = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?\+00$/;
export const iso = (d: Date | DbTime) => {
  // PostgreSQL's text form in a UTC session ("2026-11-28 15:37:50.48+00") rewritten as the string
  // parseDbTime(d).toISOString() gives (milliseconds, digits beyond cut), without a Date: a list of
  // 20 jobs has 120 timestamps (toJob of 20 rows: 186 µs before, 60 µs now). Other forms take the
  // general path.
  if (typeof d === 'string') {
    const utc = PG_UTC_TIME.exec(d);
    if (utc) return `${utc[1]}T${utc[2]}.${`${utc[3] ?? ''}000`.slice(0, 3)}Z`;
  }
  return parseDbTime(d).toISOString();
};
export const isoOrNull = (d: Date | DbTime | null) => (d ? iso(d) : null);

export const paginated = <T extends z.ZodType>(item: T) =>
  z.object({
    items: z.array(item),
    total: z.int().min(0).describe('Items matching the filters, over all pages.'),
    page: z.int().min(1),
    limit: z.int().min(1),
  });

/**
 * A subscription's start, its refusals as tRPC errors: a subscription's generator runs after the
 * middleware that maps domain errors (a limit of subscribers would otherwise be a 500).
 */
export function subscribeOrRefuse<T>(subscribe: () => T): T {
  try {
    return subscribe();
  } catch (error) {
    throw toTRPCError(error);
  }
}
