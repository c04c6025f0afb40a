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

/**
 * A breaker that has recorded nothing for this long says nothing any more (its
 * window is a minute, its open time half a minute): its row is dropped, and a
 * later call starts it afresh.
 */
export const FORGET_IDLE_BREAKER_MS = 7 * 86_400_000;

/**
 * Models one provider's book keeps. Any caller can name a model (a simulated model's settings make each
 * name a breaker of its own), so past this the breakers idle longest are dropped, as after a week.
 */
export const MAX_BREAKER_MODELS = 10_000;
/** Read-through copies of rows kept in memory, at most. */
const MAX_CACHED_STATES = 1_000;
export const BOUND_CHECK_EVERY_WRITES = 500;

export interface BreakerSnapshot {
  model: string;
  view: BreakerView;
  /** When it last recorded an outcome or a trial. */
  lastRecordedAtMs: number;
}

export class BreakerBook {
  readonly #sql: SqlStorage;
  readonly #cache = new Map<string, BreakerState>();
  #writesSinceBound = 0;

  readonly #maxModels: number;

  constructor(storage: BreakerStorage, options: { maxModels?: number } = {}) {
    this.#sql = storage.sql;
    this.#maxModels = options.maxModels ?? MAX_BREAKER_MODELS;
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
    leaseMs?: number,
  ): { granted: boolean; state: BreakerState } {
    const current = this.#read(model);
    const outcome = acquireTrial(current, nowMs, policy, leaseMs);
    if (outcome.state !== current) this.#write(model, outcome.state, nowMs);
    return outcome;
  }

  /** The breakers of these models (all, without a list), in model order. */
  snapshot(nowMs: number, policy: BreakerPolicy = DEFAULT_BREAKER_POLICY, models?: string[]): BreakerSnapshot[] {
    const forgotten = this.#sql.exec(
      "DELETE FROM breaker_models WHERE updated_at_ms < ?",
      nowMs - FORGET_IDLE_BREAKER_MS,
    ).rowsWritten;
    if (forgotten > 0) this.#cache.clear();
    type Row = { model: string; state: string; updated_at_ms: number };
    const rows = (
      models
        ? this.#sql.exec<Row>(
            "SELECT model, state, updated_at_ms FROM breaker_models WHERE model IN (SELECT value FROM json_each(?)) ORDER BY model",
            JSON.stringify(models),
          )
        : this.#sql.exec<Row>("SELECT model, state, updated_at_ms FROM breaker_models ORDER BY model")
    ).toArray();
    return rows.map((row) => ({
      model: row.model,
      view: viewOf(JSON.parse(row.state) as BreakerState, nowMs, policy),
      lastRecordedAtMs: row.updated_at_ms,
    }));
  }

  #read(model: string): BreakerState {
    const cached = this.#cache.get(model);
    if (cached) return cached;
    const row = this.#sql
      .exec<{ state: string }>("SELECT state FROM breaker_models WHERE model = ?", model)
      .toArray()[0];
    const state = row ? (JSON.parse(row.state) as BreakerState) : CLOSED;
    this.#remember(model, state);
    return state;
  }

  #remember(model: string, state: BreakerState): void {
    if (this.#cache.size >= MAX_CACHED_STATES && !this.#cache.has(model)) this.#cache.clear();
    this.#cache.set(model, state);
  }

  #write(model: string, state: BreakerState, nowMs: number): void {
    this.#sql.exec(
      `INSERT INTO breaker_models (model, state, updated_at_ms) VALUES (?, ?, ?)
       ON CONFLICT (model) DO UPDATE SET state = excluded.state, updated_at_ms = excluded.updated_at_ms`,
      model,
      JSON.stringify(state),
      nowMs,
    );
    this.#remember(model, state);
    // Now and then, not per write: the bound is a ceiling on growth, not an exact count.
    if (++this.#writesSinceBound >= BOUND_CHECK_EVERY_WRITES) {
      this.#writesSinceBound = 0;
      const dropped = this.#sql.exec(
        "DELETE FROM breaker_models WHERE model NOT IN (SELECT model FROM breaker_models ORDER BY updated_at_ms DESC LIMIT ?)",
        this.#maxModels,
      ).rowsWritten;
      if (dropped > 0) this.#cache.clear();
    }
  }
}
