import { describe, expect, it } from "vitest";
import { Logger } from "../../../src/lib/logger.ts";
import { BreakerClient, type BreakerRemote } from "../../../src/llm/breaker-client.ts";
import { CLOSED, recordOutcomes } from "../../../src/llm/breaker-core.ts";
import type { AdapterCall, AdapterResult, ProviderAdapter } from "../../../src/llm/provider.ts";
import { ProviderError } from "../../../src/llm/provider.ts";
import { Router } from "../../../src/llm/router.ts";
import type { ProviderErrorData, RouterDeps } from "../../../src/llm/router-deps.ts";
import { LatencyTracker, type Strategy } from "../../../src/llm/routing.ts";

/**
 * The router's choice of targets against the breaker and the latency averages, with fake deps and a fake clock:
 * the half-open trial's lease, a retry or failover decided against a target whose trial another call holds, and
 * failed attempts in the latency averages.
 */

const messages = [{ role: "user" as const, content: "Summarise the report." }];
const quiet = new Logger({ level: "error", sampleRate: 1 });
const A = "simulated:a";
const B = "simulated:b";

function answer(content: string): AdapterResult {
  return {
    message: { role: "assistant", content },
    finish_reason: "stop",
    usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 },
  };
}

/** A fake provider whose models answer as `byModel` says; it counts the calls each model gets. */
function fakeAdapter(byModel: Record<string, (call: AdapterCall, count: number) => Promise<AdapterResult>>) {
  const counts: Record<string, number> = {};
  const adapter: ProviderAdapter = {
    name: "simulated",
    simulated: true,
    complete: (call) => {
      counts[call.model] = (counts[call.model] ?? 0) + 1;
      return byModel[call.model](call, counts[call.model]);
    },
    stream: () => {
      throw new Error("not streamed here");
    },
  };
  return { adapter, counts };
}

function routerWith(options: {
  adapter: ProviderAdapter;
  breaker: BreakerClient;
  clock: { nowMs: number };
  strategy?: Strategy;
  latency?: LatencyTracker;
  attemptTimeoutMs?: number;
  maxAttemptsPerTarget?: number;
}) {
  const errors: ProviderErrorData[] = [];
  const fallbacks: { from_model: string; to_model: string }[] = [];
  const waits: number[] = [];
  const deps: RouterDeps = {
    adapters: new Map([["simulated", options.adapter]]),
    settings: async () => ({
      strategy: options.strategy ?? "fallback",
      chain: [
        { provider: "simulated", model: "a" },
        { provider: "simulated", model: "b" },
      ],
      budgets: null,
    }),
    breaker: options.breaker.gate(),
    budgets: { reserve: async () => ({ hold: undefined }), settle: async () => {} },
    usage: { record: async () => {} },
    events: {
      providerError: (_context, data) => errors.push(data),
      fallback: (_context, data) => fallbacks.push(data),
    },
    logger: quiet,
    now: () => options.clock.nowMs,
    sleep: async (ms) => {
      waits.push(ms);
      options.clock.nowMs += ms;
    },
    random: () => 0.5,
    latency: options.latency ?? new LatencyTracker(),
    ...(options.attemptTimeoutMs !== undefined ? { attemptTimeoutMs: options.attemptTimeoutMs } : {}),
    ...(options.maxAttemptsPerTarget !== undefined ? { maxAttemptsPerTarget: options.maxAttemptsPerTarget } : {}),
  };
  return { router: new Router(deps), errors, fallbacks, waits };
}

/** Opens the target's breaker at `atMs` in the client's copy, as five failures there do. */
function openAt(breaker: BreakerClient, key: string, atMs: number): void {
  for (let index = 0; index < 5; index++) breaker.record(key, false, "http_503", undefined, { answeredAtMs: atMs });
}

const context = (chargeKey: string) => ({ workspaceId: "ws_choice", chargeKey });

describe("the half-open trial's lease", () => {
  it("is not given out again while the first trial's attempt may still run (attempt timeout above 60 s)", async () => {
    const clock = { nowMs: 1_000_000 };
    const breaker = new BreakerClient(undefined, { now: () => clock.nowMs });
    openAt(breaker, A, clock.nowMs);
    clock.nowMs += 30_001;
    let answerFirst: (result: AdapterResult) => void = () => {};
    const slowAnswer = new Promise<AdapterResult>((resolve) => {
      answerFirst = resolve;
    });
    const { adapter, counts } = fakeAdapter({
      // The trial: a reasoning model that takes its time (its attempt may run 120 s).
      a: (_call, count) => (count === 1 ? slowAnswer : Promise.resolve(answer("a again"))),
      b: async () => answer("from b"),
    });
    const { router } = routerWith({ adapter, breaker, clock, attemptTimeoutMs: 120_000 });
    const first = router.chat({ messages }, context("trial-1"));
    while (counts.a !== 1) await new Promise((resolve) => setTimeout(resolve, 1));
    // 61 s into the trial's attempt, well within its 120 s: the trial is still out, so the next call passes over a.
    clock.nowMs += 61_000;
    const second = await router.chat({ messages }, context("trial-2"));
    expect(second.model).toBe("b");
    expect(counts.a).toBe(1);
    answerFirst(answer("thought it through"));
    expect((await first).model).toBe("a");
  });

  it("is asked for as long as the attempt may take, plus slack, bounded by the call's deadline", async () => {
    /** The lease one call asks the shared breaker for a's trial, a's breaker half-open there. */
    async function leaseAsked(deadlineInMs: number | undefined): Promise<number | undefined> {
      const clock = { nowMs: 1_000_000 };
      const leases: (number | undefined)[] = [];
      const opened = recordOutcomes(
        CLOSED,
        [1, 2, 3, 4, 5].map((atMs) => ({ atMs, ok: false })),
        5,
      );
      const remote: BreakerRemote = {
        sync: async () => opened,
        tryTrial: async (_provider, _model, leaseMs) => {
          leases.push(leaseMs);
          return { granted: true, state: { ...opened, trialStartedAtMs: clock.nowMs } };
        },
      };
      const breaker = new BreakerClient(remote, { now: () => clock.nowMs });
      const { adapter } = fakeAdapter({ a: async () => answer("a"), b: async () => answer("b") });
      const { router } = routerWith({ adapter, breaker, clock, attemptTimeoutMs: 120_000 });
      const deadline = deadlineInMs === undefined ? {} : { deadlineMs: clock.nowMs + deadlineInMs };
      expect((await router.chat({ messages }, { ...context("lease-asked"), ...deadline })).model).toBe("a");
      expect(leases).toHaveLength(1);
      return leases[0];
    }
    // The router's default deadline (180 s) leaves the attempt its whole 120 s: leased 120 s and the slack.
    const whole = await leaseAsked(undefined);
    expect(whole).toBeGreaterThan(120_000);
    expect(whole).toBeLessThanOrEqual(180_000);
    // A call with 10 s left asks for no more than its 10 s and the slack.
    expect(await leaseAsked(10_000)).toBeLessThanOrEqual(20_000);
  });
});

describe("a retry or failover decision against a target whose trial another call holds", () => {
  it("waits out a long Retry-After on the target it has, rather than fail over to one it may not try", async () => {
    const clock = { nowMs: 2_000_000 };
    const breaker = new BreakerClient(undefined, { now: () => clock.nowMs });
    openAt(breaker, B, clock.nowMs);
    clock.nowMs += 30_001;
    // Another call holds b's one trial.
    expect(await breaker.tryTrial(B)).toBe(true);
    const { adapter, counts } = fakeAdapter({
      a: async (_call, count) => {
        if (count === 1) throw new ProviderError("http", "slow down", { status: 429, retryAfterMs: 20_000 });
        return answer("a after its wait");
      },
      b: async () => answer("b"),
    });
    const { router, errors, fallbacks, waits } = routerWith({ adapter, breaker, clock });
    const result = await router.chat({ messages }, context("held-retry-after"));
    expect(result).toMatchObject({ model: "a", attempts: 2 });
    expect(waits).toEqual([20_000]);
    expect(counts.b).toBeUndefined();
    expect(errors).toMatchObject([{ model: "a", retry_count: 0, fallback_triggered: false }]);
    expect(fallbacks).toEqual([]);
  });

  it("does not tell a fallback triggered towards a target it then passes over", async () => {
    const clock = { nowMs: 3_000_000 };
    const breaker = new BreakerClient(undefined, { now: () => clock.nowMs });
    openAt(breaker, B, clock.nowMs);
    clock.nowMs += 30_001;
    expect(await breaker.tryTrial(B)).toBe(true);
    const { adapter, counts } = fakeAdapter({
      a: async () => {
        throw new ProviderError("http", "bad gateway", { status: 502 });
      },
      b: async () => answer("b"),
    });
    const { router, errors, fallbacks } = routerWith({ adapter, breaker, clock, maxAttemptsPerTarget: 2 });
    await expect(router.chat({ messages }, context("held-no-fallback"))).rejects.toMatchObject({
      kind: "all_providers_failed",
    });
    expect(counts.b).toBeUndefined();
    expect(errors.map((event) => [event.model, event.fallback_triggered])).toEqual([
      ["a", false],
      ["a", false],
    ]);
    expect(fallbacks).toEqual([]);
  });

  it("still fails over to the next target when its trial is free, and that call holds it", async () => {
    const clock = { nowMs: 4_000_000 };
    const breaker = new BreakerClient(undefined, { now: () => clock.nowMs });
    openAt(breaker, B, clock.nowMs);
    clock.nowMs += 30_001;
    const { adapter } = fakeAdapter({
      a: async () => {
        throw new ProviderError("http", "slow down", { status: 429, retryAfterMs: 20_000 });
      },
      b: async () => answer("b, the trial"),
    });
    const { router, errors, fallbacks, waits } = routerWith({ adapter, breaker, clock });
    const result = await router.chat({ messages }, context("free-trial"));
    expect(result).toMatchObject({ model: "b", attempts: 2 });
    expect(waits).toEqual([]);
    expect(errors).toMatchObject([{ model: "a", fallback_triggered: true }]);
    expect(fallbacks).toMatchObject([{ from_model: "a", to_model: "b" }]);
    // The trial's success closed b's breaker.
    expect(breaker.view(B).state).toBe("closed");
  });
});

describe("the latency strategy's averages", () => {
  it("count an attempt that timed out as at least its elapsed time, so a hanging target stops coming first", async () => {
    const clock = { nowMs: 5_000_000 };
    const breaker = new BreakerClient(undefined, { now: () => clock.nowMs });
    const latency = new LatencyTracker();
    latency.observe(B, 800);
    const { adapter, counts } = fakeAdapter({
      a: async () => {
        clock.nowMs += 60_000;
        throw new ProviderError("timeout", "the provider did not answer in time");
      },
      b: async () => answer("b"),
    });
    const { router } = routerWith({ adapter, breaker, clock, strategy: "latency", latency, maxAttemptsPerTarget: 1 });
    expect((await router.chat({ messages }, context("latency-1"))).model).toBe("b");
    expect(latency.averageMs(A)).toBeGreaterThanOrEqual(60_000);
    // The next call tries b first: a is no longer taken for unmeasured (first) while its breaker stays closed.
    expect((await router.chat({ messages }, context("latency-2"))).model).toBe("b");
    expect(counts.a).toBe(1);
    expect(breaker.view(A).state).toBe("closed");
  });

  it("never read a fast error as a fast target: it lowers no average and measures no unmeasured target", async () => {
    const clock = { nowMs: 6_000_000 };
    const breaker = new BreakerClient(undefined, { now: () => clock.nowMs });
    const latency = new LatencyTracker();
    latency.observe(A, 900);
    const { adapter } = fakeAdapter({
      a: async () => {
        clock.nowMs += 40;
        throw new ProviderError("http", "internal", { status: 500 });
      },
      b: async () => {
        clock.nowMs += 30;
        throw new ProviderError("http", "internal", { status: 500 });
      },
    });
    const { router } = routerWith({ adapter, breaker, clock, strategy: "latency", latency, maxAttemptsPerTarget: 1 });
    await expect(router.chat({ messages }, context("latency-fast-errors"))).rejects.toMatchObject({
      kind: "all_providers_failed",
    });
    expect(latency.averageMs(A)).toBe(900);
    expect(latency.averageMs(B)).toBeUndefined();
  });

  it("raise the average by a failure slower than it (a 504 after 30 s)", async () => {
    const clock = { nowMs: 7_000_000 };
    const breaker = new BreakerClient(undefined, { now: () => clock.nowMs });
    const latency = new LatencyTracker();
    latency.observe(A, 1_000);
    latency.observe(B, 2_000);
    const { adapter, counts } = fakeAdapter({
      a: async () => {
        clock.nowMs += 30_000;
        throw new ProviderError("http", "gateway timeout", { status: 504 });
      },
      b: async () => answer("b"),
    });
    const { router } = routerWith({ adapter, breaker, clock, strategy: "latency", latency, maxAttemptsPerTarget: 1 });
    expect((await router.chat({ messages }, context("latency-slow-error"))).model).toBe("b");
    expect(counts.a).toBe(1);
    // 1 s moved a fifth of the way to 30 s, as a success that slow would.
    expect(latency.averageMs(A)).toBe(1_000 + 0.2 * 29_000);
  });
});
