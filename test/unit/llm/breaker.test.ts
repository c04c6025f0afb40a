import { describe, expect, it } from "vitest";
import {
  acquireTrial,
  CLOSED,
  DEFAULT_BREAKER_POLICY,
  recordOutcomes,
  stateNameOf,
  viewOf,
} from "../../../src/llm/breaker-core.ts";

const fail = (atMs: number) => ({ atMs, ok: false, error: "http_503" });
const ok = (atMs: number) => ({ atMs, ok: true });

describe("circuit breaker", () => {
  it("opens after 5 consecutive failures, not 4", () => {
    const four = recordOutcomes(CLOSED, [1, 2, 3, 4].map(fail), 4);
    expect(viewOf(four, 4).state).toBe("closed");
    const five = recordOutcomes(four, [fail(5)], 5);
    expect(viewOf(five, 5)).toMatchObject({ state: "open", consecutiveFailures: 5, retryAtMs: 30_005 });
  });

  it("opens at ≥50% failures over ≥10 calls within 60 s, without 5 in a row", () => {
    const outcomes = Array.from({ length: 10 }, (_, index) => (index % 2 === 0 ? fail(index) : ok(index)));
    expect(viewOf(recordOutcomes(CLOSED, outcomes.slice(0, 9), 9), 9).state).toBe("closed");
    const state = recordOutcomes(CLOSED, outcomes, 10);
    expect(viewOf(state, 10)).toMatchObject({ state: "open", errorRate: 0.5, calls: 10 });
    // The same calls spread over more than 60 s do not open it.
    const spread = Array.from({ length: 10 }, (_, index) =>
      index % 2 === 0 ? fail(index * 10_000) : ok(index * 10_000),
    );
    expect(viewOf(recordOutcomes(CLOSED, spread, 90_000), 90_000).state).toBe("closed");
  });

  it("names the state on the hot path exactly as the full view does", () => {
    const open = recordOutcomes(CLOSED, [1, 2, 3, 4, 5].map(fail), 5);
    const cases: [typeof CLOSED, number, string][] = [
      [CLOSED, 0, "closed"],
      [recordOutcomes(CLOSED, [1, 2, 3, 4].map(fail), 4), 4, "closed"],
      [open, 29_000, "open"],
      [open, 30_005, "half_open"],
    ];
    for (const [state, nowMs, expected] of cases) {
      expect(stateNameOf(state, nowMs)).toBe(expected);
      expect(viewOf(state, nowMs).state).toBe(expected);
    }
  });

  it("is half-open after 30 s with exactly one trial; a success closes it, a failure re-opens it", () => {
    const open = recordOutcomes(CLOSED, [1, 2, 3, 4, 5].map(fail), 5);
    expect(acquireTrial(open, 29_000).granted).toBe(false);
    const trial = acquireTrial(open, 30_005);
    expect(trial.granted).toBe(true);
    expect(acquireTrial(trial.state, 30_006).granted).toBe(false);
    expect(viewOf(recordOutcomes(trial.state, [ok(30_100)], 30_100), 30_100).state).toBe("closed");
    const reopened = recordOutcomes(trial.state, [{ ...fail(30_100), trial: true as const }], 30_100);
    expect(viewOf(reopened, 30_200)).toMatchObject({ state: "open", retryAtMs: 60_100 });
    // A trial that never reports back frees the slot after its timeout.
    expect(acquireTrial(trial.state, 30_005 + DEFAULT_BREAKER_POLICY.trialTimeoutMs).granted).toBe(true);
  });

  it("a successful trial closes a breaker the failure ratio opened, though its failures are still in the window", () => {
    // 4 successes and 6 failures in 10 s: the ratio opens it (never 5 failures in a row).
    const outcomes = [ok(1), fail(2), ok(3), fail(4), ok(5), fail(6), ok(7), fail(8), fail(9), fail(10)];
    const open = recordOutcomes(CLOSED, outcomes, 10);
    expect(viewOf(open, 10)).toMatchObject({ state: "open", consecutiveFailures: 3 });
    const trial = acquireTrial(open, 30_010);
    expect(trial.granted).toBe(true);
    // 20 s later those failures are still within the minute, but the trial proved the provider works again.
    const closed = recordOutcomes(trial.state, [ok(30_100)], 30_100);
    expect(viewOf(closed, 30_100)).toMatchObject({ state: "closed", consecutiveFailures: 0 });
    expect(acquireTrial(closed, 30_200).granted).toBe(true);
    // Failures after the recovery count afresh: one does not reopen it.
    expect(viewOf(recordOutcomes(closed, [fail(30_300)], 30_300), 30_300).state).toBe("closed");
  });

  it("keeps the newest 200 outcomes of the last 60 s and leaves the state it was given untouched", () => {
    // 150 old successes (outside the window), then 250 recent ones one at a time, as the hot path records them.
    let state = recordOutcomes(
      CLOSED,
      Array.from({ length: 150 }, (_, index) => ok(index)),
      150,
    );
    for (let atMs = 100_000; atMs < 100_250; atMs++) {
      const before = state;
      const kept = before.outcomes.length;
      state = recordOutcomes(before, [ok(atMs)], atMs);
      expect(before.outcomes).toHaveLength(kept);
    }
    expect(state.outcomes).toHaveLength(200);
    expect(state.outcomes[0]).toEqual([100_050, 1]);
    expect(state.outcomes.at(-1)).toEqual([100_249, 1]);
    // 25 failures in the next 100 calls: the ratio counts them over the bounded 200, 12.5 %, so it stays closed.
    const failing = recordOutcomes(
      state,
      Array.from({ length: 100 }, (_, index) => (index % 4 === 0 ? fail(100_300 + index) : ok(100_300 + index))),
      100_400,
    );
    expect(viewOf(failing, 100_400)).toMatchObject({ state: "closed", calls: 200, errorRate: 0.125 });
  });

  it("places an outcome that arrives late by its time: an older success neither closes it nor breaks a later run", () => {
    const open = recordOutcomes(CLOSED, [10, 11, 12, 13, 14].map(fail), 14);
    // Answered at 9, before the opening at 14: the breaker stays open, the success counted in the window.
    const late = recordOutcomes(open, [ok(9)], 15);
    expect(viewOf(late, 15)).toMatchObject({ state: "open", openedAtMs: 14, calls: 6, consecutiveFailures: 5 });
    expect(late.outcomes.map(([atMs]) => atMs)).toEqual([9, 10, 11, 12, 13, 14]);
    // Closed: four failures, then a success from before them; the fifth failure still opens it.
    const four = recordOutcomes(CLOSED, [20, 21, 22, 23].map(fail), 23);
    const afterLate = recordOutcomes(four, [ok(19)], 24);
    expect(viewOf(afterLate, 24)).toMatchObject({ state: "closed", consecutiveFailures: 4 });
    expect(viewOf(recordOutcomes(afterLate, [fail(25)], 25), 25).state).toBe("open");
    // A success after the opening (a trial, a call tried while every target was open) still closes it.
    expect(viewOf(recordOutcomes(open, [ok(30_100)], 30_100), 30_100).state).toBe("closed");
  });

  it("takes as the half-open trial's failure only the trial's own", () => {
    const open = recordOutcomes(CLOSED, [1, 2, 3, 4, 5].map(fail), 5);
    const trial = acquireTrial(open, 30_005);
    // Another call's failure (one tried anyway, or sent long before and arriving late) is not the trial's: the
    // trial stays out, the breaker does not reopen from that call's time, and no second trial is granted.
    const other = recordOutcomes(trial.state, [fail(20_000), fail(30_008)], 30_010);
    expect(other).toMatchObject({ trialStartedAtMs: 30_005, openedAtMs: 5 });
    expect(acquireTrial(other, 30_020).granted).toBe(false);
    // The trial's own failure reopens it from then, whatever the clocks of the object and the isolate say.
    const failed = recordOutcomes(other, [{ ...fail(30_004), trial: true as const }], 30_050);
    expect(viewOf(failed, 30_060)).toMatchObject({ state: "open", retryAtMs: 60_004 });
    expect(failed.trialStartedAtMs).toBeNull();
  });

  it("does not count again the failures of calls sent before a success closed the breaker", () => {
    const open = recordOutcomes(CLOSED, [1, 2, 3, 4, 5].map(fail), 5);
    const closed = recordOutcomes(acquireTrial(open, 30_005).state, [ok(30_100)], 30_100);
    // Five calls sent during the outage fail after the trial found the provider well: the breaker stays closed.
    const stragglers = [30_200, 30_201, 30_202, 30_203, 30_204].map((atMs) => ({ ...fail(atMs), startedAtMs: 2 }));
    expect(viewOf(recordOutcomes(closed, stragglers, 30_204), 30_204)).toMatchObject({
      state: "closed",
      consecutiveFailures: 0,
    });
    // Calls sent since count as ever.
    const fresh = [30_200, 30_201, 30_202, 30_203, 30_204].map((atMs) => ({ ...fail(atMs), startedAtMs: 30_150 }));
    expect(viewOf(recordOutcomes(closed, fresh, 30_204), 30_204).state).toBe("open");
  });

  it("is closed only by a success sent since it opened, not by a slow answer to a call sent before", () => {
    const open = recordOutcomes(CLOSED, [10, 11, 12, 13, 14].map(fail), 14);
    const slow = recordOutcomes(open, [{ ...ok(20), startedAtMs: 9 }], 20);
    expect(viewOf(slow, 20)).toMatchObject({ state: "open", openedAtMs: 14, calls: 6 });
    expect(viewOf(recordOutcomes(open, [{ ...ok(20), startedAtMs: 15 }], 20), 20).state).toBe("closed");
  });

  describe("a streamed half-open trial", () => {
    const open = recordOutcomes(CLOSED, [1, 2, 3, 4, 5].map(fail), 5);
    const held = acquireTrial(open, 30_005).state;
    /** The trial's stream sent its first delta at `atMs`. */
    const proved = (atMs: number, startedAtMs = 30_005) => ({
      atMs,
      ok: true,
      startedAtMs,
      trialProved: true as const,
    });

    it("is closed by the stream's first delta, which is no call: its end is counted once", () => {
      const answering = recordOutcomes(held, [proved(30_100)], 30_100);
      // Other calls use the target again while the trial still streams; the window still holds the five failures.
      expect(viewOf(answering, 30_100)).toMatchObject({ state: "closed", calls: 5, consecutiveFailures: 0 });
      expect(acquireTrial(answering, 30_200).granted).toBe(true);
      // The stream ends well, dated when it began answering: one call.
      const ended = recordOutcomes(answering, [{ ...ok(30_100), startedAtMs: 30_005 }], 35_000);
      expect(viewOf(ended, 35_000)).toMatchObject({ state: "closed", calls: 6, consecutiveFailures: 0 });
      expect(viewOf(ended, 35_000).errorRate).toBeCloseTo(5 / 6);
    });

    it("counts a trial stream that breaks mid-answer as one failure, not a success and a failure", () => {
      const answering = recordOutcomes(held, [proved(30_100)], 30_100);
      // Its end is an ordinary call's now (not the trial's): counted, not dropped as a straggler of the outage.
      const broke = recordOutcomes(answering, [{ ...fail(32_000), startedAtMs: 30_005 }], 32_000);
      expect(viewOf(broke, 32_000)).toMatchObject({
        state: "closed",
        calls: 6,
        errorRate: 1,
        consecutiveFailures: 1,
        lastError: "http_503",
      });
      // The usual rules go on from there: four more failures in a row open it again.
      const four = [33_000, 33_001, 33_002, 33_003].map((atMs) => ({ ...fail(atMs), startedAtMs: atMs - 10 }));
      expect(viewOf(recordOutcomes(broke, four, 33_003), 33_003).state).toBe("open");
    });

    it("counts one call when the first delta and the stream's end reach it in one batch, in either order", () => {
      // Both are dated when the stream began answering (the object sorts a batch by that time).
      const batch = [proved(30_100), { ...ok(30_100), startedAtMs: 30_005 }];
      expect(viewOf(recordOutcomes(held, batch, 31_000), 31_000)).toMatchObject({ state: "closed", calls: 6 });
      const reversed = [...batch].reverse();
      expect(viewOf(recordOutcomes(held, reversed, 31_000), 31_000)).toMatchObject({ state: "closed", calls: 6 });
    });

    it("changes nothing on a closed breaker, nor when stale", () => {
      // Closed already (another call's success): no reset of its run of failures, and no call counted.
      const three = recordOutcomes(CLOSED, [1, 2, 3].map(fail), 3);
      expect(recordOutcomes(three, [proved(10, 4)], 10)).toMatchObject({ open: false, consecutiveFailures: 3 });
      expect(viewOf(recordOutcomes(three, [proved(10, 4)], 10), 10).calls).toBe(3);
      // Sent before this opening (a trial of an earlier outage), or answering before a failure recorded since.
      expect(viewOf(recordOutcomes(held, [proved(30_100, 4)], 30_100), 30_100).state).toBe("half_open");
      const laterFailure = recordOutcomes(held, [{ ...fail(30_200), startedAtMs: 30_150 }], 30_200);
      expect(viewOf(recordOutcomes(laterFailure, [proved(30_100)], 30_300), 30_300).state).toBe("half_open");
    });
  });
});
