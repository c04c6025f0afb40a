import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { LimiterCore } from "../../src/limits/limiter-core.ts";
import { LIMITER_SCHEMA_VERSION } from "../../src/limits/limiter-store.ts";

/**
 * LimiterCore driven directly over a real Durable Object's SQLite storage,
 * with an injected clock. Each test uses its own object; a second core over
 * the same storage stands in for the object after a restart (empty caches).
 */

/** Storage is usable only inside the object's own context, so the test body runs there. */
function inObject(name: string, body: (storage: DurableObjectStorage) => void): Promise<void> {
  const stub = env.WORKSPACE_LIMITER.getByName(`core-test:${name}:${crypto.randomUUID()}`);
  return runInDurableObject(stub, (_instance, state) => body(state.storage));
}

const workspace = { name: "workspace", ratePerSecond: 10, burst: 5 };
const key = { name: "key:key_1", ratePerSecond: 2, burst: 3 };

describe("LimiterCore buckets", () => {
  it("grants the smallest whole balance across all rules, atomically", () =>
    inObject("min", (storage) => {
      const core = new LimiterCore(storage);
      const first = core.acquire({ rules: [workspace, key], tokens: 10, nowMs: 0 });
      expect(first).toEqual({
        granted: 3,
        retryAfterMs: 0,
        buckets: [
          { name: "workspace", limit: 5, remaining: 2, resetMs: 300 },
          { name: "key:key_1", limit: 3, remaining: 0, resetMs: 1_500 },
        ],
      });
      // The key bucket is empty, so nothing is taken from the workspace bucket either.
      const second = core.acquire({ rules: [workspace, key], tokens: 1, nowMs: 0 });
      expect(second.granted).toBe(0);
      expect(second.retryAfterMs).toBe(500);
      expect(second.buckets[0].remaining).toBe(2);
      // Another key shares the workspace bucket, which still has 2.
      const other = core.acquire({ rules: [workspace, { ...key, name: "key:key_2" }], tokens: 3, nowMs: 0 });
      expect(other.granted).toBe(2);
    }));

  it("answers the wait until every bucket has a token", () =>
    inObject("retry", (storage) => {
      const core = new LimiterCore(storage);
      core.acquire({ rules: [workspace, key], tokens: 3, nowMs: 0 });
      core.acquire({ rules: [workspace], tokens: 2, nowMs: 0 });
      // workspace needs 100 ms for a token, the key 500 ms: the answer is the later one.
      expect(core.acquire({ rules: [workspace, key], tokens: 1, nowMs: 0 }).retryAfterMs).toBe(500);
      expect(core.acquire({ rules: [workspace, key], tokens: 1, nowMs: 499 }).granted).toBe(0);
      expect(core.acquire({ rules: [workspace, key], tokens: 1, nowMs: 500 }).granted).toBe(1);
    }));

  it("refills with elapsed time and caps a bucket whose burst shrank", () =>
    inObject("refill", (storage) => {
      const core = new LimiterCore(storage);
      core.acquire({ rules: [workspace], tokens: 5, nowMs: 1_000 });
      expect(core.acquire({ rules: [workspace], tokens: 5, nowMs: 1_250 }).granted).toBe(2);
      const plan = { name: "plan", ratePerSecond: 1, burst: 50 };
      core.acquire({ rules: [plan], tokens: 1, nowMs: 0 });
      const shrunk = core.acquire({ rules: [{ ...plan, burst: 4 }], tokens: 10, nowMs: 0 });
      expect(shrunk.granted).toBe(4);
      // Growing the burst back does not bring the old balance back.
      expect(core.acquire({ rules: [plan], tokens: 10, nowMs: 0 }).granted).toBe(0);
    }));

  it("takes leased tokens back, never above burst", () =>
    inObject("release", (storage) => {
      const core = new LimiterCore(storage);
      core.acquire({ rules: [workspace, key], tokens: 3, nowMs: 0 });
      const back = core.release({ rules: [workspace, key], tokens: 2, nowMs: 0 });
      expect(back.buckets.map((bucket) => bucket.remaining)).toEqual([4, 2]);
      const capped = core.release({ rules: [workspace, key], tokens: 10, nowMs: 0 });
      expect(capped.buckets.map((bucket) => bucket.remaining)).toEqual([5, 3]);
      expect(core.acquire({ rules: [workspace], tokens: 100, nowMs: 0 }).granted).toBe(5);
    }));

  it("keeps state in SQLite: a fresh core over the same storage sees spent tokens", () =>
    inObject("persist", (storage) => {
      new LimiterCore(storage).acquire({ rules: [workspace], tokens: 4, nowMs: 0 });
      const restarted = new LimiterCore(storage);
      expect(restarted.acquire({ rules: [workspace], tokens: 5, nowMs: 0 }).granted).toBe(1);
      const rows = storage.sql.exec("SELECT name FROM limiter_buckets").toArray();
      expect(rows).toEqual([{ name: "workspace" }]);
    }));

  it("forgets buckets long full, and they come back full", () =>
    inObject("prune", (storage) => {
      const core = new LimiterCore(storage);
      core.acquire({ rules: [workspace], tokens: 5, nowMs: 0 });
      core.acquire({ rules: [key], tokens: 1, nowMs: 3_600_000 });
      const names = storage.sql.exec<{ name: string }>("SELECT name FROM limiter_buckets").toArray();
      expect(names).toEqual([{ name: "key:key_1" }]);
      expect(core.acquire({ rules: [workspace], tokens: 9, nowMs: 3_600_000 }).granted).toBe(5);
    }));

  it("refuses malformed calls instead of guessing", () =>
    inObject("validate", (storage) => {
      const core = new LimiterCore(storage);
      expect(() => core.acquire({ rules: [], tokens: 1, nowMs: 0 })).toThrow(RangeError);
      expect(() => core.acquire({ rules: [workspace, workspace], tokens: 1, nowMs: 0 })).toThrow(/twice/);
      expect(() => core.acquire({ rules: [workspace], tokens: 0, nowMs: 0 })).toThrow(RangeError);
      expect(() => core.acquire({ rules: [{ ...workspace, ratePerSecond: -1 }], tokens: 1, nowMs: 0 })).toThrow(
        RangeError,
      );
    }));
});

describe("LimiterCore strikes", () => {
  const policy = { threshold: 3, windowMs: 60_000, cooldownMs: 300_000 };

  it("block a key at the threshold and unblock it after the cool-down", () =>
    inObject("strikes", (storage) => {
      const core = new LimiterCore(storage);
      const key = "auth:203.0.113.7";
      expect(core.recordStrike({ key, ...policy, nowMs: 1_000 })).toEqual({
        strikes: 1,
        blocked: false,
        blockedUntilMs: null,
        newlyBlocked: false,
      });
      core.recordStrike({ key, ...policy, nowMs: 2_000 });
      expect(core.blockedUntil(key, 2_000)).toBeNull();
      expect(core.recordStrike({ key, ...policy, nowMs: 3_000 })).toEqual({
        strikes: 3,
        blocked: true,
        blockedUntilMs: 303_000,
        newlyBlocked: true,
      });
      expect(core.recordStrike({ key, ...policy, nowMs: 4_000 })).toMatchObject({ blocked: true, newlyBlocked: false });
      expect(core.blockedUntil(key, 302_999)).toBe(303_000);
      expect(core.blockedUntil(key, 303_000)).toBeNull();
      expect(core.blockedUntil("auth:198.51.100.1", 4_000)).toBeNull();
      expect(core.recordStrike({ key, ...policy, nowMs: 303_000 })).toMatchObject({ strikes: 1, blocked: false });
    }));

  it("persist strikes and blocks in SQLite", () =>
    inObject("strikes-persist", (storage) => {
      const first = new LimiterCore(storage);
      first.recordStrike({ key: "a", ...policy, nowMs: 0 });
      first.recordStrike({ key: "b", ...policy, nowMs: 0 });
      first.recordStrike({ key: "b", ...policy, nowMs: 0 });
      first.recordStrike({ key: "b", ...policy, nowMs: 0 });
      const restarted = new LimiterCore(storage);
      expect(restarted.blockedUntil("b", 1)).toBe(300_000);
      expect(restarted.recordStrike({ key: "a", ...policy, nowMs: 1 }).strikes).toBe(2);
    }));

  it("forget spent strike rows", () =>
    inObject("strikes-prune", (storage) => {
      const core = new LimiterCore(storage);
      core.recordStrike({ key: "old", ...policy, nowMs: 0 });
      core.recordStrike({ key: "new", ...policy, nowMs: 120_000 });
      const keys = storage.sql.exec<{ key: string }>("SELECT key FROM limiter_strikes").toArray();
      expect(keys).toEqual([{ key: "new" }]);
    }));
});

describe("LimiterCore schema", () => {
  it("records its version and migrates only once", () =>
    inObject("schema", (storage) => {
      const core = new LimiterCore(storage);
      expect(core.schemaVersion).toBe(LIMITER_SCHEMA_VERSION);
      core.acquire({ rules: [workspace], tokens: 2, nowMs: 0 });
      // A second construction (a restart) must not recreate tables or lose rows.
      expect(new LimiterCore(storage).acquire({ rules: [workspace], tokens: 5, nowMs: 0 }).granted).toBe(3);
      const tables = storage.sql
        .exec<{ name: string }>(
          "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'limiter_%' ORDER BY name",
        )
        .toArray()
        .map((row) => row.name);
      // Later schema steps add tables (admission, budgets): these three must be among them.
      expect(tables).toEqual(expect.arrayContaining(["limiter_buckets", "limiter_meta", "limiter_strikes"]));
    }));

  it("refuses a schema newer than the code", () =>
    inObject("schema-newer", (storage) => {
      new LimiterCore(storage);
      storage.sql.exec("UPDATE limiter_meta SET value = ? WHERE key = 'schema_version'", LIMITER_SCHEMA_VERSION + 1);
      expect(() => new LimiterCore(storage)).toThrow(/newer than this code/);
    }));
});
