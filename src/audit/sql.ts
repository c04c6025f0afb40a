import { type SQL, sql } from "drizzle-orm";

/**
 * SQL fragments evaluated inside the writing transaction. Each is an index
 * seek on (workspace_id, seq) or (workspace_id, created_at, seq), so their
 * cost does not grow with the log.
 */

/**
 * The next seq of a workspace's chain: one past the newest entry, or past the
 * retention anchor when retention cut every entry, or 1. `$ws` stands for the
 * workspace id.
 */
const NEXT_SEQ = `(COALESCE(
    (SELECT MAX(seq) FROM audit_logs WHERE workspace_id = $ws),
    (SELECT anchor_seq FROM audit_chains WHERE workspace_id = $ws),
    0) + 1)`;

/**
 * Now, or the newest entry's time if the clock stepped back: `created_at` never
 * decreases along `seq`, so a time range maps onto a seq range exactly.
 */
const NEXT_CREATED_AT = `(SELECT max(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), COALESCE(
    (SELECT created_at FROM audit_logs WHERE workspace_id = $ws ORDER BY seq DESC LIMIT 1), '')))`;

/** A template with the workspace id bound wherever `$ws` stands, for drizzle queries. */
function bound<T>(template: string, workspaceId: string): SQL<T> {
  const [first, ...rest] = template.split("$ws");
  return sql.join([sql.raw(first), ...rest.flatMap((part) => [sql`${workspaceId}`, sql.raw(part)])]) as SQL<T>;
}

export function nextSeqSql(workspaceId: string): SQL<number> {
  return bound<number>(NEXT_SEQ, workspaceId);
}

export function nextCreatedAtSql(workspaceId: string): SQL<string> {
  return bound<string>(NEXT_CREATED_AT, workspaceId);
}

/** The same two expressions for plain prepared statements, with the workspace id as the numbered parameter `param` (`?2`). */
export function nextSeqText(param: string): string {
  return NEXT_SEQ.replaceAll("$ws", param);
}

export function nextCreatedAtText(param: string): string {
  return NEXT_CREATED_AT.replaceAll("$ws", param);
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
