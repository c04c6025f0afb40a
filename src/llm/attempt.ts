import type { WorkspaceBudgets } from "../db/schema.ts";
import type { TokenUsage } from "./types.ts";

/** Small pieces of a router attempt: its timer, the sleep between attempts, usage clean-up. */

export function sleepMs(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

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
 */
export class AttemptClock {
  readonly signal: AbortSignal;
  readonly #controller: AbortController | undefined;
  readonly #timeoutMs: number;
  readonly #parent?: AbortSignal;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Finished: a late touch (an adapter's progress) must not arm the timer again. */
  #finished = false;
  readonly #onParentAbort = () => this.#controller?.abort(this.#parent?.reason);

  constructor(timeoutMs: number, parent?: AbortSignal, options: { resettable?: boolean } = {}) {
    this.#timeoutMs = Math.max(1, timeoutMs);
    this.#parent = parent;
    if (!options.resettable) {
      const timeout = AbortSignal.timeout(this.#timeoutMs);
      this.signal = parent ? AbortSignal.any([parent, timeout]) : timeout;
      return;
    }
    this.#controller = new AbortController();
    this.signal = this.#controller.signal;
    parent?.addEventListener("abort", this.#onParentAbort, { once: true });
    this.touch();
  }

  /** Restarts a resettable clock (a stream's next event); nothing for a one-shot clock. */
  touch(): void {
    const controller = this.#controller;
    if (!controller || controller.signal.aborted || this.#finished) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(
      () => controller.abort(new DOMException("the provider did not answer in time", "TimeoutError")),
      this.#timeoutMs,
    );
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
