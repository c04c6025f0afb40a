import type { LimiterStorage } from "./limiter-store.ts";

/**
 * SQLite access for task admission inside the WorkspaceLimiter: the tables
 * `limiter_tasks` (pending tasks and leased slots) and `limiter_admission`
 * (the caps last seen). Created by step 2 of limiter-store.ts MIGRATIONS.
 */

export const ADMISSION_MIGRATION: readonly string[] = [
  `CREATE TABLE limiter_tasks (
     task_id TEXT PRIMARY KEY,
     state TEXT NOT NULL,
     priority INTEGER NOT NULL,
     submitted_at_ms INTEGER NOT NULL,
     order_ms INTEGER NOT NULL,
     lease_expires_at_ms INTEGER,
     lease_expiries INTEGER NOT NULL DEFAULT 0,
     message TEXT NOT NULL
   )`,
  "CREATE INDEX limiter_tasks_pending_order ON limiter_tasks (state, order_ms, task_id)",
  "CREATE INDEX limiter_tasks_lease_expiry ON limiter_tasks (state, lease_expires_at_ms)",
  "CREATE TABLE limiter_admission (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
];

export type SlotState = "pending" | "leased";

export interface AdmissionRow {
  taskId: string;
  state: SlotState;
  priority: number;
  submittedAtMs: number;
  orderMs: number;
  leaseExpiresAtMs: number | null;
  leaseExpiries: number;
  message: string;
}

type Row = {
  task_id: string;
  state: SlotState;
  priority: number;
  submitted_at_ms: number;
  order_ms: number;
  lease_expires_at_ms: number | null;
  lease_expiries: number;
  message: string;
};

const COLUMNS = "task_id, state, priority, submitted_at_ms, order_ms, lease_expires_at_ms, lease_expiries, message";

function fromRow(row: Row): AdmissionRow {
  return {
    taskId: row.task_id,
    state: row.state,
    priority: row.priority,
    submittedAtMs: row.submitted_at_ms,
    orderMs: row.order_ms,
    leaseExpiresAtMs: row.lease_expires_at_ms,
    leaseExpiries: row.lease_expiries,
    message: row.message,
  };
}

export class AdmissionStore {
  readonly #storage: LimiterStorage;
  /**
   * Rows per state, kept in step with every write: counting through the index
   * on each submit would cost O(pending) per call. Null until first needed,
   * and again after a transaction rolled back (so `atomically` must be the
   * outermost transaction, as it is in the WorkspaceLimiter).
   */
  #counts: Record<SlotState, number> | null = null;
  /** The caps as stored (same lifetime rules as the counts). */
  readonly #settings = new Map<string, number | null>();

  constructor(storage: LimiterStorage) {
    this.#storage = storage;
  }

  atomically<T>(write: () => T): T {
    try {
      return this.#storage.transactionSync(write);
    } catch (error) {
      this.#counts = null;
      this.#settings.clear();
      throw error;
    }
  }

  get(taskId: string): AdmissionRow | null {
    const row = this.#storage.sql
      .exec<Row>(`SELECT ${COLUMNS} FROM limiter_tasks WHERE task_id = ?`, taskId)
      .toArray()[0];
    return row ? fromRow(row) : null;
  }

  count(state: SlotState): number {
    if (!this.#counts) {
      this.#counts = { pending: 0, leased: 0 };
      const rows = this.#storage.sql.exec<{ state: SlotState; n: number }>(
        "SELECT state, count(*) AS n FROM limiter_tasks GROUP BY state",
      );
      for (const row of rows) this.#counts[row.state] = row.n;
    }
    return this.#counts[state];
  }

  #counted(state: SlotState, change: number): void {
    if (this.#counts) this.#counts[state] += change;
  }

  insert(row: AdmissionRow): void {
    this.#storage.sql.exec(
      `INSERT INTO limiter_tasks (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      row.taskId,
      row.state,
      row.priority,
      row.submittedAtMs,
      row.orderMs,
      row.leaseExpiresAtMs,
      row.leaseExpiries,
      row.message,
    );
    this.#counted(row.state, 1);
  }

  /** The first `limit` pending tasks: lowest effective order (priority-adjusted age) first. */
  nextPending(limit: number): AdmissionRow[] {
    return this.#storage.sql
      .exec<Row>(
        `SELECT ${COLUMNS} FROM limiter_tasks WHERE state = 'pending' ORDER BY order_ms, task_id LIMIT ?`,
        limit,
      )
      .toArray()
      .map(fromRow);
  }

  /** A lapsed lease sent again: held until `expiresAtMs`, with its lapses counted. */
  redispatch(taskId: string, expiresAtMs: number, expiries: number): void {
    this.#storage.sql.exec(
      "UPDATE limiter_tasks SET lease_expires_at_ms = ?, lease_expiries = ? WHERE task_id = ? AND state = 'leased'",
      expiresAtMs,
      expiries,
      taskId,
    );
  }

  /**
   * The set-based forms below take the task ids as one JSON parameter
   * (SQLite's json_each): a queue batch finishes or renews a hundred tasks at
   * once, and one statement each beat a hundred.
   */

  /** Leases the slots of these pending tasks until `expiresAtMs`. */
  leasePending(taskIds: readonly string[], expiresAtMs: number): void {
    if (taskIds.length === 0) return;
    // Counted from RETURNING: rowsWritten also counts index entries.
    const leased = this.#storage.sql
      .exec(
        `UPDATE limiter_tasks SET state = 'leased', lease_expires_at_ms = ?, lease_expiries = 0
         WHERE task_id IN (SELECT value FROM json_each(?)) AND state = 'pending' RETURNING task_id`,
        expiresAtMs,
        JSON.stringify(taskIds),
      )
      .toArray().length;
    this.#counted("pending", -leased);
    this.#counted("leased", leased);
  }

  /** Extends the held slots among these tasks (resetting their expiry counts); answers the ids renewed. */
  renewLeases(taskIds: readonly string[], expiresAtMs: number): Set<string> {
    if (taskIds.length === 0) return new Set();
    const rows = this.#storage.sql
      .exec<{ task_id: string }>(
        `UPDATE limiter_tasks SET lease_expires_at_ms = ?, lease_expiries = 0
         WHERE task_id IN (SELECT value FROM json_each(?)) AND state = 'leased' RETURNING task_id`,
        expiresAtMs,
        JSON.stringify(taskIds),
      )
      .toArray();
    return new Set(rows.map((row) => row.task_id));
  }

  /** Removes these tasks' rows; answers how many there were. */
  deleteMany(taskIds: readonly string[]): number {
    if (taskIds.length === 0) return 0;
    const removed = this.#storage.sql
      .exec<{ state: SlotState }>(
        "DELETE FROM limiter_tasks WHERE task_id IN (SELECT value FROM json_each(?)) RETURNING state",
        JSON.stringify(taskIds),
      )
      .toArray();
    for (const row of removed) this.#counted(row.state, -1);
    return removed.length;
  }

  expiredLeases(nowMs: number): AdmissionRow[] {
    return this.#storage.sql
      .exec<Row>(
        `SELECT ${COLUMNS} FROM limiter_tasks WHERE state = 'leased' AND lease_expires_at_ms <= ? ORDER BY lease_expires_at_ms`,
        nowMs,
      )
      .toArray()
      .map(fromRow);
  }

  earliestLeaseExpiry(): number | null {
    return (
      this.#storage.sql
        .exec<{ at: number | null }>("SELECT min(lease_expires_at_ms) AS at FROM limiter_tasks WHERE state = 'leased'")
        .one().at ?? null
    );
  }

  setting(key: string): number | null {
    if (!this.#settings.has(key)) {
      const row = this.#storage.sql
        .exec<{ value: number }>("SELECT value FROM limiter_admission WHERE key = ?", key)
        .toArray()[0];
      this.#settings.set(key, row?.value ?? null);
    }
    return this.#settings.get(key) ?? null;
  }

  /** Every submit carries the caps; only a change is written. */
  saveSetting(key: string, value: number): void {
    if (this.setting(key) === value) return;
    this.#storage.sql.exec(
      "INSERT INTO limiter_admission (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      key,
      value,
    );
    this.#settings.set(key, value);
  }
}
