import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { WorkspaceLimiter } from "../../durable-objects/workspace-limiter.ts";
import { type RateLimitDecision, RateLimiter, type RateLimitRule } from "../../src/limits/rate-limiter.ts";
import type { AcquireInput, ReleaseInput } from "../../src/limits/types.ts";

/**
 * The isolate-side client against the real WorkspaceLimiter. Several
 * RateLimiter instances over one object stand in for several isolates; a
 * recording namespace counts the Durable Object calls the leases save.
 */

function workspaceId(label: string): string {
  return `ws_rl_test_${label}_${crypto.randomUUID()}`;
}

interface Recorder {
  namespace: DurableObjectNamespace<WorkspaceLimiter>;
  granted: number[];
  released: number[];
  /** Release calls still running (they are fire-and-forget). */
  pending: Promise<unknown>[];
  fail: boolean;
}

function recordingNamespace(): Recorder {
  const recorder: Recorder = { namespace: undefined!, granted: [], released: [], pending: [], fail: false };
  recorder.namespace = {
    getByName(name: string) {
      const stub = env.WORKSPACE_LIMITER.getByName(name);
      return {
        async acquire(input: AcquireInput) {
          if (recorder.fail) throw new Error("limiter unavailable");
          const result = await stub.acquire(input);
          recorder.granted.push(result.granted);
          return result;
        },
        release(input: ReleaseInput) {
          recorder.released.push(input.tokens);
          const call = stub.release(input);
          recorder.pending.push(call);
          return call;
        },
      };
    },
  } as unknown as DurableObjectNamespace<WorkspaceLimiter>;
  return recorder;
}

const sum = (values: number[]) => values.reduce((total, value) => total + value, 0);

function rulesFor(key: string, workspace: { ratePerSecond: number; burst: number }): RateLimitRule[] {
  return [
    { name: "workspace", ...workspace },
    { name: `key:${key}`, ratePerSecond: workspace.ratePerSecond * 10, burst: workspace.burst * 10 },
  ];
}

describe("RateLimiter", () => {
  it("admits within the limit with the policy, remaining and reset of the tightest rule", async () => {
    const limiter = new RateLimiter(env.WORKSPACE_LIMITER);
    const id = workspaceId("basic");
    const rules = rulesFor("key_a", { ratePerSecond: 1, burst: 3 });
    const decision = await limiter.check(id, rules);
    expect(decision).toMatchObject({
      allowed: true,
      policy: { name: "workspace", limit: 3, windowSeconds: 3 },
      retryAfterSeconds: 0,
    });
    expect(decision.remaining).toBe(2);
    expect(decision.resetSeconds).toBeGreaterThanOrEqual(1);
    expect(decision.resetSeconds).toBeLessThanOrEqual(3);
  });

  it("refuses past the burst with Retry-After ≥ 1 s and answers 429 locally until it passes", async () => {
    const recorder = recordingNamespace();
    const limiter = new RateLimiter(recorder.namespace);
    const id = workspaceId("refuse");
    const rules: RateLimitRule[] = [{ name: "workspace", ratePerSecond: 0.5, burst: 2 }];
    expect((await limiter.check(id, rules)).allowed).toBe(true);
    expect((await limiter.check(id, rules)).allowed).toBe(true);
    const refusal = await limiter.check(id, rules);
    expect(refusal).toMatchObject({
      allowed: false,
      policy: { name: "workspace", limit: 2, windowSeconds: 4 },
      remaining: 0,
    });
    expect(refusal.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(refusal.retryAfterSeconds).toBeLessThanOrEqual(2);
    const callsAfterRefusal = recorder.granted.length;
    for (let attempt = 0; attempt < 20; attempt++) {
      const again = await limiter.check(id, rules);
      expect(again.allowed).toBe(false);
      expect(again.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    }
    expect(recorder.granted.length).toBe(callsAfterRefusal);
  });

  it("asks the object again once the retry-after has passed, and recovers", async () => {
    const recorder = recordingNamespace();
    const limiter = new RateLimiter(recorder.namespace);
    const id = workspaceId("recover");
    const rules: RateLimitRule[] = [{ name: "workspace", ratePerSecond: 20, burst: 1 }];
    expect((await limiter.check(id, rules)).allowed).toBe(true);
    const refusal = await limiter.check(id, rules);
    expect(refusal.allowed).toBe(false);
    expect(refusal.retryAfterSeconds).toBe(1);
    await scheduler.wait(80);
    expect((await limiter.check(id, rules)).allowed).toBe(true);
    expect(recorder.granted).toEqual([1, 0, 1]);
  });

  it("spends leases locally: 200 requests at a generous rate take a handful of object calls", async () => {
    const recorder = recordingNamespace();
    const limiter = new RateLimiter(recorder.namespace);
    const id = workspaceId("lease");
    const rules = rulesFor("key_a", { ratePerSecond: 1_000, burst: 1_000 });
    for (let request = 0; request < 200; request++) expect((await limiter.check(id, rules)).allowed).toBe(true);
    expect(recorder.granted.length).toBeLessThanOrEqual(10);
  });

  it("coalesces concurrent refills into one call in flight", async () => {
    const recorder = recordingNamespace();
    const limiter = new RateLimiter(recorder.namespace);
    const id = workspaceId("coalesce");
    const rules = rulesFor("key_a", { ratePerSecond: 1_000, burst: 1_000 });
    const decisions = await Promise.all(Array.from({ length: 100 }, () => limiter.check(id, rules)));
    expect(decisions.every((decision) => decision.allowed)).toBe(true);
    expect(recorder.granted.length).toBeLessThanOrEqual(3);
    expect(sum(recorder.granted)).toBeGreaterThanOrEqual(100);
  });

  it("returns an expired lease's unused tokens, so nothing leased is lost or spent twice", async () => {
    const recorder = recordingNamespace();
    const limiter = new RateLimiter(recorder.namespace, { leaseTtlMs: 30 });
    const id = workspaceId("expire");
    const rules: RateLimitRule[] = [{ name: "workspace", ratePerSecond: 400, burst: 100 }];
    let admitted = 0;
    for (let round = 0; round < 3; round++) {
      const decisions = await Promise.all(Array.from({ length: 10 }, () => limiter.check(id, rules)));
      admitted += decisions.filter((decision) => decision.allowed).length;
      await scheduler.wait(50);
    }
    await limiter.check(id, rules);
    admitted += 1;
    await Promise.all(recorder.pending);
    expect(recorder.released.length).toBeGreaterThanOrEqual(1);
    expect(sum(recorder.released)).toBeGreaterThan(0);
    // The open lease still holds what was neither admitted nor returned.
    const held = sum(recorder.granted) - sum(recorder.released) - admitted;
    expect(held).toBeGreaterThanOrEqual(0);
    expect(held).toBeLessThanOrEqual(100);
    expect(admitted).toBe(31);
  });

  it("never over-admits 500 concurrent requests across five isolates: ≤ burst + rate·t, ≥ burst", async () => {
    const id = workspaceId("isolates");
    const limiters = Array.from({ length: 5 }, () => new RateLimiter(env.WORKSPACE_LIMITER));
    const burst = 40;
    const ratePerSecond = 40;
    const startedAtMs = Date.now();
    const decisions = await Promise.all(
      Array.from({ length: 500 }, (_, index) =>
        limiters[index % 5].check(id, rulesFor(`key_${index % 3}`, { ratePerSecond, burst })),
      ),
    );
    const elapsedSeconds = (Date.now() - startedAtMs) / 1000;
    const admitted = decisions.filter((decision) => decision.allowed).length;
    expect(admitted).toBeLessThanOrEqual(Math.floor(burst + ratePerSecond * elapsedSeconds));
    expect(admitted).toBeGreaterThanOrEqual(burst);
    for (const refused of decisions.filter((decision) => !decision.allowed)) {
      expect(refused.retryAfterSeconds).toBeGreaterThanOrEqual(1);
      expect(refused.remaining).toBe(0);
    }
  });

  it("never over-admits a sustained flood from four isolates, and admits close to the rate", async () => {
    const id = workspaceId("flood");
    const recorders = Array.from({ length: 4 }, () => recordingNamespace());
    const limiters = recorders.map((recorder) => new RateLimiter(recorder.namespace, { leaseTtlMs: 200 }));
    const burst = 20;
    const ratePerSecond = 100;
    const startedAtMs = Date.now();
    const decisions: RateLimitDecision[] = [];
    const client = async (index: number) => {
      while (Date.now() - startedAtMs < 1_000) {
        decisions.push(await limiters[index % 4].check(id, rulesFor(`key_${index % 2}`, { ratePerSecond, burst })));
        await scheduler.wait(1);
      }
    };
    await Promise.all(Array.from({ length: 40 }, (_, index) => client(index)));
    const elapsedSeconds = (Date.now() - startedAtMs) / 1000;
    const admitted = decisions.filter((decision) => decision.allowed).length;
    const bound = Math.floor(burst + ratePerSecond * elapsedSeconds);
    expect(admitted).toBeLessThanOrEqual(bound);
    expect(admitted).toBeGreaterThanOrEqual(Math.floor(burst + 0.5 * ratePerSecond * elapsedSeconds));
    // Local refusals and leases keep most requests away from the object.
    const objectCalls = sum(recorders.map((recorder) => recorder.granted.length));
    expect(objectCalls).toBeLessThan(decisions.length / 2);
  });

  it("lets another key's bucket limit without touching the shared workspace bucket", async () => {
    const limiter = new RateLimiter(env.WORKSPACE_LIMITER);
    const id = workspaceId("keys");
    const tightKey: RateLimitRule[] = [
      { name: "workspace", ratePerSecond: 0.001, burst: 10 },
      { name: "key:key_tight", ratePerSecond: 0.001, burst: 2 },
    ];
    const looseKey: RateLimitRule[] = [
      { name: "workspace", ratePerSecond: 0.001, burst: 10 },
      { name: "key:key_loose", ratePerSecond: 0.001, burst: 100 },
    ];
    const tight = [];
    for (let request = 0; request < 4; request++) tight.push(await limiter.check(id, tightKey));
    expect(tight.map((decision) => decision.allowed)).toEqual([true, true, false, false]);
    expect(tight[2].policy.name).toBe("key:key_tight");
    const loose = [];
    for (let request = 0; request < 10; request++) loose.push(await limiter.check(id, looseKey));
    expect(loose.filter((decision) => decision.allowed)).toHaveLength(8);
    expect(loose[9].policy.name).toBe("workspace");
  });

  it("keeps each workspace's buckets apart when callers hand the same rules array for several", async () => {
    // The middleware keeps one rules array per limits object, which several workspaces' requests may share.
    const limiter = new RateLimiter(env.WORKSPACE_LIMITER);
    const rules: RateLimitRule[] = [
      { name: "workspace", ratePerSecond: 0.001, burst: 2 },
      { name: "key:key_shared", ratePerSecond: 0.001, burst: 2 },
    ];
    const [first, second] = [workspaceId("shared_rules_a"), workspaceId("shared_rules_b")];
    const admitted = async (id: string) => {
      const decisions = [];
      for (let request = 0; request < 3; request++) decisions.push((await limiter.check(id, rules)).allowed);
      return decisions;
    };
    expect(await admitted(first)).toEqual([true, true, false]);
    expect(await admitted(second)).toEqual([true, true, false]);
  });

  it("surfaces an unreachable object to the caller and tries again on the next request", async () => {
    const recorder = recordingNamespace();
    const limiter = new RateLimiter(recorder.namespace);
    const id = workspaceId("failure");
    const rules: RateLimitRule[] = [{ name: "workspace", ratePerSecond: 10, burst: 10 }];
    recorder.fail = true;
    const failures = await Promise.allSettled([limiter.check(id, rules), limiter.check(id, rules)]);
    expect(failures.map((result) => result.status)).toEqual(["rejected", "rejected"]);
    recorder.fail = false;
    expect((await limiter.check(id, rules)).allowed).toBe(true);
  });
});
