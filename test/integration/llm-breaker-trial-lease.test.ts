import { describe, expect, it } from "vitest";
import type { BreakerPolicy } from "../../src/llm/breaker-core.ts";
import { breakerClientFor } from "../../src/llm/index.ts";
import { llmConfig } from "../support/llm.ts";

/**
 * The half-open trial's lease through the production wiring (breakerClientFor, the ProviderBreaker object): two
 * clients stand in for two isolates. The lease an isolate asks for its trial reaches the object, which holds the
 * slot for it, past the policy's trialTimeoutMs, rather than grant another isolate a second trial.
 */

const policy: BreakerPolicy = {
  consecutiveFailures: 5,
  minCalls: 10,
  failureRatio: 0.5,
  windowMs: 60_000,
  openMs: 50,
  trialTimeoutMs: 200,
};

const wait = (ms: number) => new Promise((wake) => setTimeout(wake, ms));

/** A breaker opened by one isolate, and half-open once its openMs has passed. */
async function halfOpenBreaker() {
  const key = `openai:o3-lease-${crypto.randomUUID().slice(0, 8)}`;
  const isolateA = breakerClientFor(llmConfig(), policy);
  const isolateB = breakerClientFor(llmConfig(), policy);
  for (let index = 0; index < 5; index++) isolateA.record(key, false, "http_503");
  await isolateA.flush();
  await wait(policy.openMs + 20);
  await isolateB.known([key]);
  return { key, isolateA, isolateB };
}

describe("the half-open trial's lease, in the shared breaker", () => {
  it("holds the slot for the lease the trial's isolate asked, past trialTimeoutMs", async () => {
    const { key, isolateA, isolateB } = await halfOpenBreaker();
    expect(await isolateA.tryTrial(key, undefined, 130_000)).toBe(true);
    await isolateA.flush();
    await wait(policy.trialTimeoutMs + 50);
    // Another isolate's call, past the trialTimeoutMs but within the lease: the trial is still out.
    expect(await isolateB.tryTrial(key)).toBe(false);
  });

  it("without a lease, frees the slot after trialTimeoutMs, as for a trial whose isolate died", async () => {
    const { key, isolateA, isolateB } = await halfOpenBreaker();
    expect(await isolateA.tryTrial(key)).toBe(true);
    await isolateA.flush();
    await wait(policy.trialTimeoutMs + 50);
    expect(await isolateB.tryTrial(key)).toBe(true);
  });
});
