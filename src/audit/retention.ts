import { and, asc, between, desc, eq, isNull, lt, sql } from "drizzle-orm";
import { createDb, type Database } from "../db/client.ts";
import { auditChains, auditLogs, workspaces } from "../db/schema.ts";
import type { WorkerEnv } from "../env.ts";
import type { Logger } from "../lib/logger.ts";
import { recordAudit } from "./audit-logger.ts";
import { entryHash } from "./canonical.ts";
import { chainState, STORED_COLUMNS, type StoredRow, sealChain } from "./chain.ts";
import { ndjsonLine } from "./export.ts";
import { toItem } from "./query.ts";

/**
 * Retention (daily cron): seal what is unsealed, then per workspace archive
 * the entries older than its `audit_retention_days` to R2 as NDJSON, and only
 * then delete them. The last archived entry's seq and hash become the chain's
 * anchor, from which verify continues, so the chain checks across the cut.
 * A chunk whose links do not verify is neither archived nor deleted: the
 * evidence stays where verify reports it.
 */

export const AUDIT_ARCHIVE_PREFIX = "audit-archive/";
const DAY_MS = 24 * 60 * 60 * 1000;
/** Entries per R2 object (and per delete). */
const ARCHIVE_CHUNK_ROWS = 1_000;
/** Per workspace per run, so one run stays bounded; the next run continues. */
const ARCHIVE_MAX_CHUNKS_PER_RUN = 100;

export interface ArchiveResult {
  archived: number;
  keys: string[];
  stoppedAt?: string;
}

type ArchiveLogger = Pick<Logger, "info" | "warn" | "error">;

export function archiveKey(workspaceId: string, firstSeq: number, lastSeq: number): string {
  const pad = (seq: number) => String(seq).padStart(12, "0");
  return `${AUDIT_ARCHIVE_PREFIX}${workspaceId}/${pad(firstSeq)}-${pad(lastSeq)}.ndjson`;
}

/** Archives and cuts one workspace's entries created before `cutoffIso`. */
export async function archiveExpired(
  db: Database,
  bucket: R2Bucket,
  workspaceId: string,
  cutoffIso: string,
  logger: ArchiveLogger,
): Promise<ArchiveResult> {
  const result: ArchiveResult = { archived: 0, keys: [] };
  const cut = await db
    .select({ seq: auditLogs.seq })
    .from(auditLogs)
    .where(and(eq(auditLogs.workspaceId, workspaceId), lt(auditLogs.createdAt, cutoffIso)))
    .orderBy(desc(auditLogs.createdAt), desc(auditLogs.seq))
    .limit(1);
  const cutSeq = cut[0]?.seq ?? null;
  if (cutSeq === null) return result;

  for (let chunk = 0; chunk < ARCHIVE_MAX_CHUNKS_PER_RUN; chunk++) {
    const state = await chainState(db, workspaceId);
    if (state.anchorSeq >= cutSeq) break;
    const rows: StoredRow[] = await db
      .select(STORED_COLUMNS)
      .from(auditLogs)
      .where(and(eq(auditLogs.workspaceId, workspaceId), between(auditLogs.seq, state.anchorSeq + 1, cutSeq)))
      .orderBy(asc(auditLogs.seq))
      .limit(ARCHIVE_CHUNK_ROWS);
    if (rows.length === 0) break;

    let prevHash = state.anchorHash;
    let expectedSeq = state.anchorSeq + 1;
    for (const row of rows) {
      const intact =
        row.seq === expectedSeq &&
        row.hash !== null &&
        row.prev_hash === prevHash &&
        (await entryHash(prevHash, row)) === row.hash;
      if (!intact && row.seq === expectedSeq && row.hash === null && row.seq > state.headSeq) {
        // Past the sealed head: written, not sealed yet (a sealer failed or stopped at its bound). Not a break.
        result.stoppedAt = `seq ${expectedSeq}`;
        logger.warn("audit retention paused: entries here are not sealed yet; the next run continues", {
          workspace_id: workspaceId,
          seq: expectedSeq,
        });
        return result;
      }
      if (!intact) {
        result.stoppedAt = `seq ${expectedSeq}`;
        logger.error("audit retention stopped: the chain does not verify here; nothing past it is archived", {
          workspace_id: workspaceId,
          seq: expectedSeq,
        });
        return result;
      }
      prevHash = row.hash as string;
      expectedSeq += 1;
    }

    const first = rows[0];
    const last = rows[rows.length - 1];
    const key = archiveKey(workspaceId, first.seq, last.seq);
    await bucket.put(key, rows.map((row) => ndjsonLine(toItem(row))).join(""), {
      httpMetadata: { contentType: "application/x-ndjson" },
      customMetadata: {
        workspace_id: workspaceId,
        first_seq: String(first.seq),
        last_seq: String(last.seq),
        prev_hash: first.prev_hash ?? "",
        last_hash: last.hash ?? "",
      },
    });
    // The anchor moves forward only, so two runs at once cannot move it back.
    await db.batch([
      db
        .insert(auditChains)
        .values({ workspaceId, anchorSeq: last.seq, anchorHash: last.hash, archivedCount: rows.length })
        .onConflictDoUpdate({
          target: auditChains.workspaceId,
          set: {
            anchorSeq: sql`excluded.anchor_seq`,
            anchorHash: sql`excluded.anchor_hash`,
            archivedCount: sql`${auditChains.archivedCount} + excluded.archived_count`,
            updatedAt: sql`(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))`,
          },
          setWhere: sql`excluded.anchor_seq > ${auditChains.anchorSeq}`,
        }),
      db
        .delete(auditLogs)
        .where(and(eq(auditLogs.workspaceId, workspaceId), between(auditLogs.seq, first.seq, last.seq))),
    ]);
    result.archived += rows.length;
    result.keys.push(key);
  }
  return result;
}

/**
 * The daily job: seal every workspace with unsealed entries, then apply each workspace's retention. A
 * workspace that fails (R2 or D1 erring) is logged and skipped, never costing the others their run; the
 * job then fails naming them, for the cron to report.
 */
export async function runAuditRetention(
  env: Pick<WorkerEnv, "DB" | "ARTIFACTS">,
  logger: ArchiveLogger,
  nowMs = Date.now(),
): Promise<void> {
  const db = createDb(env.DB as D1Database);
  const failed = new Set<string>();
  const unsealed = await db
    .selectDistinct({ workspaceId: auditLogs.workspaceId })
    .from(auditLogs)
    .where(isNull(auditLogs.hash));
  for (const { workspaceId } of unsealed) {
    try {
      await sealChain(db, workspaceId);
    } catch (error) {
      // Its archive then stops where its unsealed entries start; the other workspaces go on.
      failed.add(workspaceId);
      logger.error("audit retention could not seal a workspace's chain", { workspace_id: workspaceId, error });
    }
  }

  const all = await db.select({ id: workspaces.id, retentionDays: workspaces.auditRetentionDays }).from(workspaces);
  for (const workspace of all) {
    try {
      await applyRetention(db, env.ARTIFACTS as R2Bucket, workspace, nowMs, logger);
    } catch (error) {
      failed.add(workspace.id);
      logger.error("audit retention failed for a workspace", { workspace_id: workspace.id, error });
    }
  }
  if (failed.size > 0) {
    throw new Error(`audit retention failed for ${failed.size} workspace(s): ${[...failed].join(", ")}`);
  }
}

async function applyRetention(
  db: Database,
  bucket: R2Bucket,
  workspace: { id: string; retentionDays: number },
  nowMs: number,
  logger: ArchiveLogger,
): Promise<void> {
  const cutoffIso = new Date(nowMs - workspace.retentionDays * DAY_MS).toISOString();
  const result = await archiveExpired(db, bucket, workspace.id, cutoffIso, logger);
  if (result.archived === 0) return;
  logger.info("audit entries archived", {
    workspace_id: workspace.id,
    archived: result.archived,
    objects: result.keys.length,
  });
  await recordAudit(db, {
    workspaceId: workspace.id,
    actor: { type: "system", id: "audit-retention", display: "audit retention" },
    action: "audit.archive",
    resourceType: "audit_log",
    metadata: {
      archived_entries: result.archived,
      cutoff: cutoffIso,
      retention_days: workspace.retentionDays,
      r2_keys: result.keys,
    },
  });
}
