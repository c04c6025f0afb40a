import { describe, expect, it } from "vitest";
import type { WorkspaceLimiter } from "../../../durable-objects/workspace-limiter.ts";
import { RateLimiter, type RateLimitRule } from "../../../src/limits/rate-limiter.ts";
import type { AcquireInput, AcquireResult, ReleaseInput } from "../../../src/limits/types.ts";

/**
 * The isolate's RateLimiter against a WorkspaceLimiter that answers slower than
 * the lease's time (an overloaded object): a fake namespace on a fake clock.
 */

function slowNamespace(clock: { nowMs: number }, latencyMs: number) {
  const calls = { acquire: 0, release: 0, granted: 0, released: 0 };
  const namespace = {
    getByName() {
      return {
        async acquire(input: AcquireInput): Promise<AcquireResult> {
          calls.acquire += 1;
          // A hang in the limiter would spin here for good; give up after a few calls.
          if (calls.acquire > 5) throw new Error("limiter asked too often");
          clock.nowMs += latencyMs;
          calls.granted += input.tokens;
          return {
            granted: input.tokens,
            retryAfterMs: 0,
            buckets: input.rules.map((rule) => ({ name: rule.name, limit: rule.burst, remaining: 5, resetMs: 0 })),
          };
        },
        async release(input: ReleaseInput) {
          calls.release += 1;
          calls.released += input.tokens;
          return { buckets: [] };
        },
      };
    },
  } as unknown as DurableObjectNamespace<WorkspaceLimiter>;
  return { namespace, calls };
}

const rules: RateLimitRule[] = [{ name: "workspace", ratePerSecond: 100, burst: 100 }];

describe("RateLimiter with a slow limiter", () => {
  it("admits the request whose grant came back after the lease's time, instead of asking again forever", async () => {
    const clock = { nowMs: 1_000_000 };
    const { namespace, calls } = slowNamespace(clock, 1_500);
    const limiter = new RateLimiter(namespace, { leaseTtlMs: 1_000, now: () => clock.nowMs });
    const decision = await limiter.check("ws_slow", rules);
    expect(decision.allowed).toBe(true);
    expect(calls.acquire).toBe(1);
  });

  it("admits concurrent requests too, each spending a token the limiter granted", async () => {
    const clock = { nowMs: 1_000_000 };
    const { namespace, calls } = slowNamespace(clock, 1_500);
    const limiter = new RateLimiter(namespace, { leaseTtlMs: 1_000, now: () => clock.nowMs });
    const decisions = await Promise.all(Array.from({ length: 3 }, () => limiter.check("ws_slow", rules)));
    expect(decisions.map((decision) => decision.allowed)).toEqual([true, true, true]);
    // Never more admitted than granted and not returned.
    expect(calls.granted - calls.released).toBeGreaterThanOrEqual(3);
  });
});
