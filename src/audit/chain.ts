import { and, asc, eq, gt, gte, isNotNull, isNull, lte, sql } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { jsonRowsSql } from "../db/json-rows.ts";
import { auditChains, auditLogs } from "../db/schema.ts";
import { type ChainedRow, entryHash, GENESIS_HASH } from "./canonical.ts";

/**
 * The per-workspace hash chain: sealing (hashing entries the writers left
 * unsealed) and verification. See src/audit/audit-logger.ts for why writers
 * do not hash.
 */

/** The columns the hash covers, selected under their stored names. */
export const CHAINED_COLUMNS = {
  id: auditLogs.id,
  workspace_id: auditLogs.workspaceId,
  seq: auditLogs.seq,
  actor_type: auditLogs.actorType,
  actor_id: auditLogs.actorId,
  actor_display: auditLogs.actorDisplay,
  action: auditLogs.action,
  resource_type: auditLogs.resourceType,
  resource_id: auditLogs.resourceId,
  request_id: auditLogs.requestId,
  trace_id: auditLogs.traceId,
  ip: auditLogs.ip,
  user_agent: auditLogs.userAgent,
  changes: auditLogs.changes,
  metadata: auditLogs.metadata,
  created_at: auditLogs.createdAt,
};

export const STORED_COLUMNS = { ...CHAINED_COLUMNS, prev_hash: auditLogs.prevHash, hash: auditLogs.hash };
export type StoredRow = ChainedRow & { prev_hash: string | null; hash: string | null };

/** Rows hashed per D1 batch: one round trip each, well under D1's statement limits. */
const SEAL_PAGE_ROWS = 200;
/** One call seals at most this many; the rest waits for the next call. */
const SEAL_MAX_ROWS_PER_CALL = 5_000;
const VERIFY_PAGE_ROWS = 500;

export interface ChainState {
  anchorSeq: number;
  anchorHash: string;
  headSeq: number;
  headHash: string | null;
}

export async function chainState(db: Database, workspaceId: string): Promise<ChainState> {
  const rows = await db.select().from(auditChains).where(eq(auditChains.workspaceId, workspaceId)).limit(1);
  const row = rows[0];
  return {
    anchorSeq: row?.anchorSeq ?? 0,
    anchorHash: row?.anchorHash ?? GENESIS_HASH,
    headSeq: row?.headSeq ?? 0,
    headHash: row?.headHash ?? null,
  };
}

/** The hash an entry at `seq` chains from, or null when its predecessor is gone (the chain is broken). */
async function predecessorHash(db: Database, workspaceId: string, seq: number): Promise<string | null> {
  if (seq === 1) return GENESIS_HASH;
  const rows = await db
    .select({ hash: auditLogs.hash })
    .from(auditLogs)
    .where(and(eq(auditLogs.workspaceId, workspaceId), eq(auditLogs.seq, seq - 1)))
    .limit(1);
  if (rows.length > 0) return rows[0].hash;
  const state = await chainState(db, workspaceId);
  return state.anchorSeq === seq - 1 ? state.anchorHash : null;
}

/** Moves the recorded head forward only: concurrent sealers may finish in any order. */
const ADVANCE_HEAD_SQL = `INSERT INTO audit_chains (workspace_id, head_seq, head_hash) VALUES (?, ?, ?)
  ON CONFLICT (workspace_id) DO UPDATE SET head_seq = excluded.head_seq, head_hash = excluded.head_hash,
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
  WHERE excluded.head_seq > audit_chains.head_seq`;

/**
 * Seals a page of entries in one statement (id, prev_hash, hash triples as one
 * JSON parameter, src/db/json-rows.ts), each unless another sealer got there first.
 */
const SEAL_ENTRIES_SQL = `UPDATE audit_logs SET prev_hash = s.prev_hash, hash = s.hash
  FROM ${jsonRowsSql(["id", "prev_hash", "hash"])} AS s
  WHERE audit_logs.id = s.id AND audit_logs.hash IS NULL`;

/**
 * The head's seq (0 before the first seal), as a subquery. Sealed entries are
 * always a prefix of the chain and the head is its last one (it moves in the
 * same batch as the seals), so an entry at or below it without a hash was
 * sealed once and lost its hash: edited behind the API's back, the hash
 * cleared. Sealing it again would give the edit a valid hash and move the
 * break to the entry after it (or, at the head, hide it); it is left for
 * verify to name (`unsealed`).
 */
function headSeqSql(workspaceId: string) {
  return sql<number>`COALESCE((SELECT head_seq FROM audit_chains WHERE workspace_id = ${workspaceId}), 0)`;
}

/**
 * Hashes a workspace's unsealed entries in seq order, from the last sealed
 * hash. Idempotent: every sealer computes the same hashes, and an update only
 * applies to a row that is still unsealed. Stops at a gap (a deleted entry),
 * which verify then reports, and never reseals an entry at or below the head.
 * Returns how many entries it sealed.
 */
export async function sealChain(db: Database, workspaceId: string): Promise<number> {
  let sealed = 0;
  while (sealed < SEAL_MAX_ROWS_PER_CALL) {
    const pending: ChainedRow[] = await db
      .select(CHAINED_COLUMNS)
      .from(auditLogs)
      .where(
        and(eq(auditLogs.workspaceId, workspaceId), isNull(auditLogs.hash), gt(auditLogs.seq, headSeqSql(workspaceId))),
      )
      .orderBy(asc(auditLogs.seq))
      .limit(SEAL_PAGE_ROWS);
    if (pending.length === 0) return sealed;
    let prevHash = await predecessorHash(db, workspaceId, pending[0].seq);
    if (prevHash === null) return sealed;

    const d1 = db.$client;
    const seals: [string, string, string][] = [];
    let expectedSeq = pending[0].seq;
    let gap = false;
    for (const row of pending) {
      if (row.seq !== expectedSeq) {
        gap = true;
        break;
      }
      const hash = await entryHash(prevHash, row);
      seals.push([row.id, prevHash, hash]);
      prevHash = hash;
      expectedSeq += 1;
    }
    await d1.batch([
      d1.prepare(SEAL_ENTRIES_SQL).bind(JSON.stringify(seals)),
      d1.prepare(ADVANCE_HEAD_SQL).bind(workspaceId, expectedSeq - 1, prevHash),
    ]);
    sealed += seals.length;
    if (gap || pending.length < SEAL_PAGE_ROWS) return sealed;
  }
  return sealed;
}

export type BreakReason =
  /** The entry with this seq is gone. */
  | "missing"
  /** The entry's content no longer matches its hash: it was edited. */
  | "hash_mismatch"
  /** The entry's prev_hash is not its predecessor's hash: one of the two was rewritten. */
  | "link_mismatch"
  /** A sealed entry lost its hash while later entries kept theirs. */
  | "unsealed"
  /** The entry anchored outside D1 (src/audit/anchor.ts) no longer has the anchored hash: D1 was rewritten. */
  | "anchor_mismatch";

export interface ChainBreak {
  seq: number;
  id: string | null;
  reason: BreakReason;
  detail: string;
}

export interface VerifyReport {
  /** No broken entry among those checked (and, once `complete`, none in the whole chain). */
  ok: boolean;
  /** The walk reached the head. Otherwise it stopped at the entry budget: continue from `next`. */
  complete: boolean;
  next: VerifyCheckpoint | null;
  checked_entries: number;
  first_seq: number | null;
  last_seq: number | null;
  pending_entries: number;
  anchor: { seq: number; hash: string } | null;
  head: { seq: number; hash: string | null };
  /** The chain's anchor outside D1 the walk checked against, if there is one. */
  external_anchor: { seq: number; hash: string } | null;
  first_broken: ChainBreak | null;
}

/** Where a walk stopped: the last entry it verified and that entry's hash. */
export interface VerifyCheckpoint {
  after_seq: number;
  after_hash: string;
}

/** Entries one call verifies at most: a long chain is walked in several calls, each within a request's CPU budget. */
export const DEFAULT_VERIFY_ENTRIES = 50_000;
export const MAX_VERIFY_ENTRIES = 200_000;

/**
 * Walks a workspace's chain from the retention anchor (or genesis), or from a
 * checkpoint an earlier call returned, and names the first broken entry: a
 * deletion shows as a missing seq (or a head that is no longer there), an edit
 * as a hash mismatch. Stops after `maxEntries` with a checkpoint to go on from.
 */
export async function verifyChain(
  db: Database,
  workspaceId: string,
  options: { from?: VerifyCheckpoint; maxEntries?: number; externalAnchor?: { seq: number; hash: string } | null } = {},
): Promise<VerifyReport> {
  const maxEntries = Math.min(MAX_VERIFY_ENTRIES, Math.max(1, options.maxEntries ?? DEFAULT_VERIFY_ENTRIES));
  await sealChain(db, workspaceId);
  const state = await chainState(db, workspaceId);
  let prevHash = state.anchorHash;
  let expectedSeq = state.anchorSeq + 1;
  let checked = 0;
  let firstSeq: number | null = null;
  let pending = 0;
  let broken: ChainBreak | null = null;
  let complete = true;

  // The chain starts after the retention anchor (or at 1). An entry at or below that (seq 0 or less, or a seq
  // retention archived) is on no chain, and the walk below would never see it, yet the list and stats show it:
  // it was inserted behind the API's back.
  const stray = await db
    .select({ seq: auditLogs.seq, id: auditLogs.id })
    .from(auditLogs)
    .where(and(eq(auditLogs.workspaceId, workspaceId), lte(auditLogs.seq, state.anchorSeq)))
    .orderBy(asc(auditLogs.seq))
    .limit(1);
  if (stray.length > 0) {
    broken = {
      seq: stray[0].seq,
      id: stray[0].id,
      reason: "link_mismatch",
      detail:
        state.anchorSeq > 0
          ? `Entry ${stray[0].seq} is on no chain: the chain starts after entry ${state.anchorSeq}, archived by retention.`
          : `Entry ${stray[0].seq} is on no chain: the chain starts at entry 1.`,
    };
  }

  if (options.from && options.from.after_seq > state.anchorSeq) {
    // Going on from a checkpoint: the entry there must still be the one verified then.
    const { after_seq: afterSeq, after_hash: afterHash } = options.from;
    const stored = await hashAt(db, workspaceId, afterSeq);
    if (!broken && stored !== afterHash) {
      broken = {
        seq: afterSeq,
        id: null,
        reason: stored === null ? "missing" : "link_mismatch",
        detail: `Entry ${afterSeq} is not the entry verified at that position before.`,
      };
    }
    prevHash = afterHash;
    expectedSeq = afterSeq + 1;
  }

  const external = options.externalAnchor ?? null;
  // Checked where the walk passes it; one at or before where it starts was checked already (or archived).
  let externalPending = external !== null && external.seq >= expectedSeq;
  if (!broken && external && external.seq === state.anchorSeq && external.hash !== state.anchorHash) {
    broken = anchorBreak(external.seq, null);
  }

  walk: while (!broken) {
    const pageRows = Math.min(VERIFY_PAGE_ROWS, maxEntries - checked);
    if (pageRows === 0) {
      complete = !(await existsFrom(db, workspaceId, expectedSeq));
      break;
    }
    const rows: StoredRow[] = await db
      .select(STORED_COLUMNS)
      .from(auditLogs)
      .where(and(eq(auditLogs.workspaceId, workspaceId), gte(auditLogs.seq, expectedSeq)))
      .orderBy(asc(auditLogs.seq))
      .limit(pageRows);
    for (const row of rows) {
      if (row.seq !== expectedSeq) {
        broken = {
          seq: expectedSeq,
          id: null,
          reason: "missing",
          detail: `Entries ${expectedSeq}..${row.seq - 1} are missing before entry ${row.seq} (${row.id}).`,
        };
        break walk;
      }
      if (row.hash === null) {
        pending = await countFrom(db, workspaceId, row.seq);
        const laterSealed = await db
          .select({ seq: auditLogs.seq })
          .from(auditLogs)
          .where(and(eq(auditLogs.workspaceId, workspaceId), gte(auditLogs.seq, row.seq), isNotNull(auditLogs.hash)))
          .limit(1);
        if (laterSealed.length > 0) {
          broken = {
            seq: row.seq,
            id: row.id,
            reason: "unsealed",
            detail: `Entry ${row.seq} has no hash but entry ${laterSealed[0].seq} after it does.`,
          };
        } else if (row.seq <= state.headSeq) {
          // The newest sealed entry (or one below it, with everything after it) lost its hash.
          broken = {
            seq: row.seq,
            id: row.id,
            reason: "unsealed",
            detail: `Entry ${row.seq} has no hash but was sealed: the chain's head is entry ${state.headSeq}.`,
          };
        }
        break walk;
      }
      if (row.prev_hash !== prevHash) {
        broken = {
          seq: row.seq,
          id: row.id,
          reason: "link_mismatch",
          detail: `Entry ${row.seq} does not chain from entry ${row.seq - 1}: one of them was rewritten.`,
        };
        break walk;
      }
      if ((await entryHash(prevHash, row)) !== row.hash) {
        broken = {
          seq: row.seq,
          id: row.id,
          reason: "hash_mismatch",
          detail: `Entry ${row.seq} was changed after it was sealed.`,
        };
        break walk;
      }
      if (externalPending && external && row.seq === external.seq) {
        if (row.hash !== external.hash) {
          broken = anchorBreak(row.seq, row.id);
          break walk;
        }
        externalPending = false;
      }
      firstSeq ??= row.seq;
      prevHash = row.hash;
      expectedSeq += 1;
      checked += 1;
    }
    if (rows.length < pageRows) break;
  }

  const lastSeq = checked > 0 ? expectedSeq - 1 : null;
  if (!broken && complete && externalPending && external) {
    // The walk ended before the anchored entry: it is gone, with everything after it (head row included).
    broken = {
      seq: external.seq,
      id: null,
      reason: "missing",
      detail: `Entry ${external.seq} was sealed and anchored outside D1, and is gone.`,
    };
  }
  if (!broken && complete && state.headSeq > state.anchorSeq) {
    // The newest sealed entries were deleted: nothing after them to notice, but the head remembers.
    if (state.headSeq > expectedSeq - 1) {
      broken = {
        seq: expectedSeq,
        id: null,
        reason: "missing",
        detail: `Entries ${expectedSeq}..${state.headSeq} were sealed and are gone.`,
      };
    } else if (state.headHash !== null && (await hashAt(db, workspaceId, state.headSeq)) !== state.headHash) {
      broken = {
        seq: state.headSeq,
        id: null,
        reason: "link_mismatch",
        detail: `Entry ${state.headSeq} is not the entry that was sealed at that position.`,
      };
    }
  }
  return {
    ok: broken === null,
    complete: complete || broken !== null,
    next: complete || broken !== null ? null : { after_seq: expectedSeq - 1, after_hash: prevHash },
    checked_entries: checked,
    first_seq: firstSeq,
    last_seq: lastSeq,
    pending_entries: pending,
    anchor: state.anchorSeq > 0 ? { seq: state.anchorSeq, hash: state.anchorHash } : null,
    head: { seq: state.headSeq, hash: state.headHash },
    external_anchor: external ? { seq: external.seq, hash: external.hash } : null,
    first_broken: broken,
  };
}

function anchorBreak(seq: number, id: string | null): ChainBreak {
  return {
    seq,
    id,
    reason: "anchor_mismatch",
    detail: `Entry ${seq} does not have the hash anchored outside D1 when it was sealed: the log was rewritten.`,
  };
}

export async function hashAt(db: Database, workspaceId: string, seq: number): Promise<string | null> {
  const rows = await db
    .select({ hash: auditLogs.hash })
    .from(auditLogs)
    .where(and(eq(auditLogs.workspaceId, workspaceId), eq(auditLogs.seq, seq)))
    .limit(1);
  return rows[0]?.hash ?? null;
}

async function existsFrom(db: Database, workspaceId: string, seq: number): Promise<boolean> {
  const rows = await db
    .select({ seq: auditLogs.seq })
    .from(auditLogs)
    .where(and(eq(auditLogs.workspaceId, workspaceId), gte(auditLogs.seq, seq)))
    .limit(1);
  return rows.length > 0;
}

async function countFrom(db: Database, workspaceId: string, seq: number): Promise<number> {
  const rows = await db
    .select({ count: sql<number>`count(*)` })
    .from(auditLogs)
    .where(and(eq(auditLogs.workspaceId, workspaceId), gte(auditLogs.seq, seq)));
  return rows[0]?.count ?? 0;
}
