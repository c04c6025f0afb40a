import { and, count, desc, sql } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { type ActorType, auditLogs } from "../db/schema.ts";
import type { AuditAction } from "./actions.ts";
import { STORED_COLUMNS, type StoredRow } from "./chain.ts";
import {
  type AuditFilters,
  type AuditListQuery,
  belowSeq,
  decodeCursor,
  encodeCursor,
  filterConditions,
} from "./filters.ts";

/** Reading the audit log: entries as the API shows them, pages, statistics. */

export interface AuditLogItem {
  id: string;
  seq: number;
  workspace_id: string;
  created_at: string;
  actor: { type: ActorType; id: string; display: string | null };
  action: AuditAction;
  resource_type: string;
  resource_id: string | null;
  request_id: string | null;
  trace_id: string | null;
  ip: string | null;
  user_agent: string | null;
  changes: { before?: unknown; after?: unknown } | null;
  metadata: Record<string, unknown> | null;
  prev_hash: string | null;
  hash: string | null;
}

function parseJson<T>(text: string | null): T | null {
  if (text === null) return null;
  try {
    return JSON.parse(text) as T;
  } catch {
    return null;
  }
}

export function toItem(row: StoredRow): AuditLogItem {
  return {
    id: row.id,
    seq: row.seq,
    workspace_id: row.workspace_id,
    created_at: row.created_at,
    actor: { type: row.actor_type as ActorType, id: row.actor_id, display: row.actor_display },
    action: row.action as AuditAction,
    resource_type: row.resource_type,
    resource_id: row.resource_id,
    request_id: row.request_id,
    trace_id: row.trace_id,
    ip: row.ip,
    user_agent: row.user_agent,
    changes: parseJson(row.changes),
    metadata: parseJson(row.metadata),
    prev_hash: row.prev_hash,
    hash: row.hash,
  };
}

/** The query for one page, newest first (one row more than the page, to know whether another follows). */
export function listQuery(db: Database, workspaceId: string, query: AuditListQuery) {
  const cursorSeq = query.cursor ? decodeCursor(query.cursor) : null;
  const where = cursorSeq
    ? and(filterConditions(workspaceId, query), belowSeq(cursorSeq))
    : filterConditions(workspaceId, query);
  return db
    .select(STORED_COLUMNS)
    .from(auditLogs)
    .where(where)
    .orderBy(desc(auditLogs.seq))
    .limit(query.limit + 1);
}

export async function listAuditLogs(
  db: Database,
  workspaceId: string,
  query: AuditListQuery,
): Promise<{ data: AuditLogItem[]; next_cursor: string | null }> {
  const rows: StoredRow[] = await listQuery(db, workspaceId, query);
  const page = rows.slice(0, query.limit);
  const more = rows.length > query.limit;
  return { data: page.map(toItem), next_cursor: more ? encodeCursor(page[page.length - 1].seq) : null };
}

export const STATS_DEFAULT_RANGE_MS = 30 * 24 * 60 * 60 * 1000;
/** The busiest actors listed; the rest are counted in `total` only. */
export const STATS_MAX_ACTORS = 100;

export interface AuditStats {
  from: string;
  to: string;
  total: number;
  by_action: { action: string; count: number }[];
  by_actor: { actor_type: string; actor_id: string; actor_display: string | null; count: number }[];
  by_day: { day: string; count: number }[];
}

/** Counts by action, by actor and by UTC day over [from, to) (default: the last 30 days). */
export async function auditStats(
  db: Database,
  workspaceId: string,
  filters: AuditFilters,
  nowMs = Date.now(),
): Promise<AuditStats> {
  const to = filters.to ?? new Date(nowMs).toISOString();
  const from = filters.from ?? new Date(Date.parse(to) - STATS_DEFAULT_RANGE_MS).toISOString();
  const where = filterConditions(workspaceId, { ...filters, from, to });
  const day = sql<string>`substr(${auditLogs.createdAt}, 1, 10)`;
  const [byAction, byActor, byDay] = await db.batch([
    db
      .select({ action: auditLogs.action, count: count() })
      .from(auditLogs)
      .where(where)
      .groupBy(auditLogs.action)
      .orderBy(desc(count()), auditLogs.action),
    db
      .select({
        actor_type: auditLogs.actorType,
        actor_id: auditLogs.actorId,
        actor_display: sql<string | null>`max(${auditLogs.actorDisplay})`,
        count: count(),
      })
      .from(auditLogs)
      .where(where)
      .groupBy(auditLogs.actorType, auditLogs.actorId)
      .orderBy(desc(count()), auditLogs.actorId)
      .limit(STATS_MAX_ACTORS),
    db.select({ day, count: count() }).from(auditLogs).where(where).groupBy(day).orderBy(day),
  ]);
  return {
    from: new Date(from).toISOString(),
    to: new Date(to).toISOString(),
    total: byAction.reduce((sum, row) => sum + row.count, 0),
    by_action: byAction,
    by_actor: byActor,
    by_day: byDay,
  };
}
