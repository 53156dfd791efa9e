/**
 * Pieces shared by the data lists (images, datasets, perspectives, captions): direction, paging and
 * the one way text is ordered.
 */
import { sql, type SQL } from 'drizzle-orm';
import type { Db } from './client.js';

export type Order = 'asc' | 'desc';

export interface PageInput {
  page: number;
  limit: number;
}

export interface Page<T> {
  items: T[];
  total: number;
}

export const dir = (order: Order): SQL => sql.raw(order === 'desc' ? 'desc' : 'asc');

/**
 * Text sorts use the "C" collation (code point order): the same order on every PostgreSQL,
 * whatever its locale, and the order a client gets by comparing strings.
 */
export const textKey = (column: SQL): SQL => sql`${column} collate "C"`;

/**
 * Runs a list: `select` (columns) `from` (FROM ... WHERE) paged in `orderBy`, and the count for the
 * total, of `countFrom` when given: the same rows without the joins that only add columns.
 */
export async function pageOf<T>(
  db: Db,
  q: { select: SQL; from: SQL; countFrom?: SQL; orderBy: SQL; page: PageInput },
): Promise<Page<T>> {
  const { rows } = await db.execute<Record<string, unknown>>(sql`
    select ${q.select} ${q.from} order by ${q.orderBy}
    limit ${q.page.limit} offset ${(q.page.page - 1) * q.page.limit}`);
  const { rows: counted } = await db.execute<{ n: number }>(sql`select count(*) as n ${q.countFrom ?? q.from}`);
  return { items: rows as unknown as T[], total: counted[0]?.n ?? 0 };
}

/** `a and b and ...`, or true for none. */
export function allOf(conditions: SQL[]): SQL {
  return conditions.length > 0 ? sql.join(conditions, sql` and `) : sql`true`;
}
