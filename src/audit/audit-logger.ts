import { getTableColumns, type SQL, sql } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import type { Context, MiddlewareHandler } from "hono";
import { actorOf } from "../auth/principal.ts";
import type { Database } from "../db/client.ts";
import { createDb } from "../db/client.ts";
import { auditLogs } from "../db/schema.ts";
import { newId } from "../lib/ids.ts";
import type { Logger } from "../lib/logger.ts";
import { REDACTED, redact, redactText } from "../lib/redact.ts";
import type { HonoEnv } from "../types.ts";
import { type AuditAction, isAuditAction } from "./actions.ts";
import { type AnchorBook, anchorBookOf, anchorChain } from "./anchor.ts";
import { canonicalJson } from "./canonical.ts";
import { sealChain } from "./chain.ts";
import { nextCreatedAtSql, nextCreatedAtText, nextSeqSql, nextSeqText } from "./sql.ts";

/**
 * The AuditLogger: how the rest of the API records what happened.
 *
 * - `auditInsert(db, entry)` returns a drizzle query for the SAME
 *   `db.batch([...])` as the mutation it records. A D1 batch is one
 *   transaction, so the change and its entry commit or fail together.
 * - `recordAudit(db, entry)` is for events with no mutation (auth failures,
 *   security blocks).
 * - `auditContext(c)` takes actor, request id, trace id, IP and user agent
 *   from the request.
 *
 * Tamper evidence (src/audit/chain.ts): the insert assigns the entry's `seq`
 * with a subquery (`MAX(seq)+1` for the workspace) inside the batch, and
 * leaves `hash` null. Writers never read the previous hash, so 200 concurrent
 * mutations neither race nor serialise on it: D1 runs each batch as one
 * transaction, so the seqs form one gap-free line, and the unique
 * (workspace_id, seq) index would refuse a fork. The sealer then hashes
 * unsealed entries in seq order from the last sealed hash; sealers that run
 * at the same time compute identical values, so sealing is idempotent. It
 * runs after the response (`sealAfterResponse` below), on verify, and in the
 * daily cron.
 */

export type AuditActorType = "user" | "api_key" | "operator" | "system";

export interface AuditActor {
  type: AuditActorType;
  id: string;
  display?: string;
}

export interface AuditEntryInput {
  workspaceId: string;
  actor: AuditActor;
  action: AuditAction;
  resourceType: string;
  resourceId?: string | null;
  requestId?: string;
  traceId?: string;
  ip?: string;
  userAgent?: string;
  /** A before/after summary of an update; secrets are redacted before storing. */
  changes?: { before?: unknown; after?: unknown };
  metadata?: Record<string, unknown>;
}

/** Who an unauthenticated request is, for entries such as `auth.failed`. */
export const ANONYMOUS_ACTOR: AuditActor = { type: "system", id: "anonymous", display: "unauthenticated caller" };

// Bounds that keep one entry small however large the request was.
const MAX_TEXT_CHARS = 512;
const MAX_JSON_CHARS = 16_384;

function clip(value: string | null | undefined): string | null {
  if (value === undefined || value === null || value === "") return null;
  const clean = redactText(value);
  return clean.length > MAX_TEXT_CHARS ? `${clean.slice(0, MAX_TEXT_CHARS - 1)}…` : clean;
}

/** Redacted canonical JSON, or a note of its size when it is too large to keep. */
function jsonColumn(value: unknown): string | null {
  if (value === undefined || value === null) return null;
  const text = canonicalJson(redact(value));
  if (text.length <= MAX_JSON_CHARS) return text;
  return canonicalJson({ truncated: true, original_chars: text.length });
}

/** The redacted row an entry becomes, without seq, time and hashes (the insert and the sealer set those). */
export function entryRow(entry: AuditEntryInput) {
  if (!isAuditAction(entry.action)) throw new Error(`unknown audit action ${String(entry.action)}`);
  if (!entry.workspaceId) throw new Error("an audit entry needs a workspace");
  if (!entry.resourceType) throw new Error("an audit entry needs a resource type");
  const changes =
    entry.changes && (entry.changes.before !== undefined || entry.changes.after !== undefined)
      ? { before: entry.changes.before ?? null, after: entry.changes.after ?? null }
      : null;
  return {
    id: newId("auditLog"),
    workspaceId: entry.workspaceId,
    actorType: entry.actor.type,
    // An actor id is never a secret, but a careless caller might pass a raw key.
    actorId: clip(entry.actor.id) ?? REDACTED,
    actorDisplay: clip(entry.actor.display),
    action: entry.action,
    resourceType: clip(entry.resourceType) ?? "unknown",
    resourceId: clip(entry.resourceId),
    requestId: clip(entry.requestId),
    traceId: clip(entry.traceId),
    ip: clip(entry.ip),
    userAgent: clip(entry.userAgent),
    changes: jsonColumn(changes),
    metadata: jsonColumn(entry.metadata),
  };
}

/** A drizzle query to put in the SAME `db.batch([...])` as the mutation it records. */
export function auditInsert(db: Database, entry: AuditEntryInput): BatchItem<"sqlite"> {
  const row = entryRow(entry);
  notePendingSeal(row.workspaceId);
  return db.insert(auditLogs).values({
    ...row,
    seq: nextSeqSql(row.workspaceId),
    createdAt: nextCreatedAtSql(row.workspaceId),
  });
}

/**
 * auditInsert that writes the entry only if `condition` (SQL) holds when the batch reaches it. Put it before the
 * mutation, with the mutation's own WHERE as the condition: a batch is one transaction, so the entry is written
 * exactly when the mutation changes something. Without it, a request that lost a race (a second cancel, a
 * second revoke) wrote an entry claiming the change the winner made.
 */
export function auditInsertIf(db: Database, entry: AuditEntryInput, condition: SQL): BatchItem<"sqlite"> {
  const row: Record<string, unknown> = entryRow(entry);
  notePendingSeal(entry.workspaceId);
  // An INSERT … SELECT names every column in the table's order: seq and time as auditInsert sets them, the
  // hashes null until sealed. (A raw `db.run` query cannot go in a D1 batch: drizzle fails to bind it.)
  const computed: Record<string, SQL> = {
    seq: nextSeqSql(entry.workspaceId),
    createdAt: nextCreatedAtSql(entry.workspaceId),
  };
  const values = Object.keys(getTableColumns(auditLogs)).map((key) => computed[key] ?? sql`${row[key] ?? null}`);
  return db.insert(auditLogs).select(sql`SELECT ${sql.join(values, sql`, `)} WHERE ${condition}`);
}

/**
 * auditInsert as a plain D1 statement, for batches built from prepared
 * statements rather than the query builder (hot paths: rendering the drizzle
 * query cost more than running it). Same columns, same seq and time expressions.
 */
export function auditStatement(d1: D1Database, entry: AuditEntryInput): D1PreparedStatement {
  const row = entryRow(entry);
  notePendingSeal(row.workspaceId);
  const keys = Object.keys(row) as (keyof typeof row)[];
  auditInsertSql ??= renderAuditInsert(keys);
  return d1.prepare(auditInsertSql).bind(...keys.map((key) => row[key]));
}

let auditInsertSql: string | undefined;

function renderAuditInsert(keys: string[]): string {
  const columns = getTableColumns(auditLogs) as Record<string, { name: string }>;
  const workspaceParam = `?${keys.indexOf("workspaceId") + 1}`;
  const names = keys.map((key) => `"${columns[key].name}"`).join(", ");
  const marks = keys.map((_, index) => `?${index + 1}`).join(", ");
  return `INSERT INTO audit_logs (${names}, "seq", "created_at") VALUES (${marks}, ${nextSeqText(workspaceParam)}, ${nextCreatedAtText(workspaceParam)})`;
}

/** For events with no mutation (auth failures, security blocks). Seals the chain too, best effort. */
export async function recordAudit(db: Database, entry: AuditEntryInput): Promise<void> {
  await auditInsert(db, entry);
  try {
    await sealChain(db, entry.workspaceId);
  } catch {
    // Sealing again later (next write, verify, cron) gives the same hashes.
  }
}

/**
 * Workspaces this isolate wrote entries for since the last seal. Sealing is
 * idempotent, so sealing one too many (a batch that then failed, or another
 * request's workspace) costs one indexed query and is never wrong.
 */
const pendingSeal = new Set<string>();
const MAX_PENDING_WORKSPACES = 1_000;

function notePendingSeal(workspaceId: string): void {
  // Past the bound the cron and verify still seal; this only makes sealing prompt.
  if (pendingSeal.size < MAX_PENDING_WORKSPACES) pendingSeal.add(workspaceId);
}

/** Fields taken from a Hono request context: actor, request id, trace id, IP and user agent. */
export function auditContext(
  c: Context<HonoEnv>,
): Pick<AuditEntryInput, "actor" | "requestId" | "traceId" | "ip" | "userAgent"> {
  const principal = c.get("principal");
  return {
    actor: principal ? actorOf(principal) : ANONYMOUS_ACTOR,
    requestId: c.get("requestId"),
    traceId: c.get("trace")?.traceId,
    ip: c.req.header("CF-Connecting-IP") ?? undefined,
    userAgent: c.req.header("User-Agent") ?? undefined,
  };
}

/**
 * Middleware: once a request has its response, seal the chains of the
 * workspaces entries were written for, in the background, so entries are
 * hashed within moments rather than at the next verify or cron run, and
 * anchor their new heads outside D1 (src/audit/anchor.ts).
 */
export const sealAfterResponse: MiddlewareHandler<HonoEnv> = async (c, next) => {
  await next();
  // The caller's own workspace too: another request may have drained its id before this one's batch committed.
  const writes = c.req.method !== "GET" && c.req.method !== "HEAD" && !c.get("auditExempt");
  const own = writes ? c.get("workspaceId") : undefined;
  if (own) pendingSeal.add(own);
  if (pendingSeal.size === 0) return;
  const workspaceIds = [...pendingSeal];
  pendingSeal.clear();
  const config = c.get("config");
  const db = createDb(config.DB);
  const logger = c.get("logger");
  const work = Promise.all(
    workspaceIds.map((workspaceId) => scheduleSeal(db, workspaceId, logger, anchorBookOf(config, workspaceId))),
  );
  try {
    c.executionCtx.waitUntil(work);
  } catch {
    // No execution context (a plain app.request in a test): let it run unawaited.
  }
};

/** Route middleware of operations declared `x-audit-exempt`: they write no entry, so there is nothing to seal. */
export const writesNoAudit: MiddlewareHandler<HonoEnv> = async (c, next) => {
  c.set("auditExempt", true);
  await next();
};

/**
 * Sealing reads and rewrites a workspace's unsealed tail, so running it once
 * per write would cost more than the writes. Per isolate and workspace, one
 * seal runs at a time; writes that land meanwhile ask for one more pass, which
 * starts after SEAL_COALESCE_MS so a burst is sealed in a few batches. Only
 * the request that started the seal holds it: a promise belongs to the
 * request that made it (its continuations run there), so another request
 * holding it in its waitUntil could be left waiting on I/O it does not own.
 */
const SEAL_COALESCE_MS = 200;
const sealsInFlight = new Map<string, { rerun: boolean; done: Promise<void> }>();

function scheduleSeal(db: Database, workspaceId: string, logger: Logger, anchor: AnchorBook): Promise<void> {
  const inFlight = sealsInFlight.get(workspaceId);
  if (inFlight) {
    inFlight.rerun = true;
    return Promise.resolve();
  }
  const state = { rerun: false, done: Promise.resolve() };
  state.done = (async () => {
    try {
      do {
        state.rerun = false;
        await sealChain(db, workspaceId).catch((error: unknown) =>
          logger.warn("audit chain sealing failed; the next run seals it", { error, workspace_id: workspaceId }),
        );
        await anchorChain(db, workspaceId, anchor, logger).catch((error: unknown) =>
          logger.warn("audit chain anchoring failed; the next seal or the cron anchors it", {
            error,
            workspace_id: workspaceId,
          }),
        );
        // Writes that asked for a pass meanwhile (while sealing or anchoring) get one.
        if (state.rerun) await new Promise((wake) => setTimeout(wake, SEAL_COALESCE_MS));
      } while (state.rerun);
    } finally {
      sealsInFlight.delete(workspaceId);
    }
  })();
  sealsInFlight.set(workspaceId, state);
  return state.done;
}
