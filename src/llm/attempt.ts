import type { WorkspaceBudgets } from "../db/schema.ts";
import type { FailureClass } from "./errors.ts";
import { ProviderError } from "./provider.ts";
import type { RouterDeps } from "./router-deps.ts";
import { modelName, type RouteTarget } from "./routing.ts";
import { type CallContext, LlmError, type TokenUsage } from "./types.ts";

/** Small pieces of a router attempt: its timer, usage clean-up, and how a failed one is told. */

export function hasAnyBudget(budgets: WorkspaceBudgets): boolean {
  return Object.values(budgets).some((value) => value !== null && value !== undefined);
}

export function normaliseUsage(usage: TokenUsage): TokenUsage {
  const prompt = Math.max(0, Math.round(usage.prompt_tokens || 0));
  const completion = Math.max(0, Math.round(usage.completion_tokens || 0));
  // Cached tokens are part of the prompt's, never more.
  const cached = Math.min(prompt, Math.max(0, Math.round(usage.cached_prompt_tokens || 0)));
  // Reasoning tokens are part of the answer's, never more.
  const reasoning = Math.min(completion, Math.max(0, Math.round(usage.reasoning_tokens || 0)));
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    ...(cached > 0 ? { cached_prompt_tokens: cached } : {}),
    ...(reasoning > 0 ? { reasoning_tokens: reasoning } : {}),
  };
}

/**
 * An attempt's timer: aborts its signal on timeout or when the caller cancels.
 * A stream's clock is resettable (each event restarts it); a non-streamed
 * call's is one native `AbortSignal.timeout`, which needs no clearing and
 * costs the hot path no timer object of its own (under nodejs_compat the
 * global setTimeout wraps each timer in a Node-style Timeout).
 *
 * A resettable clock waits `firstWaitMs` until the provider's answer begins
 * (`touch`), then `timeoutMs` between its events: a model that sends nothing
 * while it thinks (OpenAI's reasoning models) is silent for as long as its
 * thinking takes, which a stall between two deltas of an answer never is.
 * Signs of life before the answer (`alive`: a role chunk, thinking) restart
 * the first wait.
 */
export class AttemptClock {
  readonly signal: AbortSignal;
  readonly #controller: AbortController | undefined;
  readonly #timeoutMs: number;
  #waitMs: number;
  readonly #parent?: AbortSignal;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Finished: a late touch (an adapter's progress) must not arm the timer again. */
  #finished = false;
  readonly #onParentAbort = () => this.#controller?.abort(this.#parent?.reason);

  constructor(timeoutMs: number, parent?: AbortSignal, options: { resettable?: boolean; firstWaitMs?: number } = {}) {
    this.#timeoutMs = Math.max(1, timeoutMs);
    this.#waitMs = Math.max(this.#timeoutMs, options.firstWaitMs ?? 0);
    this.#parent = parent;
    if (!options.resettable) {
      const timeout = AbortSignal.timeout(this.#waitMs);
      this.signal = parent ? AbortSignal.any([parent, timeout]) : timeout;
      return;
    }
    this.#controller = new AbortController();
    this.signal = this.#controller.signal;
    parent?.addEventListener("abort", this.#onParentAbort, { once: true });
    this.alive();
  }

  /** The answer progressed (a stream's delta): the wait between events applies from now on. */
  touch(): void {
    this.#waitMs = this.#timeoutMs;
    this.alive();
  }

  /** The provider is alive but its answer may not have begun: restarts the current wait; nothing for a one-shot clock. */
  alive(): void {
    const controller = this.#controller;
    if (!controller || controller.signal.aborted || this.#finished) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(
      () => controller.abort(new DOMException("the provider did not answer in time", "TimeoutError")),
      this.#waitMs,
    );
  }

  /**
   * The provider is asked for a whole answer it writes before it sends anything (a server that will not stream):
   * the wait is now at least `waitMs`, from now. Nothing for a one-shot clock.
   */
  waitUpTo(waitMs: number): void {
    this.#waitMs = Math.max(this.#waitMs, Math.max(1, waitMs));
    this.alive();
  }

  /** Stops a resettable clock until the next touch (a stream's caller holds its delta); nothing for a one-shot clock. */
  pause(): void {
    clearTimeout(this.#timer);
  }

  finish(): void {
    if (!this.#controller) return;
    this.#finished = true;
    clearTimeout(this.#timer);
    this.#parent?.removeEventListener("abort", this.#onParentAbort);
  }
}

/**
 * An attempt's error that no adapter raised as the provider's (every failure of a provider, its connection and
 * its answer is a ProviderError), nor an abort: a bug in the call path. It goes on as a failed connection (the
 * call fails over, as on a broken answer), but told only as that, in a warning, it never reached Sentry.
 */
export function reportIfUnexpected(
  deps: Pick<RouterDeps, "logger" | "report">,
  caught: unknown,
  attemptSignal: AbortSignal,
  context: CallContext,
  target: RouteTarget,
): void {
  if (caught instanceof ProviderError || caught instanceof LlmError) return;
  if (attemptSignal.aborted || context.signal?.aborted) return;
  deps.logger.error("llm attempt failed unexpectedly", {
    provider: target.provider,
    model: modelName(target),
    error: caught,
  });
  deps.report?.(caught, context);
}

/**
 * A failed attempt, told: a warning naming its provider and model (the route's own line names neither, so a
 * provider failing calls was named only in the event), and an `llm.provider.error` event. `retryInMs`: when it is
 * tried again at this target (null: it is not); `midStream`: a caller's stream that broke after it began, which
 * is never retried or failed over.
 */
export function tellFailedAttempt(
  deps: Pick<RouterDeps, "logger" | "events">,
  context: CallContext,
  attempt: { target: RouteTarget; simulated: boolean; retry: number },
  error: ProviderError,
  failure: Pick<FailureClass, "eventType">,
  outcome: { retryInMs: number | null; fallbackTriggered: boolean; midStream?: boolean },
): void {
  const { target, retry } = attempt;
  deps.logger.warn("llm attempt failed", {
    provider: target.provider,
    model: modelName(target),
    status: error.status,
    code: error.code,
    // What a code alone does not tell apart ("connection": a refused port, a header the runtime would not
    // send, a reset), for the operator.
    message: error.message,
    // The provider's own id for the request, which its support asks for (an unexplained 500).
    ...(error.providerRequestId !== undefined ? { provider_request_id: error.providerRequestId } : {}),
    retry,
    retry_in_ms: outcome.retryInMs,
    ...(outcome.midStream ? { mid_stream: true } : {}),
  });
  deps.events.providerError(context, {
    provider: target.provider,
    model: modelName(target),
    error_type: failure.eventType,
    error_code: error.code,
    retry_count: retry,
    fallback_triggered: outcome.fallbackTriggered,
    http_status: error.status ?? null,
    simulated: attempt.simulated,
  });
}
