import type { Outcome } from "./breaker-client.ts";
import {
  acquireTrial,
  type BreakerPolicy,
  type BreakerState,
  type BreakerView,
  CLOSED,
  DEFAULT_BREAKER_POLICY,
  recordOutcomes,
  viewOf,
} from "./breaker-core.ts";

/**
 * One provider's breakers, one row per model, in the ProviderBreaker Durable
 * Object's SQLite (tables namespaced `breaker_*`). Plain code over the
 * storage, driven directly by the tests; the object is a thin RPC shell.
 */

export type BreakerStorage = Pick<DurableObjectStorage, "sql">;

export class BreakerBook {
  readonly #sql: SqlStorage;
  readonly #cache = new Map<string, BreakerState>();

  constructor(storage: BreakerStorage) {
    this.#sql = storage.sql;
    this.#sql.exec(
      "CREATE TABLE IF NOT EXISTS breaker_models (model TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at_ms INTEGER NOT NULL)",
    );
  }

  sync(
    model: string,
    outcomes: Outcome[],
    nowMs: number,
    policy: BreakerPolicy = DEFAULT_BREAKER_POLICY,
  ): BreakerState {
    const current = this.#read(model);
    if (outcomes.length === 0) return current;
    // Isolate clocks may run ahead: an outcome is never later than the object's now.
    const sorted = outcomes.map((o) => ({ ...o, atMs: Math.min(o.atMs, nowMs) })).sort((a, b) => a.atMs - b.atMs);
    const next = recordOutcomes(current, sorted, nowMs, policy);
    this.#write(model, next, nowMs);
    return next;
  }

  tryTrial(
    model: string,
    nowMs: number,
    policy: BreakerPolicy = DEFAULT_BREAKER_POLICY,
  ): { granted: boolean; state: BreakerState } {
    const current = this.#read(model);
    const outcome = acquireTrial(current, nowMs, policy);
    if (outcome.state !== current) this.#write(model, outcome.state, nowMs);
    return outcome;
  }

  snapshot(nowMs: number, policy: BreakerPolicy = DEFAULT_BREAKER_POLICY): { model: string; view: BreakerView }[] {
    const rows = this.#sql
      .exec<{ model: string; state: string }>("SELECT model, state FROM breaker_models ORDER BY model")
      .toArray();
    return rows.map((row) => ({
      model: row.model,
      view: viewOf(JSON.parse(row.state) as BreakerState, nowMs, policy),
    }));
  }

  #read(model: string): BreakerState {
    const cached = this.#cache.get(model);
    if (cached) return cached;
    const row = this.#sql
      .exec<{ state: string }>("SELECT state FROM breaker_models WHERE model = ?", model)
      .toArray()[0];
    const state = row ? (JSON.parse(row.state) as BreakerState) : CLOSED;
    this.#cache.set(model, state);
    return state;
  }

  #write(model: string, state: BreakerState, nowMs: number): void {
    this.#sql.exec(
      `INSERT INTO breaker_models (model, state, updated_at_ms) VALUES (?, ?, ?)
       ON CONFLICT (model) DO UPDATE SET state = excluded.state, updated_at_ms = excluded.updated_at_ms`,
      model,
      JSON.stringify(state),
      nowMs,
    );
    this.#cache.set(model, state);
  }
}
