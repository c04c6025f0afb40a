import { HELD_RETRY_AFTER_MS, periodEndMs } from "../limits/budget-rules.ts";
import type { BudgetRoom } from "../limits/budget-types.ts";
import { providerWithSettings } from "./adapters/index.ts";
import type { ProviderError } from "./provider.ts";
import { RETRYABLE_STATUSES } from "./retry.ts";
import { modelName, type RouteTarget } from "./routing.ts";
import { LlmError, type TargetFailure } from "./types.ts";

/** How the router treats a failed attempt, and how it is reported in `llm.provider.error`. */

export interface FailureClass {
  /** Worth another attempt at the same target. */
  retryable: boolean;
  /** Says something about the provider's health (400/401/404 and other request faults do not). */
  countsForBreaker: boolean;
  /**
   * Why the attempt failed, for the final error when every target failed. `content_policy`: the provider's
   * content filter refused the prompt, which ends the call (see classifyFailure).
   */
  cause: "request" | "authentication" | "provider" | "content_policy";
  eventType: "timeout" | "rate_limit" | "authentication" | "quota_exceeded" | "connection_error";
}

/**
 * A model its provider does not have (a 404: OpenAI's model_not_found, Azure's DeploymentNotFound, a local
 * server without it) on an entry of the workspace's chain, not one the request named: the chain's to mend, not
 * the caller's, whom a 400 "every provider refused the request" sent to change a request that named no model.
 * Told as the provider side's failure (a 503 no retry mends, when it is the last); it still falls over, and
 * still does not count for the breaker.
 */
export function chainModelMissing(failure: FailureClass, error: ProviderError, target: RouteTarget): FailureClass {
  return failure.cause === "request" && error.status === 404 && !target.requested
    ? { ...failure, cause: "provider" }
    : failure;
}

/**
 * Why a call fell over from a target, in `llm.provider.fallback`'s terms: `rate_limit` for a provider that
 * throttled it (a 429, also one saying the account's quota is spent), `performance` for one too slow to
 * answer within the attempt timeout, `error_rate` for one that failed otherwise (or whose breaker is open).
 */
export function fallbackReason(failure: FailureClass): "rate_limit" | "performance" | "error_rate" {
  if (failure.eventType === "rate_limit" || failure.eventType === "quota_exceeded") return "rate_limit";
  if (failure.eventType === "timeout") return "performance";
  return "error_rate";
}

/**
 * The codes a 400 carries when a provider's content filter refused the prompt: Azure's `content_filter`
 * (its filters are the deployment's own policy), OpenAI's `invalid_prompt` (a prompt flagged against its
 * usage policy) and `content_policy_violation`.
 */
const CONTENT_POLICY_CODES: ReadonlySet<string> = new Set([
  "content_filter",
  "invalid_prompt",
  "content_policy_violation",
]);

export function classifyFailure(error: ProviderError): FailureClass {
  if (error.failure === "timeout") {
    return { retryable: true, countsForBreaker: true, cause: "provider", eventType: "timeout" };
  }
  if (error.failure === "connection" || error.failure === "protocol" || error.status === undefined) {
    return { retryable: true, countsForBreaker: true, cause: "provider", eventType: "connection_error" };
  }
  const status = error.status;
  // OpenAI's spent quota (a 429 that no retry mends) and Anthropic's spent credit (a 402, or a 400: see the adapter).
  if (status === 402 || error.code === "insufficient_quota" || error.code === "billing_error") {
    return { retryable: false, countsForBreaker: false, cause: "provider", eventType: "quota_exceeded" };
  }
  if (status === 429) return { retryable: true, countsForBreaker: true, cause: "provider", eventType: "rate_limit" };
  if (RETRYABLE_STATUSES.has(status)) {
    return { retryable: true, countsForBreaker: true, cause: "provider", eventType: "connection_error" };
  }
  // Not a request fault that another provider may not share: sent on to the next target, the refused prompt
  // went round the deployment's content policy (an Azure filter configured for it), so the call ends here.
  if (status === 400 && CONTENT_POLICY_CODES.has(error.code)) {
    return { retryable: false, countsForBreaker: false, cause: "content_policy", eventType: "connection_error" };
  }
  if (status === 401 || status === 403) {
    return { retryable: false, countsForBreaker: false, cause: "authentication", eventType: "authentication" };
  }
  if (status >= 400 && status < 500) {
    return { retryable: false, countsForBreaker: false, cause: "request", eventType: "connection_error" };
  }
  // Other 5xx (501, 505, …): the provider is unwell but another attempt will not change that.
  return { retryable: false, countsForBreaker: true, cause: "provider", eventType: "connection_error" };
}

/**
 * Budget refusals also say when to come back, for a 429's Retry-After: when the period resets, or, when the
 * budget is not spent but its room left is `held` by calls in flight (near a limit a call holds all of it),
 * in seconds: a retry then may find room, so such a refusal is retryable (a task is tried again, not failed).
 */
export class BudgetExhaustedError extends LlmError {
  readonly retryAfterSeconds: number;
  readonly period: "daily" | "monthly";
  readonly metric: "tokens" | "cost_usd";
  readonly held: boolean;
  /** A `held` refusal's: what calls in flight and leases hold of the budget it names (tokens or USD). */
  readonly reserved?: number;
  /**
   * A `held` refusal's: the room left of each kind's tightest budget (none, for the one named) and what calls in
   * flight and leases hold of it, the kind it does not name too: a call may lack dollars where the limiter names the
   * tokens it looked at first, or tokens the budget has free where it names the dollars.
   */
  readonly room?: BudgetRoom;
  constructor(
    message: string,
    details: {
      retryAfterSeconds: number;
      period: "daily" | "monthly";
      metric: "tokens" | "cost_usd";
      held?: boolean;
      reserved?: number;
      room?: BudgetRoom;
    },
  ) {
    const held = details.held === true;
    super("budget_exhausted", message, held, [], held ? details.retryAfterSeconds * 1000 : undefined);
    this.retryAfterSeconds = details.retryAfterSeconds;
    this.period = details.period;
    this.metric = details.metric;
    this.held = held;
    if (held && details.reserved !== undefined) this.reserved = details.reserved;
    if (held && details.room !== undefined) this.room = details.room;
  }
}

/**
 * A call that cannot make another attempt within its budget: its unfinished attempts (timed out, or broken
 * mid-answer) were charged, and what the budget has left, with what the call holds, cannot hold its prompt again.
 * It ends as a call meeting a spent budget does: not retryable until the period resets or the budget is raised.
 */
export function noRoomForAnotherAttempt(
  period: "daily" | "monthly",
  metric: "tokens" | "cost_usd",
  charged: { tokens: number; costUsd: number },
  nowMs: number,
): BudgetExhaustedError {
  const retryAfterSeconds = Math.max(1, Math.ceil((periodEndMs(period, nowMs) - nowMs) / 1000));
  const what = metric === "tokens" ? "token" : "cost";
  return new BudgetExhaustedError(
    `The ${period} ${what} budget has no room for another attempt: this call's attempts that timed out or broke mid-answer were charged ${charged.tokens} tokens (${charged.costUsd} USD), and what is left cannot hold its prompt again; it resets in ${retryAfterSeconds} s, or raise it with PUT /api/v1/budgets.`,
    { retryAfterSeconds, period, metric },
  );
}

/**
 * A call that cannot make another attempt only because calls in flight and leases hold the room it would need:
 * its unfinished attempts were charged, and what it holds cannot hold its prompt again, but what the others hold
 * comes back as they settle. It ends as a call refused for held room does: retryable in seconds (budget_held).
 */
export function heldFromAnotherAttempt(
  period: "daily" | "monthly",
  metric: "tokens" | "cost_usd",
  charged: { tokens: number; costUsd: number },
  /** What calls in flight and leases hold of that budget, this call's own holds among them. */
  reserved: number,
): BudgetExhaustedError {
  const retryAfterSeconds = HELD_RETRY_AFTER_MS / 1000;
  const [what, unit] = metric === "tokens" ? ["token", "tokens"] : ["cost", "USD"];
  return new BudgetExhaustedError(
    `The ${period} ${what} budget's room left is held by calls in flight or leases not yet given back (${reserved} ${unit} reserved): this call's attempts that timed out or broke mid-answer were charged ${charged.tokens} tokens (${charged.costUsd} USD), and what it holds cannot hold its prompt again; retry in ${retryAfterSeconds} s.`,
    { retryAfterSeconds, period, metric, held: true, reserved },
  );
}

/**
 * How a failed attempt is told to the caller. A provider's answer to a request fault says what to fix;
 * its answer to our credentials is about the deployment's secret (OpenAI's names the key's last
 * characters), which is not the workspace's to see. So is its answer about the deployment's account:
 * OpenAI's 429 names the organization and its use per minute (every workspace's calls, summed), and
 * Anthropic's the organization's id; the status and code say all a caller can act on.
 */
export function describeFailure(error: ProviderError, failure: FailureClass = classifyFailure(error)): string {
  if (failure.cause === "authentication")
    return `provider answered ${error.status}: it refused this deployment's credentials`;
  if (failure.eventType === "rate_limit") return `provider answered ${error.status}: rate limited (${error.code})`;
  if (failure.eventType === "quota_exceeded") {
    return `provider answered ${error.status}: this deployment's quota with it is spent (${error.code})`;
  }
  return error.message;
}

/**
 * What a call's failed attempts said, target by target, for the error it ends
 * in when every target failed: the most telling cause wins, each target's last
 * failure is told, and when every target asked for a wait (Retry-After) the
 * caller is told the soonest, not to come back in a second.
 */
export class FailureTally {
  readonly #causes: FailureClass["cause"][] = [];
  readonly #failures: TargetFailure[] = [];
  /** Each target's asked wait in ms (undefined: it asked none), kept as `#failures` is. */
  readonly #waitsMs: (number | undefined)[] = [];
  /** Some attempt failed in a way another may mend (a 5xx, a timeout, a rate limit). */
  #anyRetryable = false;

  /** A failed attempt (`retry` 0 for a target's first): a target's last attempt speaks for it. */
  add(target: RouteTarget, retry: number, error: ProviderError, failure: FailureClass): void {
    this.#causes.push(failure.cause);
    this.#anyRetryable ||= failure.retryable;
    const told: TargetFailure = {
      provider: target.provider,
      model: modelName(target),
      attempts: retry + 1,
      status: error.status ?? null,
      code: error.code,
      message: describeFailure(error, failure),
    };
    const at = retry > 0 ? this.#failures.length - 1 : this.#failures.length;
    this.#failures[at] = told;
    this.#waitsMs[at] = error.retryAfterMs;
  }

  final(timedOut: boolean): LlmError {
    const causes = this.#causes;
    const failures = this.#failures;
    const retryAfterMs =
      this.#waitsMs.length > 0 && this.#waitsMs.every((ms) => ms !== undefined)
        ? Math.min(...(this.#waitsMs as number[]))
        : undefined;
    const told =
      failures.length === 0
        ? "no attempt was made"
        : failures.map((failure) => `${failure.provider}:${failure.model}: ${failure.message}`).join("; ");
    if (causes.includes("content_policy")) {
      return new LlmError("content_filter", `a provider's content policy refused the prompt: ${told}`, false, failures);
    }
    if (timedOut) return new LlmError("timeout", `the call's deadline passed: ${told}`, true, failures, retryAfterMs);
    if (causes.length > 0 && causes.every((cause) => cause === "request")) {
      return new LlmError("invalid_request", `every provider refused the request: ${told}`, false, failures);
    }
    if (causes.length > 0 && causes.every((cause) => cause === "authentication")) {
      return new LlmError("authentication", `every provider refused our credentials: ${told}`, false, failures);
    }
    // Refusals no retry mends (a spent quota, a request one provider refuses and another's credentials) are not
    // worth the caller's retry either: told retryable, SDKs asked the same providers again, and tasks were re-run.
    const retryable = causes.length === 0 || this.#anyRetryable;
    return new LlmError("all_providers_failed", `every provider failed: ${told}`, retryable, failures, retryAfterMs);
  }
}

/**
 * A call whose routing chain names no provider this deployment has configured (its secrets not put, or the
 * workspace's chain naming one the deployment lacks): not the caller's fault, which a 400 said, and no retry
 * mends it. Says what each provider needs, for whoever tells the operator.
 */
export function noConfiguredProvider(
  providers: readonly string[],
  /** The chain is LLM_DEFAULT_CHAIN's (the workspace set none), which the operator, not the workspace, wrote. */
  defaultChain: boolean,
): LlmError {
  const needs = [...new Set(providers)].map(providerWithSettings).join(", ");
  const message = defaultChain
    ? `No provider in this deployment's default routing chain (LLM_DEFAULT_CHAIN; the workspace sets none of its own) is configured here: ${needs}. Configure one, or set the workspace's chain (PATCH /api/v1/workspace, llm.chain).`
    : `No provider in this workspace's routing chain is configured on this deployment: ${needs}. Configure one, or change the chain (PATCH /api/v1/workspace, llm.chain).`;
  return new LlmError("no_configured_provider", message, false);
}
