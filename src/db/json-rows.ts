/**
 * Many rows as one bound parameter. A batch's rows go to SQLite (D1, or a
 * Durable Object's storage) as one JSON array of arrays, and `json_each`
 * reads them back column by column, so a hundred rows are one statement: D1
 * allows 100 bound parameters a statement, and every statement of a batch
 * costs a round of work on both sides of the binding.
 */

/** `(SELECT json_extract(value, '$[0]') AS a, … FROM json_each(?))`: the rows as a subquery, columns named in order. */
export function jsonRowsSql(columns: readonly string[], param = "?"): string {
  const picked = columns.map((name, index) => `json_extract(value, '$[${index}]') AS ${name}`).join(", ");
  return `(SELECT ${picked} FROM json_each(${param}))`;
}

/**
 * `INSERT INTO table (columns) SELECT … FROM <rows> WHERE true <onConflict>`: `WHERE true` is how SQLite
 * tells an upsert's ON CONFLICT from a join's ON.
 */
export function insertJsonRowsSql(table: string, columns: readonly string[], onConflict = ""): string {
  const names = columns.join(", ");
  return `INSERT INTO ${table} (${names}) SELECT ${names} FROM ${jsonRowsSql(columns)} WHERE true ${onConflict}`.trim();
}
