import type { LimiterStorage } from "./limiter-store.ts";

/**
 * The workspace's audit chain, anchored outside D1: the last sealed entry
 * (seq and hash) the Worker reported, kept in the WorkspaceLimiter's own
 * storage. Someone able to rewrite D1 can recompute every hash and the head
 * row there, but not this: verify checks that the chain still passes through
 * it. It only moves forward. Created by the audit-anchor step of
 * limiter-store.ts MIGRATIONS.
 */

export const AUDIT_ANCHOR_MIGRATION: readonly string[] = [
  `CREATE TABLE limiter_audit_anchor (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     seq INTEGER NOT NULL,
     hash TEXT NOT NULL,
     anchored_at_ms INTEGER NOT NULL
   )`,
];

export interface AuditAnchor {
  seq: number;
  hash: string;
  anchored_at_ms: number;
}

export class AuditAnchorStore {
  readonly #storage: LimiterStorage;

  constructor(storage: LimiterStorage) {
    this.#storage = storage;
  }

  get(): AuditAnchor | null {
    return (
      this.#storage.sql
        .exec<{ seq: number; hash: string; anchored_at_ms: number }>(
          "SELECT seq, hash, anchored_at_ms FROM limiter_audit_anchor WHERE id = 1",
        )
        .toArray()[0] ?? null
    );
  }

  /** Records a later entry; an earlier or equal seq (a slower sealer) leaves the anchor as it is. */
  advance(seq: number, hash: string, nowMs: number): AuditAnchor {
    if (!Number.isInteger(seq) || seq < 1) throw new RangeError("seq must be a positive integer");
    if (!/^[0-9a-f]{64}$/.test(hash)) throw new RangeError("hash must be a SHA-256 hash in lowercase hex");
    this.#storage.sql.exec(
      `INSERT INTO limiter_audit_anchor (id, seq, hash, anchored_at_ms) VALUES (1, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, anchored_at_ms = excluded.anchored_at_ms
       WHERE excluded.seq > limiter_audit_anchor.seq`,
      seq,
      hash,
      nowMs,
    );
    return this.get()!;
  }
}
