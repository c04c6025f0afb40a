import { jsonRowsSql } from "../db/json-rows.ts";
import type { LimiterStorage } from "./limiter-store.ts";

/**
 * SQLite access for token and cost budgets inside the WorkspaceLimiter:
 * counters per period (`day:YYYY-MM-DD`, `month:YYYY-MM`), one row per charge
 * key (so a retried call is charged once), and the thresholds already
 * reported per period. Created by the budgets step of limiter-store.ts MIGRATIONS.
 */

export const BUDGET_MIGRATION: readonly string[] = [
  `CREATE TABLE limiter_budget_periods (
     period TEXT PRIMARY KEY,
     tokens INTEGER NOT NULL,
     cost_usd REAL NOT NULL,
     reserved_tokens INTEGER NOT NULL,
     reserved_cost_usd REAL NOT NULL,
     expires_at_ms INTEGER NOT NULL
   )`,
  `CREATE TABLE limiter_budget_charges (
     charge_key TEXT PRIMARY KEY,
     day TEXT NOT NULL,
     month TEXT NOT NULL,
     tokens INTEGER NOT NULL,
     cost_usd REAL NOT NULL,
     settled INTEGER NOT NULL,
     expires_at_ms INTEGER NOT NULL
   )`,
  "CREATE INDEX limiter_budget_charges_expires ON limiter_budget_charges (expires_at_ms)",
  `CREATE TABLE limiter_budget_alerts (
     period TEXT NOT NULL,
     metric TEXT NOT NULL,
     threshold INTEGER NOT NULL,
     reached_at_ms INTEGER NOT NULL,
     expires_at_ms INTEGER NOT NULL,
     PRIMARY KEY (period, metric, threshold)
   )`,
];

/**
 * A reservation holds budget only until `reserved_until_ms`: a call whose
 * request was cancelled (its client went away) or whose isolate died never
 * settles, and its estimate would count against the budget until the period
 * ends. Reservations made before this step are released at the first sweep;
 * a call still running settles its actual amounts all the same.
 */
export const RESERVATION_EXPIRY_MIGRATION: readonly string[] = [
  "ALTER TABLE limiter_budget_charges ADD COLUMN reserved_until_ms INTEGER",
  "UPDATE limiter_budget_charges SET reserved_until_ms = 0 WHERE settled = 0",
  "CREATE INDEX limiter_budget_charges_reserved_until ON limiter_budget_charges (reserved_until_ms) WHERE settled = 0",
];

/**
 * A threshold remembers what reported it (a lease batch's key) and the
 * crossing as reported: a batch sent again because its answer was lost gets
 * the same crossings back, the answer it missed. (Its events do not depend on
 * that answer since step 7: the limiter queues them in its own outbox.)
 */
export const ALERT_REPORTER_MIGRATION: readonly string[] = [
  "ALTER TABLE limiter_budget_alerts ADD COLUMN reported_by TEXT",
  "ALTER TABLE limiter_budget_alerts ADD COLUMN crossing TEXT",
  "CREATE INDEX limiter_budget_alerts_reported_by ON limiter_budget_alerts (reported_by) WHERE reported_by IS NOT NULL",
];

export interface PeriodCounters {
  tokens: number;
  costUsd: number;
  reservedTokens: number;
  reservedCostUsd: number;
}

export interface ChargeRow {
  day: string;
  month: string;
  tokens: number;
  costUsd: number;
  settled: boolean;
}

/** A reservation past its time, with the amounts it still holds. */
export interface AbandonedReservation {
  day: string;
  month: string;
  tokens: number;
  costUsd: number;
}

const ZERO: PeriodCounters = { tokens: 0, costUsd: 0, reservedTokens: 0, reservedCostUsd: 0 };

export class BudgetStore {
  readonly #sql: SqlStorage;

  constructor(storage: LimiterStorage) {
    this.#sql = storage.sql;
  }

  period(period: string): PeriodCounters {
    const row = this.#sql
      .exec<{ tokens: number; cost_usd: number; reserved_tokens: number; reserved_cost_usd: number }>(
        "SELECT tokens, cost_usd, reserved_tokens, reserved_cost_usd FROM limiter_budget_periods WHERE period = ?",
        period,
      )
      .toArray()[0];
    return row
      ? {
          tokens: row.tokens,
          costUsd: row.cost_usd,
          reservedTokens: row.reserved_tokens,
          reservedCostUsd: row.reserved_cost_usd,
        }
      : ZERO;
  }

  writePeriod(period: string, counters: PeriodCounters, expiresAtMs: number): void {
    this.#sql.exec(
      `INSERT INTO limiter_budget_periods (period, tokens, cost_usd, reserved_tokens, reserved_cost_usd, expires_at_ms)
       VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (period) DO UPDATE SET tokens = excluded.tokens, cost_usd = excluded.cost_usd,
         reserved_tokens = excluded.reserved_tokens, reserved_cost_usd = excluded.reserved_cost_usd`,
      period,
      counters.tokens,
      counters.costUsd,
      counters.reservedTokens,
      counters.reservedCostUsd,
      expiresAtMs,
    );
  }

  charge(chargeKey: string): ChargeRow | null {
    const row = this.#sql
      .exec<{ day: string; month: string; tokens: number; cost_usd: number; settled: number }>(
        "SELECT day, month, tokens, cost_usd, settled FROM limiter_budget_charges WHERE charge_key = ?",
        chargeKey,
      )
      .toArray()[0];
    return row
      ? { day: row.day, month: row.month, tokens: row.tokens, costUsd: row.cost_usd, settled: row.settled === 1 }
      : null;
  }

  /**
   * Writes a charge, replacing its amounts if the key exists (a reservation
   * being settled). An unsettled charge holds its amounts until `reservedUntilMs`.
   */
  writeCharge(chargeKey: string, charge: ChargeRow, expiresAtMs: number, reservedUntilMs: number | null = null): void {
    this.#sql.exec(
      `INSERT INTO limiter_budget_charges (charge_key, day, month, tokens, cost_usd, settled, expires_at_ms, reserved_until_ms)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (charge_key) DO UPDATE SET tokens = excluded.tokens, cost_usd = excluded.cost_usd,
         settled = excluded.settled, reserved_until_ms = excluded.reserved_until_ms`,
      chargeKey,
      charge.day,
      charge.month,
      charge.tokens,
      charge.costUsd,
      charge.settled ? 1 : 0,
      expiresAtMs,
      reservedUntilMs,
    );
  }

  /** Sets what an unsettled charge (a lease) still holds; `settled` ends it. */
  holdCharge(chargeKey: string, tokens: number, costUsd: number, settled: boolean): void {
    this.#sql.exec(
      "UPDATE limiter_budget_charges SET tokens = ?, cost_usd = ?, settled = ? WHERE charge_key = ?",
      tokens,
      costUsd,
      settled ? 1 : 0,
      chargeKey,
    );
  }

  /**
   * A lease that lends no more keeps holding what its calls in flight took from it, until `reservedUntilMs`
   * like a call's reservation; its row is kept until `expiresAtMs`, past that.
   */
  keepHold(
    chargeKey: string,
    held: { tokens: number; costUsd: number },
    reservedUntilMs: number,
    expiresAtMs: number,
  ): void {
    this.#sql.exec(
      `UPDATE limiter_budget_charges SET tokens = ?, cost_usd = ?, reserved_until_ms = ?, expires_at_ms = max(expires_at_ms, ?)
       WHERE charge_key = ? AND settled = 0`,
      held.tokens,
      held.costUsd,
      reservedUntilMs,
      expiresAtMs,
      chargeKey,
    );
  }

  /**
   * Empties the reservations past their time and answers what they held. The
   * charge rows stay, unsettled and holding nothing: a call that does finish
   * late is charged its actual amounts and releases nothing twice.
   */
  releaseAbandoned(nowMs: number): AbandonedReservation[] {
    const rows = this.#sql
      .exec<{ day: string; month: string; tokens: number; cost_usd: number }>(
        `SELECT day, month, tokens, cost_usd FROM limiter_budget_charges
         WHERE settled = 0 AND reserved_until_ms <= ?`,
        nowMs,
      )
      .toArray();
    if (rows.length === 0) return [];
    this.#sql.exec(
      `UPDATE limiter_budget_charges SET tokens = 0, cost_usd = 0, reserved_until_ms = NULL
       WHERE settled = 0 AND reserved_until_ms <= ?`,
      nowMs,
    );
    return rows.map((row) => ({ day: row.day, month: row.month, tokens: row.tokens, costUsd: row.cost_usd }));
  }

  /**
   * Records many settled charges of one day and month at once (their keys and
   * figures as one JSON parameter, src/db/json-rows.ts); answers the keys not
   * seen before. A key repeated in the call is recorded once.
   */
  insertSettledCharges(
    charges: readonly { chargeKey: string; tokens: number; costUsd: number }[],
    periods: { day: string; month: string },
    expiresAtMs: number,
  ): Set<string> {
    if (charges.length === 0) return new Set();
    const rows = this.#sql
      .exec<{ charge_key: string }>(
        `INSERT INTO limiter_budget_charges (charge_key, day, month, tokens, cost_usd, settled, expires_at_ms)
         SELECT c.charge_key, ?, ?, c.tokens, c.cost_usd, 1, ? FROM ${jsonRowsSql(["charge_key", "tokens", "cost_usd"])} AS c
         WHERE true ON CONFLICT (charge_key) DO NOTHING RETURNING charge_key`,
        periods.day,
        periods.month,
        expiresAtMs,
        JSON.stringify(charges.map((charge) => [charge.chargeKey, charge.tokens, charge.costUsd])),
      )
      .toArray();
    return new Set(rows.map((row) => row.charge_key));
  }

  /**
   * Records a threshold as reported (by `reportedBy`, with the crossing as
   * reported); false when it already was this period.
   */
  markAlert(
    alert: { period: string; metric: string; threshold: number; reportedBy: string | null; crossing: unknown },
    nowMs: number,
    expiresAtMs: number,
  ): boolean {
    const cursor = this.#sql.exec(
      `INSERT INTO limiter_budget_alerts (period, metric, threshold, reached_at_ms, expires_at_ms, reported_by, crossing)
       VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
      alert.period,
      alert.metric,
      alert.threshold,
      nowMs,
      expiresAtMs,
      alert.reportedBy,
      JSON.stringify(alert.crossing),
    );
    return cursor.rowsWritten > 0;
  }

  /** Arms again the thresholds of a period and metric above `percentage`: they may be reported once more. */
  forgetAlertsAbove(period: string, metric: string, percentage: number): void {
    this.#sql.exec(
      "DELETE FROM limiter_budget_alerts WHERE period = ? AND metric = ? AND threshold > ?",
      period,
      metric,
      percentage,
    );
  }

  /** The crossings `reportedBy` reported, as it reported them, in that order. */
  crossingsReportedBy<T>(reportedBy: string): T[] {
    return this.#sql
      .exec<{ crossing: string }>(
        "SELECT crossing FROM limiter_budget_alerts WHERE reported_by = ? AND crossing IS NOT NULL ORDER BY rowid",
        reportedBy,
      )
      .toArray()
      .map((row) => JSON.parse(row.crossing) as T);
  }

  /** The thresholds this period has reported, in the order they were reached. */
  alertsOf(period: string): { metric: string; threshold: number; reachedAtMs: number }[] {
    return this.#sql
      .exec<{ metric: string; threshold: number; reached_at_ms: number }>(
        "SELECT metric, threshold, reached_at_ms FROM limiter_budget_alerts WHERE period = ? ORDER BY reached_at_ms, metric, threshold",
        period,
      )
      .toArray()
      .map((row) => ({ metric: row.metric, threshold: row.threshold, reachedAtMs: row.reached_at_ms }));
  }

  prune(nowMs: number): void {
    this.#sql.exec("DELETE FROM limiter_budget_periods WHERE expires_at_ms <= ?", nowMs);
    this.#sql.exec("DELETE FROM limiter_budget_charges WHERE expires_at_ms <= ?", nowMs);
    this.#sql.exec("DELETE FROM limiter_budget_alerts WHERE expires_at_ms <= ?", nowMs);
  }
}
