import type { WorkspaceBudgets } from "../db/schema.ts";
import type { BudgetedCall } from "./budget-room.ts";
import { answerThatFits } from "./budget-room.ts";
import type { CallCharger } from "./charging.ts";
import { noConfiguredProvider } from "./errors.ts";
import type { RouterDeps } from "./router-deps.ts";
import {
  type LatencyTracker,
  planTargets,
  type RouteTarget,
  targetCostUsd,
  targetKey,
  targetPrice,
} from "./routing.ts";
import { estimatePromptTokens, MAX_SAFE_ANSWER_CAP_TOKENS, UNBOUNDED_ANSWER_CEILING_TOKENS } from "./tokens.ts";
import { type CallContext, type ChatRequest, LlmError } from "./types.ts";

/**
 * A call's plan, before its first attempt: the targets it may try, in order, and the budget it holds for them
 * (the most it may spend, or what the room near a limit leaves, with the answer cut to fit).
 */

/** The whole call's limit when neither the caller nor the router's deps set one. */
const DEFAULT_DEADLINE_MS = 180_000;

/** A prepared call: its targets and deadline, with what charging it and its budgets need (BudgetedCall). */
export interface PreparedCall extends BudgetedCall {
  deadlineMs: number;
}

/** What planning a call needs of the router: its deps, its latency averages, its charger and its clock. */
export interface CallPlanner {
  deps: RouterDeps;
  latency: LatencyTracker;
  charger: CallCharger;
  now: () => number;
}

export async function prepareCall(
  planner: CallPlanner,
  request: ChatRequest,
  context: CallContext,
): Promise<PreparedCall> {
  const { deps, charger, now } = planner;
  if (!Array.isArray(request.messages) || request.messages.length === 0) {
    throw new LlmError("invalid_request", "a chat needs at least one message", false);
  }
  if (!context.workspaceId || !context.chargeKey) {
    throw new LlmError("invalid_request", "a call needs a workspace and a charge key", false);
  }
  if (context.signal?.aborted) throw new LlmError("cancelled", "the call was cancelled before it started", false);
  const settings = await deps.settings(context.workspaceId);
  const promptTokens = estimatePromptTokens(request.messages, request.tools);
  const planned = planTargets({
    strategy: settings.strategy,
    chain: settings.chain,
    request,
    estimatedPromptTokens: promptTokens,
    latency: planner.latency,
    random: deps.random,
    providers: [...deps.adapters.keys()],
  });
  const targets = planned.filter((target) => deps.adapters.has(target.provider));
  if (targets.length < planned.length) {
    const missing = planned.filter((target) => !deps.adapters.has(target.provider));
    warnSkippedOnce(deps.logger, missing.map(targetKey));
    if (targets.length === 0) {
      throw noConfiguredProvider(
        missing.map((target) => target.provider),
        settings.defaultChain === true,
      );
    }
  }
  // A call reserves the most it may spend: its prompt and its max_tokens (or the longest answer a call without
  // one is taken to give), at the dearest target it may end up on. Calls at once then never spend more than a
  // budget has left; near its limit, where the room cannot hold that, the call's answer is cut to fit.
  const completionTokens =
    request.max_tokens === undefined
      ? longestUnboundedAnswer(deps, targets)
      : longestBoundedAnswer(targets, request.max_tokens);
  const mostSpent = (answerTokens: number) => ({
    tokens: promptTokens + answerTokens,
    costUsd: Math.max(
      ...targets.map((target) =>
        targetCostUsd(target, { prompt_tokens: promptTokens, completion_tokens: answerTokens }),
      ),
    ),
  });
  // Without max_tokens, a call cut near a limit gets MAX_SAFE_ANSWER_CAP_TOKENS at most: it need not hold all
  // the room, and calls alongside may share what is left.
  const cutsToSafeCap = request.max_tokens === undefined && completionTokens > MAX_SAFE_ANSWER_CAP_TOKENS;
  await charger.settled(context.workspaceId);
  const reservation = await deps.budgets.reserve(
    {
      workspaceId: context.workspaceId,
      chargeKey: context.chargeKey,
      budgets: settings.budgets,
      ...mostSpent(completionTokens),
      ...(cutsToSafeCap ? { ifCut: mostSpent(MAX_SAFE_ANSWER_CAP_TOKENS) } : {}),
    },
    context,
  );
  const answerCapTokens = reservation.nearLimit
    ? Math.min(
        answerThatFits(reservation.nearLimit, promptTokens, targets),
        request.max_tokens ?? MAX_SAFE_ANSWER_CAP_TOKENS,
      )
    : undefined;
  // As the limiter holds it (BudgetBook.reserve): near a limit, the cut call's amounts or all the room, if less.
  const asked =
    cutsToSafeCap && reservation.nearLimit ? mostSpent(MAX_SAFE_ANSWER_CAP_TOKENS) : mostSpent(completionTokens);
  const room = reservation.nearLimit;
  const held = {
    tokens: limitsTokens(settings.budgets) ? Math.min(asked.tokens, room?.tokens ?? Number.POSITIVE_INFINITY) : null,
    costUsd: limitsCost(settings.budgets) ? Math.min(asked.costUsd, room?.costUsd ?? Number.POSITIVE_INFINITY) : null,
  };
  return {
    targets,
    promptTokens,
    ...(answerCapTokens !== undefined && answerCapTokens !== request.max_tokens ? { answerCapTokens } : {}),
    budgets: settings.budgets,
    hold: reservation.hold,
    held,
    deadlineMs: context.deadlineMs ?? now() + (deps.defaultDeadlineMs ?? DEFAULT_DEADLINE_MS),
    unfinished: [],
    unfinishedHolds: [],
  };
}

/**
 * The most tokens of answer a call with this max_tokens may get from any of these targets: each is sent no more
 * than its model's ceiling (Router's payload), so a max_tokens above every ceiling held whole would hold budget no
 * target can spend, and refuse calls alongside (budget_held) that the budget had room for.
 */
function longestBoundedAnswer(targets: RouteTarget[], maxTokens: number): number {
  let longest = 0;
  for (const target of targets) {
    longest = Math.max(longest, Math.min(maxTokens, targetPrice(target).maxOutputTokens ?? maxTokens));
  }
  return longest;
}

/** The most tokens of answer a call without max_tokens may get from any of these targets. */
function longestUnboundedAnswer(deps: RouterDeps, targets: RouteTarget[]): number {
  let longest = 0;
  for (const target of targets) {
    const providerDefault = deps.adapters.get(target.provider)?.defaultMaxTokens;
    const ceiling = providerDefault ?? targetPrice(target).maxOutputTokens ?? UNBOUNDED_ANSWER_CEILING_TOKENS;
    longest = Math.max(longest, ceiling);
  }
  return longest;
}

/** The chains' unconfigured entries told so far in this isolate: told once each, not at every call they are skipped. */
const skippedTold = new Set<string>();
const MAX_SKIPPED_TOLD = 1_000;

function warnSkippedOnce(logger: RouterDeps["logger"], skipped: string[]): void {
  const key = skipped.join(",");
  if (skippedTold.has(key)) return;
  if (skippedTold.size >= MAX_SKIPPED_TOLD) skippedTold.clear();
  skippedTold.add(key);
  logger.warn("routing chain names providers that are not configured here; skipped", { skipped });
}

/** The budgets limit tokens (a day's or a month's). */
function limitsTokens(budgets: WorkspaceBudgets | null): boolean {
  return budgets !== null && (budgets.daily_tokens !== null || budgets.monthly_tokens !== null);
}

/** The budgets limit dollars (a day's or a month's). */
function limitsCost(budgets: WorkspaceBudgets | null): boolean {
  return budgets !== null && (budgets.daily_cost_usd !== null || budgets.monthly_cost_usd !== null);
}
