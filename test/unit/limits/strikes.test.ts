import { describe, expect, it } from "vitest";
import { activeBlock, NO_STRIKES, type StrikeState, strike, strikeExpiryMs } from "../../../src/limits/strikes.ts";

const policy = { threshold: 3, windowMs: 10_000, cooldownMs: 60_000 };

function strikeAt(state: StrikeState, ...timesMs: number[]) {
  let outcome = strike(state, policy, timesMs[0]);
  for (const timeMs of timesMs.slice(1)) outcome = strike(outcome.state, policy, timeMs);
  return outcome;
}

describe("strikes", () => {
  it("block at the threshold within the window, once", () => {
    const two = strikeAt(NO_STRIKES, 0, 1_000);
    expect(two).toMatchObject({ strikes: 2, blocked: false, newlyBlocked: false, blockedUntilMs: null });
    const third = strike(two.state, policy, 2_000);
    expect(third).toMatchObject({ strikes: 3, blocked: true, newlyBlocked: true, blockedUntilMs: 62_000 });
    const fourth = strike(third.state, policy, 3_000);
    expect(fourth).toMatchObject({ blocked: true, newlyBlocked: false, blockedUntilMs: 62_000 });
  });

  it("slide: strikes older than the window no longer count", () => {
    const outcome = strikeAt(NO_STRIKES, 0, 5_000, 10_000, 14_000);
    // At 14 s the window holds 5 s, 10 s and 14 s: the one at 0 s slid out, so the third only lands at 14 s.
    expect(outcome).toMatchObject({ strikes: 3, newlyBlocked: true, blockedUntilMs: 74_000 });
    const spaced = strikeAt(NO_STRIKES, 0, 6_000, 12_000, 18_000);
    expect(spaced).toMatchObject({ strikes: 2, blocked: false });
  });

  it("do not extend a block, and end it after the cool-down with a fresh count", () => {
    const blocked = strikeAt(NO_STRIKES, 0, 1, 2);
    expect(activeBlock(blocked.state, 60_001)).toBe(60_002);
    const during = strikeAt(blocked.state, 30_000, 59_000);
    expect(during.blockedUntilMs).toBe(60_002);
    expect(activeBlock(during.state, 60_002)).toBeNull();
    const after = strike(during.state, policy, 60_002);
    expect(after).toMatchObject({ strikes: 1, blocked: false, blockedUntilMs: null });
  });

  it("expire when both the block and the last strike's window are over", () => {
    expect(strikeExpiryMs(strikeAt(NO_STRIKES, 100).state, policy)).toBe(10_100);
    expect(strikeExpiryMs(strikeAt(NO_STRIKES, 0, 1, 2).state, policy)).toBe(60_002);
  });
});
