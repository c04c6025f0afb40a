import type { BudgetRoom } from "../limits/budget-types.ts";
import { hasAnyBudget } from "./attempt.ts";
import { type ChargeableCall, type UnfinishedAttempt, unfinishedChargeKey, unfinishedSpend } from "./charging.ts";
import { BudgetExhaustedError, heldFromAnotherAttempt, noRoomForAnotherAttempt } from "./errors.ts";
import type { BudgetGate } from "./router-deps.ts";
import { type RouteTarget, targetPrice } from "./routing.ts";
import { type CallContext, type ChatRequest, LlmError } from "./types.ts";

/**
 * A call's answer against the budget room it holds: cut to fit near a limit, and, after an attempt that ended
 * unfinished (timed out, or broke mid-answer: the provider bills it), the room for what that attempt spent, held
 * beside the call's reservation before the next attempt may spend that reservation whole again.
 */

/** What the router's call carries of its budgets. */
export interface BudgetedCall extends ChargeableCall {
  targets: RouteTarget[];
  /**
   * Near a budget's limit: the longest answer the room left allows, sent as the call's max_tokens. Cut again when
   * what an unfinished attempt spent must come out of the call's own reservation (see coverUnfinished).
   */
  answerCapTokens?: number;
  /** What the call's reservation holds, of each kind a budget limits (null: none does), which its attempts spend. */
  held: { tokens: number | null; costUsd: number | null };
}

/**
 * Near a limit, the longest answer the room reserved for the call allows, at
 * the dearest target's prices; at least a token, since the limiter admitted
 * the call (some room was left). A prompt larger than the room still goes
 * over it, and its charge crosses the limit: the 100% threshold is told, and
 * the next call is refused.
 */
export function answerThatFits(room: BudgetRoom, promptTokens: number, targets: RouteTarget[]): number {
  return Math.max(1, roomForAnswer(room, promptTokens, targets));
}

/** The longest answer the room holds beside the prompt, at the dearest target's prices: less than 1 when none. */
function roomForAnswer(room: BudgetRoom, promptTokens: number, targets: RouteTarget[]): number {
  let fit = room.tokens === null ? Number.POSITIVE_INFINITY : room.tokens - promptTokens;
  if (room.costUsd !== null) {
    for (const target of targets) {
      const price = targetPrice(target);
      if (price.outputPerMillionUsd <= 0) continue;
      const promptCostUsd = (promptTokens * price.inputPerMillionUsd) / 1_000_000;
      fit = Math.min(fit, ((room.costUsd - promptCostUsd) * 1_000_000) / price.outputPerMillionUsd);
    }
  }
  return Math.floor(fit);
}

/**
 * Before another attempt after an unfinished one: the budget room for what that attempt spent (the provider bills
 * it), held beside the call's reservation, which the next attempt may spend whole again. Where the room left is
 * less, what is short comes out of that reservation, and the next answer is cut to what is left of it, as a call
 * near its limit is at its reservation; where that cannot hold the prompt again (and a token), the call ends with
 * the budget error. A workspace without budgets reserves nothing, as for the call itself.
 */
export async function coverUnfinished(
  budgetGate: BudgetGate,
  call: BudgetedCall,
  attempt: UnfinishedAttempt,
  request: ChatRequest,
  context: CallContext,
  nowMs: number,
): Promise<LlmError | undefined> {
  const { budgets } = call;
  if (!budgets || !hasAnyBudget(budgets)) return undefined;
  const spent = unfinishedSpend({ promptTokens: call.promptTokens, unfinished: [attempt] });
  const chargeKey = unfinishedChargeKey(context.chargeKey, attempt.kind, attempt.attempt);
  /** What this call held before the hold: its reservation and the holds beside it. */
  const ownHeld = ownHolds(call);
  /** The room the hold found, where it got only part of what it asked. */
  let partial: RoomFound | undefined;
  /** A refusal of the hold: where the call cannot go on, told as it is. */
  let refusal: LlmError | undefined;
  try {
    const reservation = await budgetGate.reserve(
      {
        workspaceId: context.workspaceId,
        chargeKey,
        budgets,
        tokens: spent.tokens,
        costUsd: spent.costUsd,
        beside: true,
      },
      context,
    );
    const room = reservation.nearLimit;
    const taken = {
      tokens: Math.min(spent.tokens, room?.tokens ?? Number.POSITIVE_INFINITY),
      costUsd: Math.min(spent.costUsd, room?.costUsd ?? Number.POSITIVE_INFINITY),
    };
    call.unfinishedHolds.push({ chargeKey, hold: reservation.hold, ...taken });
    if (!room) return undefined;
    partial = {
      reserved: room.reserved ?? {},
      free: {
        tokens: room.tokens === null ? 0 : Math.max(0, room.tokens - taken.tokens),
        costUsd: room.costUsd === null ? 0 : Math.max(0, room.costUsd - taken.costUsd),
      },
      periods: room.periods ?? {},
    };
  } catch (error) {
    // Spent: no further attempt, whatever the call still holds (a budget lowered under what is spent).
    if (error instanceof BudgetExhaustedError && !error.held) return error;
    if (!(error instanceof LlmError)) throw error;
    // The counter did not answer, but may have taken the hold (its answer lost on the way back): given back with
    // the others when the call settles (releasing a key never reserved counts nothing), though counted as nothing.
    if (!(error instanceof BudgetExhaustedError))
      call.unfinishedHolds.push({ chargeKey, hold: undefined, tokens: 0, costUsd: 0 });
    // Held by calls in flight (this one's own reservation among them), or the counter unavailable: the call
    // goes on only within what it holds.
    refusal = error;
  }
  const left = leftToSpend(call);
  const fitTokens = roomForAnswer(left, call.promptTokens, call.targets);
  if (fitTokens >= 1) {
    call.answerCapTokens = Math.min(fitTokens, call.answerCapTokens ?? request.max_tokens ?? fitTokens);
    return undefined;
  }
  if (refusal && !(refusal instanceof BudgetExhaustedError)) return refusal;
  return whyNoFurtherAttempt(call, left, ownHeld, refusal, partial, nowMs);
}

/** What the budget held when a hold was asked: what calls in flight and leases held, what was free, and of which period. */
interface RoomFound {
  /** This call's holds among them. */
  reserved: NonNullable<BudgetRoom["reserved"]>;
  /** Neither spent nor held, of each kind. */
  free: { tokens: number; costUsd: number };
  periods: NonNullable<BudgetRoom["periods"]>;
}

/**
 * How a call ends whose holds leave no room for another attempt: `budget_held` (retryable in seconds) where others
 * hold room that, given back, would let it answer; else `budget_exhausted` until the period resets, naming the
 * budget it lacks even then (the one to raise). `heldRefusal`: the hold was refused, all room held; `partial`: it
 * got only part of what it asked.
 */
function whyNoFurtherAttempt(
  call: BudgetedCall,
  left: BudgetRoom,
  ownHeld: { tokens: number; costUsd: number },
  heldRefusal: BudgetExhaustedError | undefined,
  partial: RoomFound | undefined,
  nowMs: number,
): BudgetExhaustedError {
  // A refusal names the first budget the limiter found all held (tokens before dollars), which need not be what this
  // call lacks: what others hold, and what is free, of both kinds.
  const refusedKind = heldRefusal?.metric === "tokens" ? "tokens" : "costUsd";
  const found: RoomFound | undefined = heldRefusal
    ? {
        reserved: heldRefusal.room?.reserved ?? { [refusedKind]: heldRefusal.reserved ?? 0 },
        free: { tokens: heldRefusal.room?.tokens ?? 0, costUsd: heldRefusal.room?.costUsd ?? 0 },
        periods: { ...heldRefusal.room?.periods, [refusedKind]: heldRefusal.period },
      }
    : partial;
  const after = found ? onceGivenBack(left, found.reserved, ownHeld, found.free) : undefined;
  const heldByOthers = after?.othersHold === true && roomForAnswer(after.room, call.promptTokens, call.targets) >= 1;
  // The budget named: held, the one the call is short of now; else the one it lacks even once all is given back.
  const short = heldByOthers ? left : (after?.room ?? left);
  const metric = short.tokens !== null && short.tokens < call.promptTokens + 1 ? "tokens" : "cost_usd";
  const kind = metric === "tokens" ? "tokens" : "costUsd";
  const budgets = call.budgets;
  const period =
    found?.periods[kind] ?? (budgets !== null && budgets[`daily_${metric}`] !== null ? "daily" : "monthly");
  if (heldByOthers && heldRefusal?.held && heldRefusal.reserved !== undefined) return heldRefusal;
  if (heldByOthers && !heldRefusal)
    return heldFromAnotherAttempt(period, metric, unfinishedSpend(call), found?.reserved[kind] ?? 0);
  return noRoomForAnotherAttempt(period, metric, unfinishedSpend(call), nowMs);
}

/** What the call holds of its budget: its reservation and the holds beside it. */
function ownHolds(call: BudgetedCall): { tokens: number; costUsd: number } {
  let tokens = call.held.tokens ?? 0;
  let costUsd = call.held.costUsd ?? 0;
  for (const held of call.unfinishedHolds) {
    tokens += held.tokens;
    costUsd += held.costUsd;
  }
  return { tokens, costUsd };
}

/**
 * The room the call's next attempt would find once what others hold of the budget (`reserved`, less what this call
 * held then: `ownHeld`) is given back: what the call has left, what others hold, and what the budget has `free` (of
 * a kind the call lacks though the budget is not short of it: a stream that broke near the end of its answer).
 * `othersHold`: others hold anything at all. Where that room cannot hold an answer, the budget is as good as spent
 * for this call until its period resets, whatever is held: a retry in seconds would only be refused again.
 */
function onceGivenBack(
  left: BudgetRoom,
  reserved: NonNullable<BudgetRoom["reserved"]>,
  ownHeld: { tokens: number; costUsd: number },
  free: { tokens: number; costUsd: number },
): { room: BudgetRoom; othersHold: boolean } {
  // Dollar sums drift by a hair (the limiter rounds them to 1e-8).
  const othersTokens = Math.max(0, (reserved.tokens ?? 0) - ownHeld.tokens);
  const othersCostUsd = Math.max(0, (reserved.costUsd ?? 0) - ownHeld.costUsd - 1e-6);
  return {
    room: {
      tokens: left.tokens === null ? null : left.tokens + othersTokens + free.tokens,
      costUsd: left.costUsd === null ? null : left.costUsd + othersCostUsd + free.costUsd,
    },
    othersHold: othersTokens > 0 || othersCostUsd > 0,
  };
}

/** What the call's reservation and the holds beside it leave for its next attempt, once its unfinished attempts are paid. */
function leftToSpend(call: BudgetedCall): BudgetRoom {
  const spent = unfinishedSpend(call);
  let tokens = call.held.tokens;
  let costUsd = call.held.costUsd;
  for (const held of call.unfinishedHolds) {
    if (tokens !== null) tokens += held.tokens;
    if (costUsd !== null) costUsd += held.costUsd;
  }
  return {
    tokens: tokens === null ? null : tokens - spent.tokens,
    costUsd: costUsd === null ? null : costUsd - spent.costUsd,
  };
}
