import { DurableObject } from "cloudflare:workers";
import { BreakerBook, type BreakerSnapshot } from "../src/llm/breaker-book.ts";
import type { Outcome } from "../src/llm/breaker-client.ts";
import type { BreakerPolicy, BreakerState } from "../src/llm/breaker-core.ts";

/**
 * One per LLM provider (addressed by provider name): the circuit breakers of
 * its models, shared by every isolate. Isolates keep a cached copy and call
 * here only to report failures, to sync now and then, and for the half-open
 * trial, so the hot path never waits on this object. A thin RPC shell over
 * BreakerBook; the object's clock decides when a breaker half-opens.
 */
export class ProviderBreaker extends DurableObject {
  readonly #book: BreakerBook;

  constructor(ctx: DurableObjectState, env: Cloudflare.Env) {
    super(ctx, env);
    this.#book = new BreakerBook(ctx.storage);
  }

  async sync(model: string, outcomes: Outcome[], policy?: BreakerPolicy): Promise<BreakerState> {
    return this.#book.sync(model, outcomes, Date.now(), policy);
  }

  /** `leaseMs`: how long the trial's attempt may run, which its slot is held for (see acquireTrial). */
  async tryTrial(
    model: string,
    policy?: BreakerPolicy,
    leaseMs?: number,
  ): Promise<{ granted: boolean; state: BreakerState }> {
    return this.#book.tryTrial(model, Date.now(), policy, leaseMs);
  }

  /** The breakers of these models (all, without a list). */
  async snapshot(policy?: BreakerPolicy, models?: string[]): Promise<BreakerSnapshot[]> {
    return this.#book.snapshot(Date.now(), policy, models);
  }
}
