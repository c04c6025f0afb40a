import { describe, expect, it } from "vitest";
import { BreakerClient, type BreakerRemote } from "../../../src/llm/breaker-client.ts";
import {
  acquireTrial,
  CLOSED,
  DEFAULT_BREAKER_POLICY,
  MAX_TRIAL_LEASE_MS,
  recordOutcomes,
} from "../../../src/llm/breaker-core.ts";

/**
 * The half-open trial's slot is leased for as long as the trial's attempt may run (its caller says how long), and
 * freed after that lease when no outcome comes (its isolate died).
 */

const fail = (atMs: number) => ({ atMs, ok: false, error: "http_503" });
const open = recordOutcomes(CLOSED, [1, 2, 3, 4, 5].map(fail), 5);
const HALF_OPEN_AT_MS = 30_005;

describe("the half-open trial's lease", () => {
  it("holds the slot for the lease asked, past trialTimeoutMs, and frees it after", () => {
    const trial = acquireTrial(open, HALF_OPEN_AT_MS, DEFAULT_BREAKER_POLICY, 130_000);
    expect(trial.granted).toBe(true);
    expect(acquireTrial(trial.state, HALF_OPEN_AT_MS + 61_000).granted).toBe(false);
    expect(acquireTrial(trial.state, HALF_OPEN_AT_MS + 129_999).granted).toBe(false);
    // The holder's isolate died: the slot is free once its lease is up.
    expect(acquireTrial(trial.state, HALF_OPEN_AT_MS + 130_000).granted).toBe(true);
  });

  it("is trialTimeoutMs without a lease asked (a row stored before leases, an older isolate), and never shorter", () => {
    const trial = acquireTrial(open, HALF_OPEN_AT_MS);
    const timeoutMs = DEFAULT_BREAKER_POLICY.trialTimeoutMs;
    expect(acquireTrial(trial.state, HALF_OPEN_AT_MS + timeoutMs - 1).granted).toBe(false);
    expect(acquireTrial(trial.state, HALF_OPEN_AT_MS + timeoutMs).granted).toBe(true);
    const short = acquireTrial(open, HALF_OPEN_AT_MS, DEFAULT_BREAKER_POLICY, 1_000);
    expect(acquireTrial(short.state, HALF_OPEN_AT_MS + timeoutMs - 1).granted).toBe(false);
  });

  it("is bounded: a lease asked beyond MAX_TRIAL_LEASE_MS holds the slot no longer", () => {
    const trial = acquireTrial(open, HALF_OPEN_AT_MS, DEFAULT_BREAKER_POLICY, Number.MAX_SAFE_INTEGER);
    expect(acquireTrial(trial.state, HALF_OPEN_AT_MS + MAX_TRIAL_LEASE_MS - 1).granted).toBe(false);
    expect(acquireTrial(trial.state, HALF_OPEN_AT_MS + MAX_TRIAL_LEASE_MS).granted).toBe(true);
  });

  it("is asked of the shared breaker with the trial, and held by the local copy when the object does not answer", async () => {
    let nowMs = HALF_OPEN_AT_MS;
    let objectDown = false;
    const leasesAsked: (number | undefined)[] = [];
    const remote: BreakerRemote = {
      sync: async () => open,
      tryTrial: async (_provider, _model, leaseMs) => {
        if (objectDown) throw new Error("the object is down");
        leasesAsked.push(leaseMs);
        return { granted: true, state: { ...open, trialStartedAtMs: nowMs } };
      },
    };
    const client = new BreakerClient(remote, { now: () => nowMs });
    await client.known(["openai:o3"]);
    expect(await client.tryTrial("openai:o3", undefined, 200_000)).toBe(true);
    expect(leasesAsked).toEqual([200_000]);

    // The object down: the local copy grants the trial, and holds it for the lease asked.
    objectDown = true;
    const local = new BreakerClient(remote, { now: () => nowMs });
    await local.known(["openai:o3"]);
    expect(await local.tryTrial("openai:o3", undefined, 200_000)).toBe(true);
    nowMs += 100_000;
    expect(await local.tryTrial("openai:o3")).toBe(false);
    nowMs += 100_000;
    expect(await local.tryTrial("openai:o3")).toBe(true);
  });
});
