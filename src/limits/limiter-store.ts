import { outboxMigration } from "../events/outbox.ts";
import { ADMISSION_MIGRATION } from "./admission-store.ts";
import { AUDIT_ANCHOR_MIGRATION } from "./audit-anchor-store.ts";
import { ALERT_REPORTER_MIGRATION, BUDGET_MIGRATION, RESERVATION_EXPIRY_MIGRATION } from "./budget-store.ts";
import type { StrikeState } from "./strikes.ts";
import type { BucketState } from "./token-bucket.ts";

/**
 * The WorkspaceLimiter's SQLite access, and nothing else. Tables are
 * namespaced `limiter_*` so other state in the same object never collides.
 * Schema changes are append-only steps in MIGRATIONS; the applied version is
 * kept in `limiter_meta`.
 */

/** The limiter's event outbox table (src/events/outbox.ts). */
export const LIMITER_EVENT_OUTBOX = "limiter_event_outbox";

export type LimiterStorage = Pick<DurableObjectStorage, "sql" | "transactionSync">;

/**
 * Index i brings the schema from version i to i + 1. Never edit an applied
 * step: add one (task slots, the pending queue and budgets will come here).
 */
const MIGRATIONS: readonly (readonly string[])[] = [
  [
    `CREATE TABLE limiter_buckets (
       name TEXT PRIMARY KEY,
       tokens REAL NOT NULL,
       updated_at_ms INTEGER NOT NULL,
       full_at_ms INTEGER NOT NULL
     )`,
    "CREATE INDEX limiter_buckets_full_at ON limiter_buckets (full_at_ms)",
    `CREATE TABLE limiter_strikes (
       key TEXT PRIMARY KEY,
       strike_times_ms TEXT NOT NULL,
       blocked_until_ms INTEGER,
       expires_at_ms INTEGER NOT NULL
     )`,
    "CREATE INDEX limiter_strikes_expires_at ON limiter_strikes (expires_at_ms)",
  ],
  // 1 → 2: task admission (pending line and leased slots), src/limits/admission-store.ts.
  ADMISSION_MIGRATION,
  // 2 → 3: token and cost budgets (periods, charges, reported thresholds), src/limits/budget-store.ts.
  BUDGET_MIGRATION,
  // 3 → 4: the audit chain's anchor outside D1, src/limits/audit-anchor-store.ts.
  AUDIT_ANCHOR_MIGRATION,
  // 4 → 5: budget reservations expire, src/limits/budget-store.ts.
  RESERVATION_EXPIRY_MIGRATION,
  // 5 → 6: a threshold remembers the batch that reported it, src/limits/budget-store.ts.
  ALERT_REPORTER_MIGRATION,
  // 6 → 7: events the limiter decides (budget thresholds), queued until the hub has them, src/events/outbox.ts.
  outboxMigration(LIMITER_EVENT_OUTBOX),
];

export const LIMITER_SCHEMA_VERSION = MIGRATIONS.length;

export interface StoredBucket extends BucketState {
  /** When the bucket is full at the rate last seen; a full bucket equals a missing one, so it may be pruned. */
  fullAtMs: number;
}

export interface StoredStrikes extends StrikeState {
  expiresAtMs: number;
}

type BucketRow = { tokens: number; updated_at_ms: number; full_at_ms: number };
type StrikeRow = { strike_times_ms: string; blocked_until_ms: number | null; expires_at_ms: number };

export class LimiterStore {
  readonly #storage: LimiterStorage;

  constructor(storage: LimiterStorage) {
    this.#storage = storage;
    this.#migrate();
  }

  #migrate(): void {
    const sql = this.#storage.sql;
    this.#storage.transactionSync(() => {
      sql.exec("CREATE TABLE IF NOT EXISTS limiter_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)");
      const row = sql
        .exec<{ value: number }>("SELECT value FROM limiter_meta WHERE key = 'schema_version'")
        .toArray()[0];
      const current = row?.value ?? 0;
      if (current > MIGRATIONS.length) {
        // Rolled back code over a newer schema: refusing beats misreading counters.
        throw new Error(`limiter schema version ${current} is newer than this code (${MIGRATIONS.length})`);
      }
      for (let version = current; version < MIGRATIONS.length; version++) {
        for (const statement of MIGRATIONS[version]) sql.exec(statement);
      }
      if (current !== MIGRATIONS.length) {
        sql.exec(
          "INSERT INTO limiter_meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
          MIGRATIONS.length,
        );
      }
    });
  }

  schemaVersion(): number {
    return this.#storage.sql
      .exec<{ value: number }>("SELECT value FROM limiter_meta WHERE key = 'schema_version'")
      .one().value;
  }

  /** Runs `write` in one SQLite transaction: all of it lands or none does. */
  atomically<T>(write: () => T): T {
    return this.#storage.transactionSync(write);
  }

  readBucket(name: string): StoredBucket | null {
    const row = this.#storage.sql
      .exec<BucketRow>("SELECT tokens, updated_at_ms, full_at_ms FROM limiter_buckets WHERE name = ?", name)
      .toArray()[0];
    return row ? { tokens: row.tokens, updatedAtMs: row.updated_at_ms, fullAtMs: row.full_at_ms } : null;
  }

  writeBucket(name: string, bucket: StoredBucket): void {
    this.#storage.sql.exec(
      `INSERT INTO limiter_buckets (name, tokens, updated_at_ms, full_at_ms) VALUES (?, ?, ?, ?)
       ON CONFLICT (name) DO UPDATE SET tokens = excluded.tokens, updated_at_ms = excluded.updated_at_ms, full_at_ms = excluded.full_at_ms`,
      name,
      bucket.tokens,
      bucket.updatedAtMs,
      bucket.fullAtMs,
    );
  }

  readStrikes(key: string): StoredStrikes | null {
    const row = this.#storage.sql
      .exec<StrikeRow>(
        "SELECT strike_times_ms, blocked_until_ms, expires_at_ms FROM limiter_strikes WHERE key = ?",
        key,
      )
      .toArray()[0];
    if (!row) return null;
    return {
      strikeTimesMs: JSON.parse(row.strike_times_ms) as number[],
      blockedUntilMs: row.blocked_until_ms,
      expiresAtMs: row.expires_at_ms,
    };
  }

  writeStrikes(key: string, strikes: StoredStrikes): void {
    this.#storage.sql.exec(
      `INSERT INTO limiter_strikes (key, strike_times_ms, blocked_until_ms, expires_at_ms) VALUES (?, ?, ?, ?)
       ON CONFLICT (key) DO UPDATE SET strike_times_ms = excluded.strike_times_ms,
         blocked_until_ms = excluded.blocked_until_ms, expires_at_ms = excluded.expires_at_ms`,
      key,
      JSON.stringify(strikes.strikeTimesMs),
      strikes.blockedUntilMs,
      strikes.expiresAtMs,
    );
  }

  /** Forgets buckets that are full and strike rows that no longer count. */
  prune(bucketsFullBeforeMs: number, strikesExpiredBeforeMs: number): void {
    this.#storage.sql.exec("DELETE FROM limiter_buckets WHERE full_at_ms <= ?", bucketsFullBeforeMs);
    this.#storage.sql.exec("DELETE FROM limiter_strikes WHERE expires_at_ms <= ?", strikesExpiredBeforeMs);
  }
}
