import { and, eq, type SQL } from "drizzle-orm";
import type { SQLiteColumn, SQLiteTable } from "drizzle-orm/sqlite-core";
import type { Database } from "./client.ts";

/**
 * The one data-access path for tenant-owned rows. Routes and services get a
 * `TenantDb` bound to the caller's workspace, never a bare workspace id to
 * remember: every condition it builds starts with `workspace_id = ?`, so an
 * unscoped query has to be written on purpose, against `db` itself.
 */

export type TenantTable = SQLiteTable & { id: SQLiteColumn; workspaceId: SQLiteColumn };
/** Any tenant-owned table, with or without an id of its own (usage rows have a natural key). */
type OwnedTable = { workspaceId: SQLiteColumn };

export class TenantDb {
  readonly db: Database;
  readonly workspaceId: string;

  constructor(db: Database, workspaceId: string) {
    this.db = db;
    this.workspaceId = workspaceId;
  }

  /** `workspace_id = <caller's>` AND the given conditions. */
  owns(table: OwnedTable, ...conditions: (SQL | undefined)[]): SQL {
    return and(eq(table.workspaceId, this.workspaceId), ...conditions) as SQL;
  }

  /** The caller's row with this id, or null; null also when the id is another workspace's. */
  async findById<T extends TenantTable>(table: T, id: string): Promise<T["$inferSelect"] | null> {
    const rows = await this.db
      .select()
      .from(table as SQLiteTable)
      .where(this.owns(table, eq(table.id, id)))
      .limit(1);
    return (rows[0] as T["$inferSelect"] | undefined) ?? null;
  }

  /**
   * After a miss: does the id exist in another workspace? Used only to notice
   * probing (the caller still answers a plain 404).
   */
  async belongsToAnotherWorkspace(table: TenantTable, id: string): Promise<boolean> {
    const rows = await this.db
      .select({ workspaceId: table.workspaceId })
      .from(table as SQLiteTable)
      .where(eq(table.id, id))
      .limit(1);
    return rows.length > 0 && rows[0].workspaceId !== this.workspaceId;
  }
}
