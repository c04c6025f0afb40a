import { type SQL, sql } from "drizzle-orm";

/**
 * SQL fragments evaluated inside the writing transaction. Each is an index
 * seek on (workspace_id, seq) or (workspace_id, created_at, seq), so their
 * cost does not grow with the log.
 */

const NOW_ISO = sql.raw(`strftime('%Y-%m-%dT%H:%M:%fZ', 'now')`);

/**
 * The next seq of a workspace's chain: one past the newest entry, or past the
 * retention anchor when retention cut every entry, or 1.
 */
export function nextSeqSql(workspaceId: string): SQL<number> {
  return sql<number>`(COALESCE(
    (SELECT MAX(seq) FROM audit_logs WHERE workspace_id = ${workspaceId}),
    (SELECT anchor_seq FROM audit_chains WHERE workspace_id = ${workspaceId}),
    0) + 1)`;
}

/**
 * Now, or the newest entry's time if the clock stepped back: `created_at` never
 * decreases along `seq`, so a time range maps onto a seq range exactly.
 */
export function nextCreatedAtSql(workspaceId: string): SQL<string> {
  return sql<string>`(SELECT max(${NOW_ISO}, COALESCE(
    (SELECT created_at FROM audit_logs WHERE workspace_id = ${workspaceId} ORDER BY seq DESC LIMIT 1), '')))`;
}

/** The first seq at or after a time (null when there is none). */
export function firstSeqAtOrAfterSql(workspaceId: string, fromIso: string): SQL<number> {
  return sql<number>`(SELECT seq FROM audit_logs WHERE workspace_id = ${workspaceId} AND created_at >= ${fromIso}
    ORDER BY created_at ASC, seq ASC LIMIT 1)`;
}

/** The last seq strictly before a time (null when there is none). */
export function lastSeqBeforeSql(workspaceId: string, toIso: string): SQL<number> {
  return sql<number>`(SELECT seq FROM audit_logs WHERE workspace_id = ${workspaceId} AND created_at < ${toIso}
    ORDER BY created_at DESC, seq DESC LIMIT 1)`;
}
