import { type Column, getTableColumns, getTableName, type InferInsertModel, type Table } from "drizzle-orm";

/**
 * Row inserts as plain D1 statements, for hot paths. Drizzle's builder walks
 * the table and renders the SQL on every call (about half a millisecond of a
 * POST /tasks in profiles); the SQL depends only on the table and on which
 * columns the row sets, so here it is rendered once per shape, and each value
 * goes through its column's own driver mapping (JSON columns are stringified
 * exactly as drizzle does). Columns the row leaves undefined get their SQL
 * defaults, as with drizzle.
 */

interface Shape {
  sql: string;
  keys: string[];
  columns: Column[];
}

const shapesByTable = new WeakMap<Table, Map<string, Shape>>();

function shapeOf(table: Table, keys: string[]): Shape {
  let shapes = shapesByTable.get(table);
  if (!shapes) {
    shapes = new Map();
    shapesByTable.set(table, shapes);
  }
  const shapeKey = keys.join(",");
  let shape = shapes.get(shapeKey);
  if (!shape) {
    const byKey = getTableColumns(table) as Record<string, Column>;
    const columns = keys.map((key) => {
      const column = byKey[key];
      if (!column) throw new Error(`${getTableName(table)} has no column ${key}`);
      return column;
    });
    const names = columns.map((column) => `"${column.name}"`).join(", ");
    const marks = columns.map(() => "?").join(", ");
    shape = { sql: `INSERT INTO "${getTableName(table)}" (${names}) VALUES (${marks})`, keys, columns };
    shapes.set(shapeKey, shape);
  }
  return shape;
}

export function insertStatement<T extends Table>(
  d1: D1Database,
  table: T,
  row: InferInsertModel<T>,
): D1PreparedStatement {
  const values = row as Record<string, unknown>;
  const shape = shapeOf(
    table,
    Object.keys(values).filter((key) => values[key] !== undefined),
  );
  return d1
    .prepare(shape.sql)
    .bind(
      ...shape.keys.map((key, index) =>
        values[key] === null ? null : shape.columns[index].mapToDriverValue(values[key]),
      ),
    );
}
