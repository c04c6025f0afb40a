import type { PeriodCounters } from "./budget-store.ts";
import type { BudgetLimits, BudgetRoom, ReserveResult } from "./budget-types.ts";

/**
 * The budgets' arithmetic, with no storage: UTC periods, the room a
 * workspace's limits leave, and why a call is refused.
 */

export const BUDGET_THRESHOLDS_PERCENT = [50, 80, 100] as const;
/**
 * A call refused because calls in flight hold the room left (see ReserveResult.held) is told to come back
 * after this: most calls settle within seconds, and a lease is given back within LEASE_HOLD_MS (budgets.ts).
 */
export const HELD_RETRY_AFTER_MS = 5_000;

export const RULES = [
  { period: "daily", metric: "tokens", field: "daily_tokens" },
  { period: "daily", metric: "cost_usd", field: "daily_cost_usd" },
  { period: "monthly", metric: "tokens", field: "monthly_tokens" },
  { period: "monthly", metric: "cost_usd", field: "monthly_cost_usd" },
] as const;

export function periodKeys(nowMs: number): { day: string; month: string } {
  const iso = new Date(nowMs).toISOString();
  return { day: `day:${iso.slice(0, 10)}`, month: `month:${iso.slice(0, 7)}` };
}

/** Epoch ms when the period that contains nowMs ends (UTC). */
export function periodEndMs(period: "daily" | "monthly", nowMs: number): number {
  const date = new Date(nowMs);
  return period === "daily"
    ? Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate() + 1)
    : Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + 1, 1);
}

export function used(counters: PeriodCounters, metric: "tokens" | "cost_usd", withReserved: boolean): number {
  if (metric === "tokens") return counters.tokens + (withReserved ? counters.reservedTokens : 0);
  // Each is stored rounded, but not their sum: 0.11359234 + 0.68640766 is 0.7999999999999999.
  return withReserved ? round(counters.costUsd + counters.reservedCostUsd) : counters.costUsd;
}

export const round = (value: number) => Math.round(value * 1e8) / 1e8;

/**
 * An amount leaves nothing of a limit: no room, as headroom counts room (to 1e-8). Not `amount >= limit`: a dollar
 * sum a hair under its limit left a room of 0 that refused nothing, and the call it let through was cut to a token
 * of answer and spent its prompt past the limit, where it should have been refused as held (or spent).
 */
export const reaches = (amount: number, limit: number) => round(limit - amount) <= 0;

/**
 * Use as a percentage of a limit, to a millionth of a percent: dollar amounts are binary fractions, so a use of
 * exactly 80% can divide to 79.99999999999999 (0.2724 of 0.3405), and its threshold would wait for another charge.
 */
export const percentOf = (usedAmount: number, limit: number) => Math.round((usedAmount / limit) * 100 * 1e6) / 1e6;

/** What the budgets have left, counting what is reserved. */
export function headroom(
  limits: BudgetLimits | null,
  counters: Record<"daily" | "monthly", PeriodCounters>,
): BudgetRoom {
  const left: BudgetRoom = { tokens: null, costUsd: null };
  const periods: NonNullable<BudgetRoom["periods"]> = {};
  const reserved: NonNullable<BudgetRoom["reserved"]> = {};
  for (const rule of RULES) {
    const limit = limits?.[rule.field];
    if (limit === null || limit === undefined) continue;
    const period = counters[rule.period];
    const remaining = Math.max(0, round(limit - used(period, rule.metric, true)));
    const kind = rule.metric === "tokens" ? "tokens" : "costUsd";
    const tightest = left[kind];
    if (tightest === null || remaining < tightest) {
      left[kind] = remaining;
      periods[kind] = rule.period;
      reserved[kind] = round(used(period, rule.metric, true) - used(period, rule.metric, false));
    }
  }
  return left.tokens === null && left.costUsd === null ? left : { ...left, periods, reserved };
}

/** The room left when it is less than the call asks for, of either kind, else undefined. */
export function roomShort(
  limits: BudgetLimits | null,
  counters: Record<"daily" | "monthly", PeriodCounters>,
  call: { tokens: number; costUsd: number },
): BudgetRoom | undefined {
  const room = headroom(limits, counters);
  const short =
    (room.tokens !== null && room.tokens < call.tokens) || (room.costUsd !== null && room.costUsd < call.costUsd);
  return short ? room : undefined;
}

/**
 * Why a call is refused, if it is: a budget its period has spent (until the period resets) before one whose
 * room left is only held by calls in flight and leases (until a retry may find it free again). Of budgets
 * spent in both periods, the one that resets last: the day's resets first, but a client told to come back
 * at midnight would meet the month's refusal then.
 */
export function refusalOf(
  limits: BudgetLimits | null,
  counters: Record<"daily" | "monthly", PeriodCounters>,
  nowMs: number,
): Extract<ReserveResult, { ok: false }> | undefined {
  let spentRefusal: Extract<ReserveResult, { ok: false }> | undefined;
  let heldRefusal: Extract<ReserveResult, { ok: false }> | undefined;
  for (const rule of RULES) {
    const limit = limits?.[rule.field];
    if (limit === null || limit === undefined) continue;
    const current = used(counters[rule.period], rule.metric, true);
    if (!reaches(current, limit)) continue;
    const refusal = { ok: false, period: rule.period, metric: rule.metric, limit, used: round(current) } as const;
    const spent = used(counters[rule.period], rule.metric, false);
    // Spent: what was spent is the reason, whatever calls in flight hold beside it.
    if (reaches(spent, limit)) {
      const untilResetMs = periodEndMs(rule.period, nowMs) - nowMs;
      // On the month's last day both end at midnight: the month's budget is named, as it resets then too.
      if (!spentRefusal || untilResetMs >= spentRefusal.retryAfterMs)
        spentRefusal = { ...refusal, used: round(spent), retryAfterMs: untilResetMs };
      continue;
    }
    heldRefusal ??= {
      ...refusal,
      held: { spent: round(spent), reserved: round(current - spent) },
      room: headroom(limits, counters),
      retryAfterMs: HELD_RETRY_AFTER_MS,
    };
  }
  return spentRefusal ?? heldRefusal;
}
