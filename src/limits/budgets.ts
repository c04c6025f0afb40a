import type { BudgetEventContext } from "./budget-events.ts";
import {
  BUDGET_THRESHOLDS_PERCENT,
  headroom,
  percentOf,
  periodEndMs,
  periodKeys,
  RULES,
  refusalOf,
  roomShort,
  round,
  used,
} from "./budget-rules.ts";
import { BudgetStore, type ChargeRow, type PeriodCounters } from "./budget-store.ts";
import type {
  BudgetAmountsInput,
  BudgetLease,
  BudgetLimits,
  LeasedSettleInput,
  LeaseRequest,
  OnCrossings,
  PeriodStatus,
  ReserveInput,
  ReserveResult,
  SettleInput,
  SettleResult,
  ThresholdCrossing,
  UnbudgetedCharge,
} from "./budget-types.ts";
import type { LimiterStorage } from "./limiter-store.ts";

/**
 * A workspace's token and cost budgets, per UTC day and month, held in the
 * WorkspaceLimiter. A call reserves the most it may spend first (refused when a budget
 * has nothing left) and settles the provider's actual figures after; the
 * charge key makes both idempotent, so a retried consumer is charged once.
 * Crossing 50, 80 or 100% of a budget is reported once per period: to the
 * caller, and (given the call's event context) to `onCrossings` inside the
 * same transaction, where the WorkspaceLimiter queues the events.
 */

const DAY_MS = 86_400_000;
/** Charge keys are remembered this long: longer than any queue retry or replay of a task. */
const CHARGE_KEEP_MS = 40 * DAY_MS;
/** Charge keys of workspaces without budgets: they only guard against a settlement sent twice. */
const UNBUDGETED_KEEP_MS = 2 * DAY_MS;
/**
 * An unsettled reservation is released after this long: its call was
 * abandoned (the runtime cancelled the request when its client went away, or
 * the isolate died), since no call runs longer. A Worker's queue consumer
 * gets 15 minutes of wall time and a call's default deadline is 3 minutes.
 */
const RESERVATION_TTL_MS = 30 * 60_000;
/**
 * Leases. One is granted only while, after the call's own reservation, the
 * budgets have room for LEASE_MIN_ROOM_CALLS more calls like it; it covers
 * as many of them as the isolate asks for (its recent pace; LEASE_CALLS when
 * it does not say, never more than MAX_LEASE_CALLS) and at most a quarter of
 * that room, so isolates leasing at once cannot take it all. Near a limit no
 * lease is granted: every call then reserves by itself, and refusals stay exact.
 */
const LEASE_CALLS = 100;
const MAX_LEASE_CALLS = 10_000;
const LEASE_MIN_ROOM_CALLS = 20;
const LEASE_MAX_SHARE_OF_ROOM = 0.25;
/** An isolate spends a lease for seconds (src/llm/budget-leases.ts); past this it is presumed gone. */
export const LEASE_HOLD_MS = 60_000;
/**
 * A busy isolate takes a lease every few seconds, so its rows go soon: the
 * sweep that deletes one has released it first (LEASE_HOLD_MS is shorter),
 * and a charge that comes later still counts, only without drawing on it.
 */
const LEASE_ROW_KEEP_MS = 10 * 60_000;
/** A batch's key outlives its retries (seconds: WRITE_RETRY_DELAYS_MS) by far. */
const BATCH_KEY_KEEP_MS = 10 * 60_000;
const PRUNE_INTERVAL_MS = 60_000;

export class BudgetBook {
  readonly #store: BudgetStore;
  readonly #atomically: <T>(write: () => T) => T;
  readonly #onCrossings: OnCrossings;
  #lastPruneMs = Number.NEGATIVE_INFINITY;

  constructor(storage: LimiterStorage, options: { onCrossings?: OnCrossings } = {}) {
    this.#store = new BudgetStore(storage);
    this.#atomically = (write) => storage.transactionSync(write);
    this.#onCrossings = options.onCrossings ?? (() => {});
  }

  /**
   * With `leaseKey`, also lends the isolate budget for its next calls when there is ample room (see
   * LEASE_CALLS). A call the room left cannot hold whole is near a limit: it reserves all the room there is,
   * or what it spends with its answer cut (`ifCut`) where the room holds that, so that neither it nor a call
   * alongside can spend past the limit, and is told so (`nearLimit`).
   */
  reserve(input: ReserveInput & { nowMs: number }): ReserveResult {
    const { nowMs } = input;
    this.#maybePrune(nowMs);
    return this.#atomically(() => {
      const existing = this.#store.charge(input.chargeKey);
      if (existing) return { ok: true, lease: null } as const;
      const keys = periodKeys(nowMs);
      const counters = { daily: this.#store.period(keys.day), monthly: this.#store.period(keys.month) };
      const refusal = refusalOf(input.limits, counters, nowMs);
      if (refusal) {
        // A budget spent by charges no threshold check saw (calls counted without budgets, in flight when the
        // first budget was set or from an isolate that had not read it yet) is told here: no call it refuses
        // will settle to cross its thresholds, which were otherwise never reported.
        if (!refusal.held && input.events) this.#reportUntold(keys, input.limits, input.events, nowMs);
        return refusal;
      }
      const nearLimit = roomShort(input.limits, counters, input);
      const amounts = nearLimit
        ? {
            tokens: Math.min(input.ifCut?.tokens ?? input.tokens, nearLimit.tokens ?? Number.POSITIVE_INFINITY),
            costUsd: Math.min(input.ifCut?.costUsd ?? input.costUsd, nearLimit.costUsd ?? Number.POSITIVE_INFINITY),
          }
        : { tokens: input.tokens, costUsd: input.costUsd };
      this.#store.writeCharge(
        input.chargeKey,
        { day: keys.day, month: keys.month, ...amounts, settled: false },
        nowMs + CHARGE_KEEP_MS,
        nowMs + RESERVATION_TTL_MS,
      );
      const periods = new PeriodCache(this.#store);
      const reserved = { reservedTokens: amounts.tokens, reservedCostUsd: amounts.costUsd };
      periods.adjust(keys.day, periodEndMs("daily", nowMs) + 2 * DAY_MS, reserved);
      periods.adjust(keys.month, periodEndMs("monthly", nowMs) + 2 * DAY_MS, reserved);
      const lease =
        input.leaseKey && !nearLimit
          ? this.#grantLease({ ...input, leaseKey: input.leaseKey }, keys, periods, nowMs)
          : null;
      periods.write();
      return nearLimit ? ({ ok: true, lease, nearLimit } as const) : ({ ok: true, lease } as const);
    });
  }

  /**
   * A lease alone, sized for calls like `tokens` and `costUsd`: an isolate
   * renews its lease in the background before the one it spends runs out,
   * so its calls need not wait for a reservation at all.
   */
  lend(input: Omit<BudgetAmountsInput, "chargeKey"> & LeaseRequest & { nowMs: number }): BudgetLease | null {
    const { nowMs } = input;
    this.#maybePrune(nowMs);
    return this.#atomically(() => {
      const keys = periodKeys(nowMs);
      const periods = new PeriodCache(this.#store);
      const lease = this.#grantLease(input, keys, periods, nowMs);
      periods.write();
      return lease;
    });
  }

  #grantLease(
    call: Omit<BudgetAmountsInput, "chargeKey"> & LeaseRequest,
    keys: { day: string; month: string },
    periods: PeriodCache,
    nowMs: number,
  ): BudgetLease | null {
    const { leaseKey } = call;
    const room = headroom(call.limits, { daily: periods.get(keys.day), monthly: periods.get(keys.month) });
    const calls = Math.min(MAX_LEASE_CALLS, Math.max(1, Math.floor(call.leaseCalls ?? LEASE_CALLS)));
    const size = (left: number | null, perCall: number) => {
      if (left === null) return null;
      if (perCall * LEASE_MIN_ROOM_CALLS > left) return undefined;
      return Math.min(perCall * calls, left * LEASE_MAX_SHARE_OF_ROOM);
    };
    const tokens = size(room.tokens, call.tokens);
    const costUsd = size(room.costUsd, call.costUsd);
    if (tokens === undefined || costUsd === undefined || (tokens === null && costUsd === null)) return null;
    const lease = {
      key: leaseKey,
      tokens: tokens === null ? null : Math.floor(tokens),
      costUsd: costUsd === null ? null : round(costUsd),
    };
    const held = { tokens: lease.tokens ?? 0, costUsd: lease.costUsd ?? 0 };
    this.#store.writeCharge(
      leaseKey,
      { ...keys, ...held, settled: false },
      nowMs + LEASE_ROW_KEEP_MS,
      nowMs + LEASE_HOLD_MS,
    );
    const reserved = { reservedTokens: held.tokens, reservedCostUsd: held.costUsd };
    periods.adjust(keys.day, periodEndMs("daily", nowMs) + 2 * DAY_MS, reserved);
    periods.adjust(keys.month, periodEndMs("monthly", nowMs) + 2 * DAY_MS, reserved);
    return lease;
  }

  /**
   * Charges calls an isolate made against its lease, in one transaction: each
   * key once (a key that had reserved by itself is settled as such), the
   * lease drawn down by what they cost, and with `close` what it still holds
   * given back. Reports thresholds newly reached.
   */
  settleLeased(input: LeasedSettleInput & { nowMs: number }): { crossings: ThresholdCrossing[] } {
    const { nowMs } = input;
    const keys = periodKeys(nowMs);
    return this.#atomically(() => {
      if (input.batchKey !== undefined && !this.#isNewBatch(input.batchKey, keys, nowMs)) {
        // Sent again because its answer was lost: it gets the same answer (its events were queued the first time).
        return { crossings: this.#store.crossingsReportedBy<ThresholdCrossing>(input.batchKey) };
      }
      const periods = new PeriodCache(this.#store);
      const fresh = this.#store.insertSettledCharges(
        input.charges.filter((charge) => !charge.once),
        keys,
        nowMs + CHARGE_KEEP_MS,
      );
      const spent = { tokens: 0, costUsd: 0 };
      for (const charge of input.charges) {
        if (charge.once || fresh.delete(charge.chargeKey)) {
          spent.tokens += charge.tokens;
          spent.costUsd += charge.costUsd;
          continue;
        }
        // Seen before: charged already, or reserved by itself on an earlier attempt (settle that reservation).
        const existing = this.#store.charge(charge.chargeKey);
        if (existing && !existing.settled)
          this.#settleCharge({ ...charge, limits: input.limits }, existing, periods, nowMs);
      }
      periods.adjust(keys.day, periodEndMs("daily", nowMs) + 2 * DAY_MS, spent);
      periods.adjust(keys.month, periodEndMs("monthly", nowMs) + 2 * DAY_MS, spent);
      const lease = this.#store.charge(input.leaseKey);
      if (lease && !lease.settled) {
        let held = {
          tokens: lease.tokens - Math.min(lease.tokens, spent.tokens),
          costUsd: round(lease.costUsd - Math.min(lease.costUsd, round(spent.costUsd))),
        };
        const keep = input.close ? undefined : input.keep;
        if (input.close) held = { tokens: 0, costUsd: 0 };
        else if (keep)
          held = { tokens: Math.min(held.tokens, keep.tokens), costUsd: Math.min(held.costUsd, keep.costUsd) };
        const delta = {
          reservedTokens: -(lease.tokens - held.tokens),
          reservedCostUsd: -round(lease.costUsd - held.costUsd),
        };
        periods.adjust(lease.day, periodEndMs("daily", nowMs) + 2 * DAY_MS, delta);
        periods.adjust(lease.month, periodEndMs("monthly", nowMs) + 2 * DAY_MS, delta);
        if (keep) {
          const reservedUntilMs = nowMs + RESERVATION_TTL_MS;
          this.#store.keepHold(input.leaseKey, held, reservedUntilMs, reservedUntilMs + LEASE_ROW_KEEP_MS);
        } else this.#store.holdCharge(input.leaseKey, held.tokens, held.costUsd, input.close);
      }
      periods.write();
      // A batch with no call's charge (the lease's close, or what its calls in flight keep) reaches no threshold.
      // Its limits are the budgets the lease was lent under (writeLeaseBatch): judged against them after a PUT
      // raised them, it told a step of the old budget that the raise had armed again, and marked it reported, so
      // the new budget's own step was never told.
      const crossings =
        input.charges.length > 0 ? this.#crossings(keys, input.limits, nowMs, periods, input.batchKey ?? null) : [];
      this.#announce(crossings, input.events, nowMs);
      return { crossings };
    });
  }

  /** False when a batch under this key was counted before: its write landed but the isolate did not hear so, and tried again. */
  #isNewBatch(batchKey: string | undefined, keys: { day: string; month: string }, nowMs: number): boolean {
    if (batchKey === undefined) return true;
    const marker = { chargeKey: batchKey, tokens: 0, costUsd: 0 };
    return this.#store.insertSettledCharges([marker], keys, nowMs + BATCH_KEY_KEEP_MS).has(batchKey);
  }

  /** Charges the actual amounts (0 and 0 releases a reservation) and reports thresholds newly reached. */
  settle(input: SettleInput & { nowMs: number }): SettleResult {
    const { nowMs } = input;
    return this.#atomically(() => {
      const existing = this.#store.charge(input.chargeKey);
      if (existing?.settled) return { duplicate: true, crossings: [] };
      const periods = new PeriodCache(this.#store);
      const keys = this.#settleCharge(input, existing, periods, nowMs);
      periods.write();
      const crossings = this.#crossings(keys, input.limits, nowMs, periods);
      this.#announce(crossings, input.events, nowMs);
      return { duplicate: false, crossings };
    });
  }

  /**
   * The thresholds the period's use reaches under `limits` that no charge reported, reported now (see reserve):
   * at each task submission, which a spent budget refuses as it refuses a call.
   */
  reportReached(input: {
    limits: BudgetLimits | null;
    events: BudgetEventContext;
    nowMs: number;
  }): ThresholdCrossing[] {
    return this.#atomically(() => this.#reportUntold(periodKeys(input.nowMs), input.limits, input.events, input.nowMs));
  }

  /** Inside a transaction. Only with an envelope to tell them in: once marked, a threshold is never reported again. */
  #reportUntold(
    keys: { day: string; month: string },
    limits: BudgetLimits | null,
    events: BudgetEventContext,
    nowMs: number,
  ): ThresholdCrossing[] {
    const crossings = this.#crossings(keys, limits, nowMs, new PeriodCache(this.#store));
    this.#announce(crossings, events, nowMs);
    return crossings;
  }

  #announce(crossings: ThresholdCrossing[], context: BudgetEventContext | undefined, nowMs: number): void {
    if (crossings.length > 0 && context) this.#onCrossings(crossings, context, nowMs);
  }

  /**
   * One charge, settled: its reservation (if any) released in the periods it was made in, its actual amounts
   * counted in the periods it ends in. A call that spans midnight is then counted on the day its usage row is
   * dated (src/llm/usage.ts dates a row when the call is charged), so /usage and /budgets agree. Answers the
   * periods it was counted in.
   */
  #settleCharge(
    input: BudgetAmountsInput,
    existing: ChargeRow | null,
    periods: PeriodCache,
    nowMs: number,
  ): { day: string; month: string } {
    const keys = periodKeys(nowMs);
    const expiries = {
      day: periodEndMs("daily", nowMs) + 2 * DAY_MS,
      month: periodEndMs("monthly", nowMs) + 2 * DAY_MS,
    };
    const spent = { tokens: input.tokens, costUsd: input.costUsd };
    periods.adjust(keys.day, expiries.day, spent);
    periods.adjust(keys.month, expiries.month, spent);
    if (existing) {
      const released = { reservedTokens: -existing.tokens, reservedCostUsd: -existing.costUsd };
      periods.adjust(existing.day, expiries.day, released);
      periods.adjust(existing.month, expiries.month, released);
    }
    this.#store.writeCharge(
      input.chargeKey,
      { ...keys, tokens: input.tokens, costUsd: input.costUsd, settled: true },
      nowMs + CHARGE_KEEP_MS,
    );
    return keys;
  }

  /**
   * Counts calls of a workspace without budgets: nothing was reserved and no
   * threshold can be crossed, so each charge key costs one insert (which
   * skips a key counted before) and the period counters move once for the
   * whole batch. Those keys are kept for UNBUDGETED_KEEP_MS only: long enough
   * to catch a retried settlement, without a row per call for weeks. The
   * counts are there when budgets are set later.
   */
  countUnbudgeted(charges: UnbudgetedCharge[], nowMs: number, batchKey?: string): void {
    if (charges.length === 0) return;
    const keys = periodKeys(nowMs);
    this.#atomically(() => {
      if (!this.#isNewBatch(batchKey, keys, nowMs)) return;
      const total = { tokens: 0, costUsd: 0 };
      // A key settled once by construction cannot come back: keeping it would be a row written (and deleted) per call.
      const repeatable = charges.filter((charge) => !charge.once);
      const fresh = this.#store.insertSettledCharges(repeatable, keys, nowMs + UNBUDGETED_KEEP_MS);
      for (const charge of charges) {
        // delete: a key repeated in the call counts once, as it was recorded once.
        if (!charge.once && !fresh.delete(charge.chargeKey)) continue;
        total.tokens += charge.tokens;
        total.costUsd += charge.costUsd;
      }
      const periods = new PeriodCache(this.#store);
      periods.adjust(keys.day, periodEndMs("daily", nowMs) + 2 * DAY_MS, total);
      periods.adjust(keys.month, periodEndMs("monthly", nowMs) + 2 * DAY_MS, total);
      periods.write();
    });
  }

  /**
   * Budgets just set: the thresholds the period's use already reaches under
   * them are reported now (once per period, as for a charge), so lowering a
   * budget under what is spent tells it at once, not at a next charge that
   * its refusal would never let come. Those it no longer reaches are armed
   * again: a budget raised after its 100% alert alerts at 80 and 100% of the
   * new one. Answers the status after.
   */
  review(input: { limits: BudgetLimits | null; events: BudgetEventContext; nowMs: number }): {
    crossings: ThresholdCrossing[];
    status: { daily: PeriodStatus; monthly: PeriodStatus };
  } {
    const { nowMs } = input;
    const crossings = this.#atomically(() => {
      const keys = periodKeys(nowMs);
      const periods = new PeriodCache(this.#store);
      for (const rule of RULES) {
        const limit = input.limits?.[rule.field];
        const period = rule.period === "daily" ? keys.day : keys.month;
        // Without a budget (or with none to spend) no threshold holds.
        const percentage = limit ? percentOf(used(periods.get(period), rule.metric, false), limit) : 0;
        this.#store.forgetAlertsAbove(period, rule.metric, percentage);
      }
      const found = this.#crossings(keys, input.limits, nowMs, periods);
      this.#announce(found, input.events, nowMs);
      return found;
    });
    return { crossings, status: this.status(nowMs) };
  }

  status(nowMs: number): { daily: PeriodStatus; monthly: PeriodStatus } {
    this.#maybePrune(nowMs);
    const keys = periodKeys(nowMs);
    const view = (period: string, counters: PeriodCounters, endMs: number): PeriodStatus => ({
      period: period.slice(period.indexOf(":") + 1),
      tokens: counters.tokens,
      cost_usd: round(counters.costUsd),
      reserved_tokens: counters.reservedTokens,
      reserved_cost_usd: round(counters.reservedCostUsd),
      resets_at: new Date(endMs).toISOString(),
      thresholds_reached: this.#store.alertsOf(period).map((alert) => ({
        metric: alert.metric as "tokens" | "cost_usd",
        threshold_percent: alert.threshold,
        reached_at: new Date(alert.reachedAtMs).toISOString(),
      })),
    });
    return {
      daily: view(keys.day, this.#store.period(keys.day), periodEndMs("daily", nowMs)),
      monthly: view(keys.month, this.#store.period(keys.month), periodEndMs("monthly", nowMs)),
    };
  }

  /** Every threshold at or below the current use that this period has not reported yet (covers budgets lowered meanwhile). */
  #crossings(
    keys: { day: string; month: string },
    limits: BudgetLimits | null,
    nowMs: number,
    periods: PeriodCache,
    reportedBy: string | null = null,
  ): ThresholdCrossing[] {
    const out: ThresholdCrossing[] = [];
    if (!limits) return out;
    for (const rule of RULES) {
      const limit = limits[rule.field];
      if (limit === null || limit === undefined || limit <= 0) continue;
      const period = rule.period === "daily" ? keys.day : keys.month;
      const current = used(periods.get(period), rule.metric, false);
      const percentage = percentOf(current, limit);
      for (const threshold of BUDGET_THRESHOLDS_PERCENT) {
        if (percentage < threshold) break;
        const expiresAtMs = periodEndMs(rule.period, nowMs) + DAY_MS;
        const crossing: ThresholdCrossing = {
          period: rule.period,
          metric: rule.metric,
          thresholdPercent: threshold,
          limit,
          used: round(current),
          percentage: Math.round(percentage * 100) / 100,
        };
        const alert = { period, metric: rule.metric, threshold, reportedBy, crossing };
        if (this.#store.markAlert(alert, nowMs, expiresAtMs)) out.push(crossing);
      }
    }
    return out;
  }

  #maybePrune(nowMs: number): void {
    if (nowMs - this.#lastPruneMs < PRUNE_INTERVAL_MS) return;
    this.#lastPruneMs = nowMs;
    this.#atomically(() => {
      this.#releaseAbandoned(nowMs);
      this.#store.prune(nowMs);
    });
  }

  /** Gives back what abandoned reservations held (see RESERVATION_TTL_MS). */
  #releaseAbandoned(nowMs: number): void {
    const released = this.#store.releaseAbandoned(nowMs);
    if (released.length === 0) return;
    const periods = new PeriodCache(this.#store);
    for (const reservation of released) {
      const delta = { reservedTokens: -reservation.tokens, reservedCostUsd: -reservation.costUsd };
      periods.adjust(reservation.day, periodEndMs("daily", nowMs) + 2 * DAY_MS, delta);
      periods.adjust(reservation.month, periodEndMs("monthly", nowMs) + 2 * DAY_MS, delta);
    }
    periods.write();
  }
}

/** Period counters read once and written once per transaction, however many charges touch them. */
class PeriodCache {
  readonly #store: BudgetStore;
  readonly #counters = new Map<string, { counters: PeriodCounters; expiresAtMs: number }>();

  constructor(store: BudgetStore) {
    this.#store = store;
  }

  get(period: string): PeriodCounters {
    return this.#counters.get(period)?.counters ?? this.#store.period(period);
  }

  adjust(period: string, expiresAtMs: number, delta: Partial<PeriodCounters>): void {
    const current = this.get(period);
    this.#counters.set(period, {
      counters: {
        tokens: current.tokens + (delta.tokens ?? 0),
        costUsd: round(current.costUsd + (delta.costUsd ?? 0)),
        reservedTokens: Math.max(0, current.reservedTokens + (delta.reservedTokens ?? 0)),
        reservedCostUsd: Math.max(0, round(current.reservedCostUsd + (delta.reservedCostUsd ?? 0))),
      },
      expiresAtMs,
    });
  }

  write(): void {
    for (const [period, { counters, expiresAtMs }] of this.#counters)
      this.#store.writePeriod(period, counters, expiresAtMs);
  }
}
