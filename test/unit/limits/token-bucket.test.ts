import { describe, expect, it } from "vitest";
import {
  assertBucketConfig,
  fullBucket,
  give,
  msUntilFull,
  msUntilTokens,
  refill,
  take,
  wholeTokens,
} from "../../../src/limits/token-bucket.ts";

const config = { ratePerSecond: 10, burst: 5 };

describe("token bucket math", () => {
  it("starts full and refills at the rate, capped at burst", () => {
    const empty = take(fullBucket(config, 1_000), 5);
    expect(empty.tokens).toBe(0);
    expect(refill(empty, config, 1_250).tokens).toBeCloseTo(2.5, 12);
    expect(refill(empty, config, 10_000).tokens).toBe(5);
  });

  it("keeps fractions, so many small refills add up to one large one (no drift)", () => {
    let state = take(fullBucket({ ratePerSecond: 3, burst: 1_000 }, 0), 1_000);
    for (let nowMs = 7; nowMs <= 70_000; nowMs += 7) state = refill(state, { ratePerSecond: 3, burst: 1_000 }, nowMs);
    expect(state.tokens).toBeCloseTo(210, 9);
    expect(wholeTokens(state)).toBe(210);
  });

  it("counts a token refilled through float sums such as 0.1 + 0.2 as whole", () => {
    const tenthPerMs = { ratePerSecond: 100, burst: 10 };
    let state = { tokens: 0, updatedAtMs: 0 };
    for (let nowMs = 1; nowMs <= 10; nowMs++) state = refill(state, tenthPerMs, nowMs);
    expect(wholeTokens(state)).toBe(1);
    expect(msUntilTokens(state, tenthPerMs, 1)).toBe(0);
  });

  it("does not credit time twice when the clock steps back", () => {
    const empty = take(fullBucket(config, 1_000), 5);
    const later = refill(empty, config, 1_100);
    const back = refill(later, config, 1_050);
    expect(back).toEqual(later);
    expect(refill(back, config, 1_200).tokens).toBeCloseTo(2, 12);
  });

  it("caps stored tokens when the burst shrinks", () => {
    const state = fullBucket({ ratePerSecond: 10, burst: 100 }, 0);
    expect(refill(state, { ratePerSecond: 10, burst: 3 }, 0).tokens).toBe(3);
  });

  it("answers the wait until N tokens, rounded up, and Infinity beyond burst", () => {
    const state = { tokens: 0.5, updatedAtMs: 0 };
    expect(msUntilTokens(state, config, 1)).toBe(50);
    expect(msUntilTokens(state, config, 3)).toBe(250);
    expect(msUntilTokens({ tokens: 0.25, updatedAtMs: 0 }, { ratePerSecond: 3, burst: 5 }, 1)).toBe(250);
    expect(msUntilTokens(state, config, 6)).toBe(Number.POSITIVE_INFINITY);
    expect(msUntilFull(state, config)).toBe(450);
    // Waiting exactly the answer is enough.
    const waited = refill(state, config, msUntilTokens(state, config, 3));
    expect(wholeTokens(waited)).toBe(3);
  });

  it("gives tokens back without exceeding burst", () => {
    expect(give({ tokens: 4, updatedAtMs: 0 }, config, 3).tokens).toBe(5);
    expect(give({ tokens: 1, updatedAtMs: 0 }, config, 3).tokens).toBe(4);
  });

  it("refuses configs that cannot limit", () => {
    expect(() => assertBucketConfig({ ratePerSecond: 0, burst: 1 })).toThrow(RangeError);
    expect(() => assertBucketConfig({ ratePerSecond: 1, burst: 0.5 })).toThrow(RangeError);
    expect(() => assertBucketConfig({ ratePerSecond: Number.NaN, burst: 1 })).toThrow(RangeError);
    expect(() => assertBucketConfig({ ratePerSecond: 0.01, burst: 1 })).not.toThrow();
  });
});
