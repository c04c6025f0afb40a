import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { BOUND_CHECK_EVERY_WRITES, BreakerBook } from "../../src/llm/breaker-book.ts";
import {
  BreakerClient,
  type BreakerRemote,
  type Outcome,
  TRIAL_ANSWER_TIMEOUT_MS,
} from "../../src/llm/breaker-client.ts";
import { type BreakerState, CLOSED } from "../../src/llm/breaker-core.ts";

/**
 * The breaker's state is shared across isolates through the ProviderBreaker
 * Durable Object: two BreakerClients stand in for two isolates, each with its
 * own local copy, both talking to the real object.
 */

function remote(): BreakerRemote {
  return {
    sync: async (provider, model, outcomes) =>
      (await env.PROVIDER_BREAKER.getByName(provider).sync(model, outcomes)) as unknown as BreakerState,
    tryTrial: async (provider, model) =>
      (await env.PROVIDER_BREAKER.getByName(provider).tryTrial(model)) as unknown as {
        granted: boolean;
        state: BreakerState;
      },
  };
}

describe("breaker shared across isolates", () => {
  it("five failures in one isolate open it there at once, and in another after its next sync; the hot path makes no call", async () => {
    const key = `openai:shared-${crypto.randomUUID().slice(0, 8)}`;
    let calls = 0;
    const counting = (inner: BreakerRemote): BreakerRemote => ({
      sync: (...args) => {
        calls++;
        return inner.sync(...args);
      },
      tryTrial: (...args) => {
        calls++;
        return inner.tryTrial(...args);
      },
    });
    let nowMs = Date.now();
    const isolateA = new BreakerClient(remote(), { now: () => nowMs });
    const isolateB = new BreakerClient(counting(remote()), { now: () => nowMs });
    expect(isolateB.state(key)).toBe("closed");
    await isolateB.flush();
    const before = calls;
    // Within the sync interval B answers from its copy, with no call.
    for (let index = 0; index < 100; index++) expect(isolateB.state(key)).toBe("closed");
    expect(calls).toBe(before);

    for (let index = 0; index < 5; index++) isolateA.record(key, false, "http_503");
    expect(isolateA.state(key)).toBe("open");
    await isolateA.flush();
    // B still has its copy until the sync interval passes, then refreshes in the background.
    nowMs += 1_100;
    isolateB.state(key);
    await isolateB.flush();
    expect(isolateB.state(key)).toBe("open");
    expect(isolateB.view(key)).toMatchObject({ consecutiveFailures: 5, lastError: "http_503" });
  });

  it("grants the half-open trial to one isolate only", async () => {
    const key = `anthropic:trial-${crypto.randomUUID().slice(0, 8)}`;
    const [provider, model] = key.split(":");
    const opened = Date.now() - 31_000;
    await env.PROVIDER_BREAKER.getByName(provider).sync(
      model,
      [1, 2, 3, 4, 5].map((index) => ({ atMs: opened + index, ok: false })),
    );
    const isolateA = new BreakerClient(remote());
    const isolateB = new BreakerClient(remote());
    await Promise.all([isolateA.flush(), isolateB.flush()]);
    isolateA.state(key);
    isolateB.state(key);
    await Promise.all([isolateA.flush(), isolateB.flush()]);
    expect(isolateA.state(key)).toBe("half_open");
    const granted = await Promise.all([isolateA.tryTrial(key), isolateB.tryTrial(key)]);
    expect(granted.filter(Boolean)).toHaveLength(1);
  });

  it("a streamed trial's first delta closes the breaker in the object, and so in another isolate, counting no call", async () => {
    const key = `openai:proved-${crypto.randomUUID().slice(0, 8)}`;
    const [provider, model] = key.split(":");
    const opened = Date.now() - 31_000;
    await env.PROVIDER_BREAKER.getByName(provider).sync(
      model,
      [1, 2, 3, 4, 5].map((index) => ({ atMs: opened + index, ok: false })),
    );
    let nowMs = Date.now();
    const isolateA = new BreakerClient(remote(), { now: () => nowMs });
    const isolateB = new BreakerClient(remote(), { now: () => nowMs });
    await Promise.all([isolateA.known([key]), isolateB.known([key])]);
    const sentAtMs = nowMs;
    expect(await isolateA.tryTrial(key)).toBe(true);
    expect(await isolateB.tryTrial(key)).toBe(false);
    // A's trial, a stream, sends its first delta and streams on.
    isolateA.gate().proveTrial(key, { startedAtMs: sentAtMs, answeredAtMs: sentAtMs });
    expect(isolateA.state(key)).toBe("closed");
    await isolateA.flush();
    const [shared] = await env.PROVIDER_BREAKER.getByName(provider).snapshot(undefined, [model]);
    expect(shared?.view).toMatchObject({ state: "closed", calls: 5, consecutiveFailures: 0 });
    // B sees it closed at its next sync, and sends its calls to the target again.
    nowMs += 1_100;
    isolateB.state(key);
    await isolateB.flush();
    expect(isolateB.state(key)).toBe("closed");
  });
});

describe("outcomes that arrive late", () => {
  it("a success batched in one isolate before another opened the breaker does not close it, nor hide its failures", async () => {
    const model = `stale-${crypto.randomUUID().slice(0, 8)}`;
    const key = `openai:${model}`;
    // A's calls are answered half a second before B's fail (the clock in workerd stands still between I/O).
    const isolateA = new BreakerClient(remote(), { now: () => Date.now() - 500 });
    const isolateB = new BreakerClient(remote());
    const heldByA: Promise<unknown>[] = [];
    // A's first outcome goes at once; its next success is held for the periodic sync, up to a second.
    isolateA.gate((work) => heldByA.push(work)).record(key, true);
    await Promise.all(heldByA.splice(0));
    isolateA.gate((work) => heldByA.push(work)).record(key, true);
    // Then B's calls fail five times in a row: the breaker opens, everywhere.
    const heldByB: Promise<unknown>[] = [];
    for (let call = 0; call < 5; call++) isolateB.gate((work) => heldByB.push(work)).record(key, false, "http_503");
    await Promise.all(heldByB);
    // A's held success arrives after the opening: it came before, and says nothing of the provider since.
    await Promise.all(heldByA);
    const [shared] = await env.PROVIDER_BREAKER.getByName("openai").snapshot(undefined, [model]);
    expect(shared?.view).toMatchObject({ state: "open", calls: 7, consecutiveFailures: 5 });
    expect(shared?.view.errorRate).toBeCloseTo(5 / 7);
    expect(isolateA.state(key)).toBe("open");
  });
});

describe("an object slow to answer the trial", () => {
  it("decides locally after TRIAL_ANSWER_TIMEOUT_MS, and hands back a trial the object grants later", async () => {
    const key = `openai:late-trial-${crypto.randomUUID().slice(0, 8)}`;
    const opened = Date.now() - 31_000;
    const synced: Outcome[][] = [];
    const lateAnswer = new Promise<{ granted: boolean; state: BreakerState }>((resolve) =>
      setTimeout(() => resolve({ granted: true, state: CLOSED }), TRIAL_ANSWER_TIMEOUT_MS + 200),
    );
    const slow: BreakerRemote = {
      sync: async (_provider, _model, outcomes) => {
        synced.push(outcomes);
        return { ...CLOSED, open: true, openedAtMs: opened, consecutiveFailures: 5 };
      },
      tryTrial: () => lateAnswer,
    };
    const client = new BreakerClient(slow);
    client.state(key);
    await client.flush();
    const held: Promise<unknown>[] = [];
    const startedMs = Date.now();
    expect(await client.gate((work) => held.push(work)).tryTrial(key)).toBe(true);
    expect(Date.now() - startedMs).toBeLessThan(TRIAL_ANSWER_TIMEOUT_MS + 150);
    await Promise.all(held);
    expect(synced.at(-1)).toMatchObject([{ ok: false, trialReleased: true }]);
  });
});

describe("an object down for a while", () => {
  it("keeps the newest outcomes for it, so failures after many successes reach it when it is back", async () => {
    const model = `down-${crypto.randomUUID().slice(0, 8)}`;
    const key = `openai:${model}`;
    let down = true;
    const inner = remote();
    const flaky: BreakerRemote = {
      sync: (...args) => (down ? Promise.reject(new Error("Durable Object is overloaded")) : inner.sync(...args)),
      tryTrial: (...args) =>
        down ? Promise.reject(new Error("Durable Object is overloaded")) : inner.tryTrial(...args),
    };
    let nowMs = Date.now() - 30_000;
    const client = new BreakerClient(flaky, { now: () => nowMs });
    // A busy isolate: 300 answers while the object is down, then five failures in a row.
    for (let call = 0; call < 300; call++) {
      client.record(key, true);
      nowMs += 50;
    }
    for (let call = 0; call < 5; call++) client.record(key, false, "http_503");
    expect(client.state(key)).toBe("open");
    await client.flush();
    // The object is back: what this isolate saw reaches it, and its copy stays open.
    down = false;
    nowMs = Date.now();
    await client.flush();
    expect(client.state(key)).toBe("open");
    const [shared] = await env.PROVIDER_BREAKER.getByName("openai").snapshot(undefined, [model]);
    expect(shared?.view).toMatchObject({ state: "open", consecutiveFailures: 5 });
  });
});

describe("background syncs and request ownership", () => {
  it("sends a model's first outcome at once, so a model called once is known to the object (GET /api/v1/providers)", async () => {
    const model = `once-${crypto.randomUUID().slice(0, 8)}`;
    const key = `openai:${model}`;
    const client = new BreakerClient(remote());
    // The call's state() check syncs (nothing to send yet) and is answered before the call ends.
    client.state(key);
    await client.flush();
    const held: Promise<unknown>[] = [];
    client.gate((work) => held.push(work)).record(key, true);
    expect(held).toHaveLength(1);
    await Promise.all(held);
    const snapshot = await env.PROVIDER_BREAKER.getByName("openai").snapshot();
    expect(snapshot.find((entry) => entry.model === model)?.view).toMatchObject({ state: "closed", calls: 1 });
    // Steady successes after it are batched: the first request that holds one keeps a flush of them alive,
    // due a sync interval after the last sync, so a burst's last successes reach the object though no call follows.
    const later: Promise<unknown>[] = [];
    for (let call = 0; call < 5; call++) client.gate((work) => later.push(work)).record(key, true);
    expect(later).toHaveLength(1);
    await Promise.all(later);
    const flushed = await env.PROVIDER_BREAKER.getByName("openai").snapshot();
    expect(flushed.find((entry) => entry.model === model)?.view).toMatchObject({ state: "closed", calls: 6 });
  });

  it("tells the object a failure's later successes too, so its error rate is not the failure's alone", async () => {
    const model = `burst-${crypto.randomUUID().slice(0, 8)}`;
    const key = `openai:${model}`;
    const client = new BreakerClient(remote());
    const held: Promise<unknown>[] = [];
    client.gate((work) => held.push(work)).record(key, false, "http_503");
    await Promise.all(held);
    // Six answers within the sync interval after the failure reached the object, and then no call.
    for (let call = 0; call < 6; call++) client.gate((work) => held.push(work)).record(key, true);
    await Promise.all(held);
    const snapshot = await env.PROVIDER_BREAKER.getByName("openai").snapshot();
    const view = snapshot.find((entry) => entry.model === model)?.view;
    expect(view).toMatchObject({ state: "closed", calls: 7 });
    expect(view?.errorRate).toBeCloseTo(1 / 7);
  });

  it("hands a running sync to no second request; outcomes recorded meanwhile go in the same sync's next round", async () => {
    const key = `openai:owner-${crypto.randomUUID().slice(0, 8)}`;
    const sent: number[] = [];
    let release!: () => void;
    const gateOpen = new Promise<void>((resolve) => {
      release = resolve;
    });
    const inner = remote();
    const slow: BreakerRemote = {
      sync: async (provider, model, outcomes) => {
        sent.push(outcomes.length);
        await gateOpen;
        return inner.sync(provider, model, outcomes);
      },
      tryTrial: inner.tryTrial,
    };
    const client = new BreakerClient(slow);
    const heldByFirst: Promise<unknown>[] = [];
    const heldBySecond: Promise<unknown>[] = [];
    client.gate((work) => heldByFirst.push(work)).record(key, false, "http_500");
    client.gate((work) => heldBySecond.push(work)).record(key, false, "http_502");
    client.gate((work) => heldBySecond.push(work)).record(key, false, "http_503");
    expect(heldByFirst).toHaveLength(1);
    expect(heldBySecond).toHaveLength(0);
    release();
    await Promise.all(heldByFirst);
    // The first round carried the first failure; the second round (same sync) the two recorded meanwhile.
    expect(sent).toEqual([1, 2]);
    const [provider, model] = key.split(":");
    const shared = (await env.PROVIDER_BREAKER.getByName(provider).sync(model, [])) as unknown as BreakerState;
    expect(shared).toMatchObject({ consecutiveFailures: 3, lastError: "http_503" });
  });
});

describe("models named without end", () => {
  it("an isolate keeps copies of a bounded number of models, dropping idle ones first", async () => {
    const client = new BreakerClient(undefined, { maxModels: 8 });
    for (let index = 0; index < 40; index++) client.state(`simulated:sim-1?junk=${index}`);
    expect(client.cachedModels).toBeLessThanOrEqual(8);
    // A model dropped is only a copy: called again, it starts from the shared state as a new one would.
    expect(client.state("simulated:sim-1?junk=0")).toBe("closed");
  });

  it("the book keeps a bounded number of models, the idlest dropped, and a snapshot reads only those asked for", async () => {
    const provider = `bounded-${crypto.randomUUID().slice(0, 8)}`;
    const stub = env.PROVIDER_BREAKER.getByName(provider);
    const { kept, total, asked } = await runInDurableObject(stub, (_instance, state) => {
      const book = new BreakerBook(state.storage, { maxModels: 100 });
      const nowMs = Date.now();
      // One write each, in time order: the book prunes once, at its 500th write, to the 100 latest.
      for (let index = 0; index < BOUND_CHECK_EVERY_WRITES; index++) {
        book.sync(`m-${index}`, [{ atMs: nowMs - 1_000 + index, ok: true }], nowMs - 1_000 + index);
      }
      const rows = state.storage.sql
        .exec<{ model: string }>("SELECT model FROM breaker_models ORDER BY updated_at_ms")
        .toArray()
        .map((row) => row.model);
      const snapshot = book.snapshot(nowMs, undefined, ["m-499", "m-0", "m-never"]);
      return { kept: rows[0], total: rows.length, asked: snapshot.map((entry) => entry.model) };
    });
    expect(total).toBe(100);
    expect(kept).toBe(`m-${BOUND_CHECK_EVERY_WRITES - 100}`);
    expect(asked).toEqual(["m-499"]);
  });
});
