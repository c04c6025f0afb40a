import { hasAnyBudget, normaliseUsage } from "./attempt.ts";
import type { AdapterResult, ProviderAdapter } from "./provider.ts";
import type { BudgetAmounts, BudgetHold, RouterDeps } from "./router-deps.ts";
import { modelName, type RouteTarget, targetCostUsd } from "./routing.ts";
import { DeliveredText } from "./tokens.ts";
import {
  type AttemptError,
  type CallContext,
  type ChargedCall,
  type ChatResult,
  type FailedCallCharge,
  LlmError,
  type TokenUsage,
  type UnfinishedKind,
} from "./types.ts";

/**
 * What a routed call is charged, once it ends: the provider's figures for an
 * answer; an estimate of what the provider read and wrote for a call without
 * them (a stream left or cut, a call cancelled in flight); the prompt of each
 * attempt that timed out at the provider or broke mid-answer, and what it
 * wrote. One settlement of the call's reservation covers them all, and each
 * is a usage row. Failures cost nothing: the reservation is released.
 */

/** What a call's reservation left for its settlement. */
export type Reserved = Pick<BudgetAmounts, "budgets" | "hold">;

/**
 * An attempt that ended unfinished while the provider had the request: its
 * timer ran out (`timed_out`), or its answer broke after it began
 * (`interrupted`: the connection dropped, the provider sent an error in the
 * stream). The provider read the prompt and bills it with what it wrote
 * (OpenAI and Anthropic bill a request whose client stopped waiting, and the
 * tokens of an answer cut short), though no answer came back to us.
 */
export interface UnfinishedAttempt {
  kind: UnfinishedKind;
  target: RouteTarget;
  adapter: ProviderAdapter;
  /** The call's attempt number (from 1), which keys its usage row. */
  attempt: number;
  durationMs: number;
  /** What the provider had written when the attempt ended (a stream's deltas and thinking), estimated. */
  completionTokens: number;
  /**
   * The provider's own count of the prompt, when its stream told it before the attempt ended (Anthropic's
   * message_start): charged rather than our estimate, as a caller's stream cut short is (chargeEstimate).
   */
  promptTokens?: number;
  /** Why it ended unfinished, as the caller is told with its charge. */
  error: AttemptError;
}

/** Each kind's usage row key, after the call's charge key and before the attempt's number. */
const UNFINISHED_KEY_PART: Record<UnfinishedKind, string> = { timed_out: "timed-out", interrupted: "interrupted" };

/** An unfinished attempt's usage row key; also the key of the budget hold that covers its spend (UnfinishedHold). */
export function unfinishedChargeKey(chargeKey: string, kind: UnfinishedKind, attempt: number): string {
  return `${chargeKey}:${UNFINISHED_KEY_PART[kind]}:${attempt}`;
}

/**
 * Budget held beside the call's own reservation for what an unfinished attempt spent, taken before the call makes
 * another attempt (see coverUnfinished in budget-room.ts): the next attempt may spend the whole reservation again. Released
 * when the call is settled; the settlement under the call's key counts the attempt's spend, as before.
 */
export interface UnfinishedHold {
  chargeKey: string;
  hold: BudgetHold;
  /** What it holds: the attempt's spend, or less where the room left was less (all of that room). */
  tokens: number;
  costUsd: number;
}

/** One line of a call's charge: the answer's, or an unfinished attempt's. */
interface ChargeLine {
  chargeKey: string;
  target: RouteTarget;
  adapter: ProviderAdapter;
  usage: TokenUsage;
  costUsd: number;
  estimated: boolean;
  /** An unfinished attempt's, not the call's own: counted apart from calls (UsageRecord.timedOut, interrupted). */
  unfinished?: UnfinishedKind;
  /** An unfinished attempt's: why it ended so. */
  error?: AttemptError;
  latencyMs: number;
}

/** An unfinished attempt's line. */
type UnfinishedLine = ChargeLine & { unfinished: UnfinishedKind; error: AttemptError };

/**
 * Cancelled while a request was at the provider: it has read the prompt, and
 * bills it whether or not anyone waits for the answer. Callers see a plain
 * "cancelled" LlmError; the charger charges the prompt (see settleUnserved).
 */
export class CancelledInFlight extends LlmError {
  readonly target: RouteTarget;
  readonly adapter: ProviderAdapter;
  readonly attempts: number;
  /** What the provider had written when the call was cancelled (a stream's deltas and thinking), estimated. */
  readonly writtenTokens: number;
  /** The provider's own count of the prompt, when its stream told it before the cancellation (message_start). */
  readonly promptTokens: number | undefined;
  constructor(
    target: RouteTarget,
    adapter: ProviderAdapter,
    attempts: number,
    written: { tokens: number; promptTokens?: number } = { tokens: 0 },
  ) {
    super("cancelled", "the call was cancelled", false);
    this.target = target;
    this.adapter = adapter;
    this.attempts = attempts;
    this.writtenTokens = written.tokens;
    this.promptTokens = written.promptTokens;
  }
}

/**
 * What charging a call needs from it: its reservation, its prompt's estimate, its unfinished attempts and the holds
 * that cover their spend (emptied as they are released: each is released once, whichever way the call ends).
 */
export interface ChargeableCall extends Reserved {
  promptTokens: number;
  unfinished: UnfinishedAttempt[];
  unfinishedHolds: UnfinishedHold[];
}

/** What the call's unfinished attempts spent, as they are charged (see UnfinishedAttempt). */
export function unfinishedSpend(call: Pick<ChargeableCall, "promptTokens" | "unfinished">): {
  tokens: number;
  costUsd: number;
} {
  let tokens = 0;
  let costUsd = 0;
  for (const attempt of call.unfinished) {
    const usage = unfinishedUsage(attempt, call.promptTokens);
    tokens += usage.total_tokens;
    costUsd += targetCostUsd(attempt.target, usage);
  }
  return { tokens, costUsd: Math.round(costUsd * 1e8) / 1e8 };
}

/** The prompt an unfinished attempt's provider read (its own count where it told it), and what it wrote. */
function unfinishedUsage(attempt: UnfinishedAttempt, promptEstimate: number): TokenUsage {
  const prompt = attempt.promptTokens ?? promptEstimate;
  return {
    prompt_tokens: prompt,
    completion_tokens: attempt.completionTokens,
    total_tokens: prompt + attempt.completionTokens,
  };
}

export class CallCharger {
  readonly #deps: Pick<RouterDeps, "budgets" | "usage" | "logger" | "waitUntil" | "settings">;
  readonly #now: () => number;
  /**
   * Budget settlements still on their way to the limiter, by workspace. A
   * call's answer does not wait for its settlement; the next call the same
   * router makes for the workspace does, before it reserves (`settled`), so a
   * task's calls see each other's charges in order. A router serves one
   * request (or one queue batch), so these promises never cross into another
   * request.
   */
  readonly #settling = new Map<string, Promise<unknown>>();

  constructor(deps: Pick<RouterDeps, "budgets" | "usage" | "logger" | "waitUntil" | "settings">, now: () => number) {
    this.#deps = deps;
    this.#now = now;
  }

  /** Waits for the workspace's last settlement through this charger, if one is still on its way. */
  async settled(workspaceId: string): Promise<void> {
    const settling = this.#settling.get(workspaceId);
    if (!settling) return;
    await settling;
    if (this.#settling.get(workspaceId) === settling) this.#settling.delete(workspaceId);
  }

  async charge(
    target: RouteTarget,
    adapter: ProviderAdapter,
    value: AdapterResult,
    attempts: number,
    context: CallContext,
    call: ChargeableCall,
    startedMs: number,
  ): Promise<ChatResult> {
    const estimated = value.usageEstimated === true;
    const model = modelName(target);
    const usage = normaliseUsage(value.usage);
    const cost = targetCostUsd(target, usage);
    const unfinished = this.#unfinishedLines(context, call);
    const told = (kind: UnfinishedKind) =>
      unfinished
        .filter((line) => line.unfinished === kind)
        .map((line) => ({ ...chargedCall(line), error: line.error }));
    const timedOut = told("timed_out");
    const interrupted = told("interrupted");
    const result: ChatResult = {
      message: value.message,
      finish_reason: value.finish_reason,
      usage,
      usage_estimated: estimated,
      cost_usd: cost,
      provider: target.provider,
      model,
      simulated: adapter.simulated,
      attempts,
      ...(timedOut.length > 0 ? { timed_out_attempts: timedOut } : {}),
      ...(interrupted.length > 0 ? { interrupted_attempts: interrupted } : {}),
    };
    const answer: ChargeLine = {
      chargeKey: context.chargeKey,
      target,
      adapter,
      usage,
      costUsd: cost,
      estimated,
      latencyMs: this.#now() - startedMs,
    };
    await this.#settleCharges([answer, ...unfinished], context, call);
    return result;
  }

  /** The prompt each unfinished attempt's provider read, and what it wrote (see UnfinishedAttempt), estimated. */
  #unfinishedLines(context: CallContext, call: ChargeableCall): UnfinishedLine[] {
    return call.unfinished.map((unfinished) => {
      const { kind, target, adapter, attempt, durationMs, error } = unfinished;
      const usage = unfinishedUsage(unfinished, call.promptTokens);
      return {
        chargeKey: unfinishedChargeKey(context.chargeKey, kind, attempt),
        target,
        adapter,
        usage,
        costUsd: targetCostUsd(target, usage),
        estimated: true,
        unfinished: kind,
        error,
        latencyMs: durationMs,
      };
    });
  }

  /**
   * A call's charge: one settlement of its reservation for all its lines (the budget sees one charge per
   * call), and a usage row per line. Neither is awaited where the request can keep them alive (waitUntil).
   */
  async #settleCharges(lines: ChargeLine[], context: CallContext, call: ChargeableCall): Promise<void> {
    const { budgets, hold } = call;
    let tokens = 0;
    let cost = 0;
    for (const line of lines) {
      tokens += line.usage.total_tokens;
      cost += line.costUsd;
    }
    // Taken now, so a second settlement of the call (it should have none) cannot release them again.
    const unfinishedHolds = call.unfinishedHolds.splice(0);
    const settle = this.#limitsNow(context.workspaceId, budgets).then(async (limitsNow) => {
      try {
        await this.#deps.budgets.settle(
          {
            workspaceId: context.workspaceId,
            chargeKey: context.chargeKey,
            once: context.chargeOnce,
            budgets,
            limitsNow,
            hold,
            tokens,
            costUsd: Math.round(cost * 1e8) / 1e8,
          },
          context,
        );
      } finally {
        // After the charge that counts what they covered: released first, the room they held was free for a moment
        // while that spend was not yet counted.
        await this.#releaseHolds(unfinishedHolds, context, budgets, limitsNow);
      }
    });
    const records = lines.map((line) =>
      this.#deps.usage.record({
        workspaceId: context.workspaceId,
        chargeKey: line.chargeKey,
        taskId: context.taskId ?? null,
        runId: context.runId ?? null,
        requestId: context.requestId ?? null,
        provider: line.target.provider,
        model: modelName(line.target),
        usage: line.usage,
        costUsd: line.costUsd,
        simulated: line.adapter.simulated,
        ...(line.estimated ? { estimated: true } : {}),
        ...(line.unfinished === "timed_out" ? { timedOut: true } : {}),
        ...(line.unfinished === "interrupted" ? { interrupted: true } : {}),
        latencyMs: line.latencyMs,
      }),
    );
    const logged = (what: string) => (error: unknown) =>
      this.#deps.logger.error(`${what} failed`, { error, charge_key: context.chargeKey });
    const settled = settle.catch(logged("budget settlement"));
    const background = Promise.all([settled, Promise.all(records).catch(logged("usage record"))]);
    // With budgets this router's next reservation for the workspace must see this charge (see #settling).
    if (budgets && hasAnyBudget(budgets)) this.#settling.set(context.workspaceId, settled);
    if (this.#deps.waitUntil) this.#deps.waitUntil(background);
    else await background;
  }

  /**
   * The workspace's budgets as the call ends (the settings cache's, a few seconds old at most), which its
   * thresholds are judged against (BudgetAmounts.limitsNow); those it reserved under where they cannot be read.
   * Only for a call that reserved: one that did not is counted, and no threshold is judged then.
   */
  async #limitsNow(workspaceId: string, reservedUnder: Reserved["budgets"]): Promise<Reserved["budgets"]> {
    if (!reservedUnder || !hasAnyBudget(reservedUnder)) return reservedUnder;
    try {
      return (await this.#deps.settings(workspaceId)).budgets;
    } catch {
      return reservedUnder;
    }
  }

  /**
   * A call that ended without the provider's usage (a stream whose client went
   * away, or whose provider failed mid-answer; a call cancelled in flight):
   * the provider read the prompt and wrote what was delivered, so that is
   * charged, estimated as a reservation is (src/llm/tokens.ts), rather than
   * nothing, which would make leaving before the last chunk, or cancelling,
   * a way around budgets.
   */
  async chargeEstimate(
    target: RouteTarget,
    adapter: ProviderAdapter,
    delivered: DeliveredText,
    attempts: number,
    context: CallContext,
    call: ChargeableCall,
    startedMs: number,
  ): Promise<ChatResult | undefined> {
    const usage = {
      prompt_tokens: delivered.promptTokens ?? call.promptTokens,
      completion_tokens: delivered.estimatedTokens(),
      total_tokens: 0,
    };
    // Only charged, never answered: the caller already has what was delivered (or the failure).
    const value: AdapterResult = {
      message: { role: "assistant", content: null },
      finish_reason: "length",
      usage,
      usageEstimated: true,
    };
    return await this.charge(target, adapter, value, attempts, context, call, startedMs).catch((error: unknown) => {
      this.#deps.logger.error("charging an unfinished call failed", { error, charge_key: context.chargeKey });
      return undefined;
    });
  }

  /**
   * A call that ends without an answer: failures cost nothing (providers do not bill an error), and the
   * reservation is released; but a cancellation that reached the provider is charged the prompt it read,
   * as is each attempt that timed out there or broke mid-answer. The caller sees only the failure; it is
   * told the charges (LlmError.charged), so its own tally (a task run's) matches the usage rows.
   */
  async settleUnserved(error: unknown, context: CallContext, call: ChargeableCall, startedMs: number): Promise<void> {
    if (error instanceof CancelledInFlight) {
      const { target, adapter, attempts, writtenTokens, promptTokens } = error;
      const delivered = new DeliveredText();
      delivered.addUnsent(writtenTokens);
      // Charged the provider's count of the prompt where its stream told it, as an unfinished attempt is.
      delivered.promptTokens = promptTokens;
      const charged = await this.chargeEstimate(target, adapter, delivered, attempts, context, call, startedMs);
      if (charged) {
        const { usage, cost_usd, provider, model, simulated } = charged;
        error.charged = [
          ...(charged.timed_out_attempts ?? []).map((charge) => ({ ...charge, unfinished: "timed_out" as const })),
          ...(charged.interrupted_attempts ?? []).map((charge) => ({ ...charge, unfinished: "interrupted" as const })),
          { usage, cost_usd, provider, model, simulated },
        ];
      }
      return;
    }
    const unfinished = this.#unfinishedLines(context, call);
    if (unfinished.length === 0) return this.#release(context, call);
    await this.#settleCharges(unfinished, context, call);
    if (error instanceof LlmError) error.charged = unfinished.map(failedCallCharge);
  }

  async #release(context: CallContext, call: ChargeableCall): Promise<void> {
    const { budgets, hold } = call;
    // A release spends nothing, but its settlement still judges thresholds: against the budgets now, as a charge.
    const limitsNow = await this.#limitsNow(context.workspaceId, budgets);
    await this.#deps.budgets
      .settle(
        {
          workspaceId: context.workspaceId,
          chargeKey: context.chargeKey,
          budgets,
          limitsNow,
          hold,
          tokens: 0,
          costUsd: 0,
        },
        context,
      )
      .catch((error: unknown) => this.#deps.logger.error("budget release failed", { error }));
    await this.#releaseHolds(call.unfinishedHolds.splice(0), context, budgets, limitsNow);
  }

  /** Gives back the holds that covered unfinished attempts' spend (UnfinishedHold): the call's charge counts it. */
  async #releaseHolds(
    holds: UnfinishedHold[],
    context: CallContext,
    budgets: Reserved["budgets"],
    limitsNow: Reserved["budgets"],
  ): Promise<void> {
    await Promise.all(
      holds.map(({ chargeKey, hold }) =>
        this.#deps.budgets
          .settle(
            { workspaceId: context.workspaceId, chargeKey, budgets, limitsNow, hold, tokens: 0, costUsd: 0 },
            context,
          )
          .catch((error: unknown) =>
            this.#deps.logger.error("budget release failed", { error, charge_key: chargeKey }),
          ),
      ),
    );
  }
}

/** An unfinished attempt's line as a failed call tells it: which kind it was, for the caller's problem. */
function failedCallCharge(line: UnfinishedLine): FailedCallCharge {
  return { ...chargedCall(line), unfinished: line.unfinished, error: line.error };
}

function chargedCall({ usage, costUsd: cost, target, adapter }: ChargeLine): ChargedCall {
  return {
    usage,
    cost_usd: cost,
    provider: target.provider,
    model: modelName(target),
    simulated: adapter.simulated,
  };
}
