import { DurableObject } from "cloudflare:workers";
import { LimiterCore } from "../src/limits/limiter-core.ts";
import type {
  AcquireInput,
  AcquireResult,
  BucketSnapshot,
  ReleaseInput,
  StrikeInput,
  StrikeResult,
} from "../src/limits/types.ts";

/**
 * One per workspace (addressed by workspace id): its token buckets and client
 * strikes today; task concurrency slots, the priority admission queue and
 * token budgets later. A thin RPC shell over LimiterCore, which the tests
 * drive directly. State lives in this object's SQLite storage.
 *
 * Buckets run on the object's own clock, never the caller's: isolates on
 * other machines may be skewed, and a clock running ahead would refill a bucket
 * early. Strikes may take the caller's `nowMs` (their windows are long enough
 * that skew does not matter, and tests can step through a cool-down).
 */
export class WorkspaceLimiter extends DurableObject {
  readonly #core: LimiterCore;

  constructor(ctx: DurableObjectState, env: Cloudflare.Env) {
    super(ctx, env);
    this.#core = new LimiterCore(ctx.storage);
  }

  async acquire(input: AcquireInput): Promise<AcquireResult> {
    return this.#core.acquire({ rules: input.rules, tokens: input.tokens, nowMs: Date.now() });
  }

  async release(input: ReleaseInput): Promise<{ buckets: BucketSnapshot[] }> {
    return this.#core.release({ rules: input.rules, tokens: input.tokens, nowMs: Date.now() });
  }

  async recordStrike(input: StrikeInput & { nowMs?: number }): Promise<StrikeResult> {
    const { key, threshold, windowMs, cooldownMs } = input;
    return this.#core.recordStrike({ key, threshold, windowMs, cooldownMs, nowMs: input.nowMs ?? Date.now() });
  }

  /** When `key`'s block ends (epoch ms), or null if it is not blocked at `nowMs` (default: now). */
  async blockedUntil(key: string, nowMs?: number): Promise<number | null> {
    return this.#core.blockedUntil(key, nowMs ?? Date.now());
  }

  async ping(): Promise<{ ok: true; object: "WorkspaceLimiter"; time: string }> {
    return { ok: true, object: "WorkspaceLimiter", time: new Date().toISOString() };
  }
}
