import { describe, expect, it } from "vitest";
import { CLOSED, type Outcome, recordOutcomes, viewOf } from "../../../src/llm/breaker-core.ts";

/**
 * Failures that arrive after a newer success (another isolate's outcomes, batched up to a second late): they take
 * their place in the window, and so in the error rate, but do not extend the run of consecutive failures.
 */

const fail = (atMs: number): Outcome => ({ atMs, ok: false, error: "http_503" });
const ok = (atMs: number): Outcome => ({ atMs, ok: true });

describe("a failure answered before the latest recorded success", () => {
  it("does not count toward the consecutive failures: five of them do not open a provider that answers", () => {
    let state = recordOutcomes(CLOSED, [ok(10_000)], 10_000);
    // Five failures answered at 9.0–9.4 s, each arriving in a batch of its own after the success at 10 s.
    for (const atMs of [9_000, 9_100, 9_200, 9_300, 9_400]) state = recordOutcomes(state, [fail(atMs)], 10_500);
    expect(viewOf(state, 10_500)).toMatchObject({ state: "closed", consecutiveFailures: 0, calls: 6 });
    // They are in the window, by their time, and in its error rate.
    expect(state.outcomes).toEqual([
      [9_000, 0],
      [9_100, 0],
      [9_200, 0],
      [9_300, 0],
      [9_400, 0],
      [10_000, 1],
    ]);
    expect(viewOf(state, 10_500).errorRate).toBeCloseTo(5 / 6);
  });

  it("still counts failures answered after that success, and the ratio rule still sees the late ones", () => {
    let state = recordOutcomes(CLOSED, [ok(10_000)], 10_000);
    state = recordOutcomes(state, [fail(9_000), fail(9_500)], 10_100);
    state = recordOutcomes(state, [fail(10_200)], 10_200);
    expect(viewOf(state, 10_200)).toMatchObject({ state: "closed", consecutiveFailures: 1 });
    // Late failures complete a window of ≥10 calls at ≥50%: the ratio opens it, as the spec asks.
    const late = [1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 7_000].map(fail);
    const opened = recordOutcomes(state, late, 10_300);
    expect(viewOf(opened, 10_300)).toMatchObject({ state: "open", calls: 11, consecutiveFailures: 1 });
  });

  it("is still the open breaker's half-open trial failure when it is the trial's", () => {
    const open = recordOutcomes(CLOSED, [1, 2, 3, 4, 5].map(fail), 5);
    // The trial sent at 30 s answered 503 at 30.1 s; another call's success at 30.2 s (tried while every target was
    // open) closed it first. The trial's failure is older than that success: it does not reopen the breaker.
    const closed = recordOutcomes(open, [{ ...ok(30_200), startedAtMs: 30_150 }], 30_200);
    const after = recordOutcomes(closed, [{ ...fail(30_100), startedAtMs: 30_005, trial: true }], 30_300);
    expect(viewOf(after, 30_300)).toMatchObject({ state: "closed", consecutiveFailures: 0 });
  });
});
