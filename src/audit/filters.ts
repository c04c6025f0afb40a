import { z } from "@hono/zod-openapi";
import { and, eq, gte, lt, lte, type SQL } from "drizzle-orm";
import { ACTOR_TYPES, auditLogs } from "../db/schema.ts";
import { AUDIT_ACTION_NAMES } from "./actions.ts";
import { firstSeqAtOrAfterSql, lastSeqBeforeSql } from "./sql.ts";

/**
 * Query filters shared by list, export and stats, and how they become SQL.
 * Every condition starts with the caller's workspace; a time range becomes a
 * seq range (created_at never decreases along seq), so each filter is one
 * range of one (workspace_id, <column>, seq) index.
 */

const shortText = (name: string) =>
  z
    .string()
    .min(1)
    .max(200)
    .openapi({ description: `Exact ${name}.` });

const filterFields = {
  actor: shortText("actor id (API key id, user id, `operator`, or a system actor)").optional(),
  actor_type: z.enum(ACTOR_TYPES).optional().openapi({ description: "Actor type." }),
  action: z.enum(AUDIT_ACTION_NAMES).optional().openapi({ description: "Action, from the documented catalogue." }),
  resource_type: shortText("resource type, e.g. `task`").optional(),
  resource_id: shortText("resource id; needs `resource_type`").optional(),
  request_id: shortText("request id (`X-Request-Id`)").optional(),
  from: z.iso.datetime().optional().openapi({ description: "Entries at or after this time (ISO 8601 UTC)." }),
  to: z.iso.datetime().optional().openapi({ description: "Entries strictly before this time (ISO 8601 UTC)." }),
};

function checkFilters(
  filters: { resource_id?: string; resource_type?: string; from?: string; to?: string },
  ctx: z.RefinementCtx,
): void {
  if (filters.resource_id && !filters.resource_type) {
    ctx.addIssue({ code: "custom", path: ["resource_id"], message: "resource_id needs resource_type" });
  }
  if (filters.from && filters.to && Date.parse(filters.from) >= Date.parse(filters.to)) {
    ctx.addIssue({ code: "custom", path: ["to"], message: "to must be after from" });
  }
}

export const AuditFilterSchema = z.object(filterFields).superRefine(checkFilters);

export type AuditFilters = z.infer<typeof AuditFilterSchema>;

/** Opaque cursor: the seq to continue below (newest first), base64url JSON. */
export function encodeCursor(seq: number): string {
  return btoa(JSON.stringify({ s: seq }))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replace(/=+$/, "");
}

export function decodeCursor(cursor: string): number | null {
  try {
    const padded = cursor.replaceAll("-", "+").replaceAll("_", "/");
    const value = JSON.parse(atob(padded)) as { s?: unknown };
    return typeof value.s === "number" && Number.isSafeInteger(value.s) && value.s > 0 ? value.s : null;
  } catch {
    return null;
  }
}

export const AuditListQuerySchema = z
  .object({
    ...filterFields,
    limit: z.coerce.number().int().min(1).max(100).default(20).openapi({ description: "Page size, 1..100." }),
    cursor: z
      .string()
      .max(200)
      .refine((value) => decodeCursor(value) !== null, "not a cursor this API issued")
      .optional()
      .openapi({ description: "`next_cursor` of the previous page." }),
  })
  .superRefine(checkFilters);

export type AuditListQuery = z.infer<typeof AuditListQuerySchema>;

export const AuditExportQuerySchema = z
  .object({
    ...filterFields,
    format: z.enum(["json", "csv"]).default("json").openapi({ description: "`json` (NDJSON) or `csv`." }),
  })
  .superRefine(checkFilters);

/** Normalises ISO times to the stored fixed-width form so text comparison is time comparison. */
function storedTime(iso: string): string {
  return new Date(iso).toISOString();
}

export function filterConditions(workspaceId: string, filters: AuditFilters): SQL {
  const conditions: (SQL | undefined)[] = [eq(auditLogs.workspaceId, workspaceId)];
  if (filters.actor) conditions.push(eq(auditLogs.actorId, filters.actor));
  if (filters.actor_type) conditions.push(eq(auditLogs.actorType, filters.actor_type));
  if (filters.action) conditions.push(eq(auditLogs.action, filters.action));
  if (filters.resource_type) conditions.push(eq(auditLogs.resourceType, filters.resource_type));
  if (filters.resource_id) conditions.push(eq(auditLogs.resourceId, filters.resource_id));
  if (filters.request_id) conditions.push(eq(auditLogs.requestId, filters.request_id));
  if (filters.from) conditions.push(gte(auditLogs.seq, firstSeqAtOrAfterSql(workspaceId, storedTime(filters.from))));
  if (filters.to) conditions.push(lte(auditLogs.seq, lastSeqBeforeSql(workspaceId, storedTime(filters.to))));
  return and(...conditions) as SQL;
}

export function belowSeq(seq: number): SQL {
  return lt(auditLogs.seq, seq);
}
