import { gte } from "drizzle-orm";
import { createDb, type Database } from "../db/client.ts";
import { auditChains } from "../db/schema.ts";
import type { AppConfig } from "../env.ts";
import type { Logger } from "../lib/logger.ts";
import type { AuditAnchor } from "../limits/audit-anchor-store.ts";
import { chainState, hashAt } from "./chain.ts";

/**
 * Anchoring a workspace's chain outside D1. After sealing, the head (seq and
 * hash of the newest sealed entry) is reported to the workspace's
 * WorkspaceLimiter, which keeps it in its own storage and only moves it
 * forward; verify then checks the chain still passes through that entry.
 * Rewriting D1 alone (entries, hashes and the head row together) can no
 * longer go unnoticed, except for entries sealed since the last anchoring.
 *
 * Before moving the anchor, the entry at the current anchor must still carry
 * the anchored hash: a chain changed below its anchor is never adopted.
 */

export type { AuditAnchor };

export interface AnchorBook {
  get(): Promise<AuditAnchor | null>;
  advance(seq: number, hash: string): Promise<AuditAnchor>;
}

export function anchorBookOf(config: Pick<AppConfig, "WORKSPACE_LIMITER">, workspaceId: string): AnchorBook {
  const stub = () => config.WORKSPACE_LIMITER.getByName(workspaceId);
  return {
    get: async () => (await stub().auditAnchor()) as AuditAnchor | null,
    advance: async (seq, hash) => (await stub().advanceAuditAnchor(seq, hash)) as AuditAnchor,
  };
}

export type AnchorOutcome = "advanced" | "current" | "empty" | "refused";

export async function anchorChain(
  db: Database,
  workspaceId: string,
  book: AnchorBook,
  logger: Pick<Logger, "error">,
): Promise<AnchorOutcome> {
  const state = await chainState(db, workspaceId);
  if (state.headSeq === 0 || state.headHash === null) return "empty";
  const anchor = await book.get();
  if (anchor && anchor.seq >= state.headSeq) return "current";
  if (anchor && anchor.seq >= state.anchorSeq) {
    // At the retention cut the archived entry's hash is the cut's anchor hash; below it, nothing is left to compare.
    const stored = anchor.seq === state.anchorSeq ? state.anchorHash : await hashAt(db, workspaceId, anchor.seq);
    if (stored !== anchor.hash) {
      logger.error("audit chain changed below its anchor; the anchor stays where it was", {
        workspace_id: workspaceId,
        anchor_seq: anchor.seq,
      });
      return "refused";
    }
  }
  await book.advance(state.headSeq, state.headHash);
  return "advanced";
}

/** Chains whose head moved within this long are anchored again by the cron (covers seals whose anchoring failed). */
const RECENT_HEAD_MS = 15 * 60_000;

/** The five-minute job: anchor every chain sealed recently, wherever it was sealed. */
export async function anchorRecentChains(
  config: Pick<AppConfig, "DB" | "WORKSPACE_LIMITER">,
  logger: Pick<Logger, "info" | "error">,
  nowMs = Date.now(),
): Promise<void> {
  const db = createDb(config.DB);
  const since = new Date(nowMs - RECENT_HEAD_MS).toISOString();
  const recent = await db
    .select({ workspaceId: auditChains.workspaceId })
    .from(auditChains)
    .where(gte(auditChains.updatedAt, since));
  const outcomes: Record<AnchorOutcome, number> = { advanced: 0, current: 0, empty: 0, refused: 0 };
  for (const { workspaceId } of recent) {
    try {
      outcomes[await anchorChain(db, workspaceId, anchorBookOf(config, workspaceId), logger)] += 1;
    } catch (error) {
      logger.error("audit chain anchoring failed", { error, workspace_id: workspaceId });
    }
  }
  if (recent.length > 0) logger.info("audit chains anchored", { ...outcomes });
}
