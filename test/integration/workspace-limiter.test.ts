import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { RateLimitRule } from "../../src/limits/types.ts";

/** The WorkspaceLimiter Durable Object through its RPC stub, as isolates call it. */

function limiter(label: string) {
  return env.WORKSPACE_LIMITER.getByName(`ws_limiter_test_${label}_${crypto.randomUUID()}`);
}

describe("WorkspaceLimiter RPC", () => {
  it("still answers readiness pings", async () => {
    expect(await limiter("ping").ping()).toMatchObject({ ok: true, object: "WorkspaceLimiter" });
  });

  it("never over-admits 500 concurrent acquisitions: at most burst + rate·t, at least burst", async () => {
    const stub = limiter("concurrent");
    const rules: RateLimitRule[] = [{ name: "workspace", ratePerSecond: 20, burst: 50 }];
    const startedAtMs = Date.now();
    const results = await Promise.all(Array.from({ length: 500 }, () => stub.acquire({ rules, tokens: 1 })));
    const elapsedSeconds = (Date.now() - startedAtMs) / 1000;
    const admitted = results.reduce((sum, result) => sum + result.granted, 0);
    expect(admitted).toBeGreaterThanOrEqual(50);
    expect(admitted).toBeLessThanOrEqual(Math.floor(50 + 20 * elapsedSeconds));
    for (const refused of results.filter((result) => result.granted === 0)) {
      expect(refused.retryAfterMs).toBeGreaterThan(0);
      expect(refused.retryAfterMs).toBeLessThanOrEqual(50);
    }
  });

  it("never over-admits a sustained flood of multi-token requests over two rules", async () => {
    const stub = limiter("flood");
    const rules: RateLimitRule[] = [
      { name: "workspace", ratePerSecond: 100, burst: 20 },
      { name: "key:key_a", ratePerSecond: 200, burst: 30 },
    ];
    const startedAtMs = Date.now();
    let admitted = 0;
    const worker = async () => {
      while (Date.now() - startedAtMs < 600) {
        const result = await stub.acquire({ rules, tokens: 3 });
        admitted += result.granted;
      }
    };
    await Promise.all(Array.from({ length: 25 }, worker));
    const elapsedSeconds = (Date.now() - startedAtMs) / 1000;
    expect(admitted).toBeLessThanOrEqual(Math.floor(20 + 100 * elapsedSeconds));
    // The flood runs for ≥ 0.6 s against a 100/s bucket: well past the burst must have been admitted.
    expect(admitted).toBeGreaterThanOrEqual(20 + 30);
  });

  it("gives released tokens back to every bucket of the rule set", async () => {
    const stub = limiter("release");
    const rules: RateLimitRule[] = [{ name: "workspace", ratePerSecond: 0.001, burst: 10 }];
    expect((await stub.acquire({ rules, tokens: 10 })).granted).toBe(10);
    await stub.release({ rules, tokens: 4 });
    expect((await stub.acquire({ rules, tokens: 10 })).granted).toBe(4);
  });

  it("keeps spent tokens spent across eviction", async () => {
    const stub = limiter("evict-buckets");
    // One token per ~17 minutes: nothing refills during the test.
    const rules: RateLimitRule[] = [{ name: "workspace", ratePerSecond: 0.001, burst: 5 }];
    expect((await stub.acquire({ rules, tokens: 3 })).granted).toBe(3);
    await evictDurableObject(stub);
    const afterEviction = await stub.acquire({ rules, tokens: 5 });
    expect(afterEviction.granted).toBe(2);
    await evictDurableObject(stub);
    const empty = await stub.acquire({ rules, tokens: 1 });
    expect(empty.granted).toBe(0);
    expect(empty.retryAfterMs).toBeGreaterThan(900_000);
  });

  it("keeps strikes and blocks across eviction", async () => {
    const stub = limiter("evict-strikes");
    const policy = { threshold: 3, windowMs: 60_000, cooldownMs: 120_000 };
    await stub.recordStrike({ key: "auth:a", ...policy });
    await stub.recordStrike({ key: "auth:a", ...policy });
    for (let strike = 0; strike < 3; strike++) await stub.recordStrike({ key: "auth:b", ...policy });
    await evictDurableObject(stub);
    const untilMs = await stub.blockedUntil("auth:b");
    expect(untilMs).not.toBeNull();
    expect(untilMs! - Date.now()).toBeGreaterThan(100_000);
    // auth:a kept its two strikes: the third blocks it.
    expect(await stub.recordStrike({ key: "auth:a", ...policy })).toMatchObject({
      strikes: 3,
      blocked: true,
      newlyBlocked: true,
    });
    // And the object rebuilt its state from SQLite, not from a surviving instance.
    const rows = await runInDurableObject(stub, (_instance, state) =>
      state.storage.sql.exec<{ key: string }>("SELECT key FROM limiter_strikes ORDER BY key").toArray(),
    );
    expect(rows.map((row) => row.key)).toEqual(["auth:a", "auth:b"]);
  });

  it("blocks at the threshold and unblocks after the cool-down on the caller's clock", async () => {
    const stub = limiter("cooldown");
    const policy = { threshold: 2, windowMs: 10_000, cooldownMs: 30_000 };
    const t0 = 1_900_000_000_000;
    expect(await stub.recordStrike({ key: "probe:key_x", ...policy, nowMs: t0 })).toMatchObject({ blocked: false });
    expect(await stub.recordStrike({ key: "probe:key_x", ...policy, nowMs: t0 + 1_000 })).toEqual({
      strikes: 2,
      blocked: true,
      blockedUntilMs: t0 + 31_000,
      newlyBlocked: true,
    });
    expect(await stub.blockedUntil("probe:key_x", t0 + 30_999)).toBe(t0 + 31_000);
    expect(await stub.blockedUntil("probe:key_x", t0 + 31_000)).toBeNull();
    expect(await stub.recordStrike({ key: "probe:key_x", ...policy, nowMs: t0 + 31_000 })).toMatchObject({
      strikes: 1,
      blocked: false,
    });
  });
});
