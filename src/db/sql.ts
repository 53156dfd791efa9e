/** Small SQL helpers every repository may use; this module imports no repository. */
import { sql, type SQL } from 'drizzle-orm';

/**
 * A JS array as one bound parameter. Drizzle would otherwise expand an array into a list of
 * parameters, one per element; a single array parameter keeps big creates to one statement.
 */
export function pgArray(values: readonly (string | number)[]): SQL {
  return sql`${sql.param(values)}`;
}
