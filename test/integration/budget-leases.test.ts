import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { WorkspaceLimiter } from "../../durable-objects/workspace-limiter.ts";
import type { WorkspaceBudgets } from "../../src/db/schema.ts";
import type { BudgetAmountsInput, LeasedSettleInput } from "../../src/limits/budget-types.ts";
import { createLlmRouter } from "../../src/llm/index.ts";
import {
  BASE,
  eventsOf,
  fakeUpstreams,
  fetcher,
  limiterOutboxDrained,
  llmConfig,
  NO_BUDGETS,
  openAiCompletion,
  quietLogger,
  workspaceWith,
} from "../support/llm.ts";

/**
 * Budget leases through the router, against the real WorkspaceLimiter: with
 * ample room a workspace's calls reserve against the isolate's lease instead
 * of one limiter round trip each, and are still charged exactly and reported
 * at thresholds. The limiter is wrapped only to count the calls it gets.
 */

afterEach(() => vi.restoreAllMocks());

const OPENAI = "openai.test";
const messages = [{ role: "user" as const, content: "Summarise the changelog." }];

/**
 * Faults for lease batches: the first `refused` fail before they reach the limiter; the next `lostAnswers`
 * land there, but their callers hear an error.
 */
interface BatchFaults {
  refused?: number;
  lostAnswers?: number;
}

function countingLimiter({ refused = 0, lostAnswers = 0 }: BatchFaults = {}) {
  const calls: string[] = [];
  const namespace = {
    getByName(name: string) {
      const stub = env.WORKSPACE_LIMITER.getByName(name);
      return {
        reserveBudget: (input: BudgetAmountsInput & { leaseKey?: string }) => {
          calls.push("reserve");
          return stub.reserveBudget(input);
        },
        settleBudget: (input: BudgetAmountsInput) => {
          calls.push("settle");
          return stub.settleBudget(input);
        },
        lendBudget: (input: Omit<BudgetAmountsInput, "chargeKey"> & { leaseKey: string }) => {
          calls.push("lend");
          return stub.lendBudget(input);
        },
        settleLeasedBudget: async (input: LeasedSettleInput) => {
          calls.push(`settleLeased:${input.charges.length}${input.close ? "+close" : ""}`);
          if (refused-- > 0) throw new Error("Durable Object is overloaded.");
          const result = await stub.settleLeasedBudget(input);
          if (lostAnswers-- > 0) throw new Error("Network connection lost.");
          return result;
        },
      };
    },
  } as unknown as DurableObjectNamespace<WorkspaceLimiter>;
  return { namespace, calls };
}

async function setup(
  budgets: WorkspaceBudgets,
  usage?: { prompt_tokens: number; completion_tokens: number },
  faults: BatchFaults = {},
) {
  const workspace = await workspaceWith(
    { strategy: "fallback", chain: [{ provider: "openai", model: "gpt-4o-mini" }] },
    budgets,
  );
  vi.spyOn(globalThis, "fetch").mockImplementation(
    fakeUpstreams({ [OPENAI]: () => openAiCompletion("done", usage) }).impl,
  );
  const limiter = countingLimiter(faults);
  const background: Promise<unknown>[] = [];
  const router = createLlmRouter(llmConfig({ WORKSPACE_LIMITER: limiter.namespace }), {
    logger: quietLogger,
    waitUntil: (work) => background.push(work),
  });
  /** `chargeOnce`: keyed as the chat endpoint's calls are, unique by construction and not kept by the limiter. */
  const call = (step: number, chargeOnce = false) =>
    router.chat(
      // 1,024 tokens of answer at most: each call reserves its prompt (10 tokens) and that, 1,034 tokens.
      { messages, max_tokens: 1_024 },
      { workspaceId: workspace.id, taskId: `task_${step}`, chargeKey: `run_lease:${step}`, chargeOnce },
    );
  /** Waits for every write (a lease's batches go out on their 250 ms timer: no unit of work here flushes them). */
  const drained = async () => {
    while (background.length > 0) await Promise.all(background.splice(0));
  };
  const status = () => env.WORKSPACE_LIMITER.getByName(workspace.id).budgetStatus();
  return { workspace, limiter, call, drained, status };
}

describe("budget leases through the router", { timeout: 30_000 }, () => {
  it("with ample room, many calls make one reservation at the limiter and are each charged once, in one batch", async () => {
    const { workspace, limiter, call, drained, status } = await setup({ ...NO_BUDGETS, daily_tokens: 1_000_000 });
    for (let step = 1; step <= 6; step++) {
      expect(await call(step)).toMatchObject({ usage: { total_tokens: 17 } });
    }
    // The first lease covers 10 calls of this estimate (10 prompt + 1,024 completion tokens): an isolate
    // with no pace yet asks for the least. The five drew it down by what they used.
    // Before its 5 s are up, the lease holds what its calls did not use.
    await vi.waitFor(async () => expect((await status()).daily).toMatchObject({ reserved_tokens: 10_340 - 85 }), {
      timeout: 4_000,
    });
    await drained();
    // The first call reserved by itself and got the lease; the other five drew on it, and it was closed when its
    // 5 s were up, though no call came then: what it held went back at once.
    expect(limiter.calls).toEqual(["reserve", "settle", "settleLeased:5", "settleLeased:0+close"]);
    expect((await status()).daily).toMatchObject({ tokens: 102, reserved_tokens: 0 });
    const usage = (await (await fetcher(`${BASE}/api/v1/usage`, { headers: workspace.headers })).json()) as {
      data: { calls: number; total_tokens: number }[];
    };
    expect(usage.data[0]).toMatchObject({ calls: 6, total_tokens: 102 });
  });

  it.each([
    ["refused twice, then lands", { refused: 2 }, 3],
    ["lands, but its answer is lost, and is skipped when sent again", { lostAnswers: 1 }, 2],
  ])("a lease batch that fails is sent again and counted once: %s", async (_case, faults, tries) => {
    const { limiter, call, drained, status } = await setup(
      { ...NO_BUDGETS, daily_tokens: 1_000_000 },
      undefined,
      faults,
    );
    // Keyed like the chat endpoint's calls: the limiter keeps no key of theirs, only the batch's.
    for (let step = 1; step <= 4; step++) await call(step, true);
    await vi.waitFor(
      async () => expect((await status()).daily).toMatchObject({ tokens: 4 * 17, reserved_tokens: 10_340 - 3 * 17 }),
      { timeout: 4_000 },
    );
    await drained();
    expect(limiter.calls).toEqual([
      "reserve",
      "settle",
      ...Array(tries).fill("settleLeased:3"),
      "settleLeased:0+close",
    ]);
    expect((await status()).daily).toMatchObject({ tokens: 4 * 17, reserved_tokens: 0 });
  });

  it("a threshold crossed by a batch whose answer was lost is published once", async () => {
    const { workspace, call, drained, status } = await setup(
      { ...NO_BUDGETS, daily_tokens: 1_000_000 },
      { prompt_tokens: 300_000, completion_tokens: 0 },
      { lostAnswers: 1 },
    );
    // As in the threshold case below: the second call draws on the lease and its batch crosses 50 %.
    for (let step = 1; step <= 2; step++) {
      await call(step, true);
      await drained();
    }
    expect((await status()).daily).toMatchObject({ tokens: 600_000 });
    // The limiter queued the events when the batch first landed; the resend queued nothing more.
    await limiterOutboxDrained(workspace.id);
    const reached = await eventsOf(workspace, "billing.threshold.reached", 1);
    expect(reached.map((event) => [event.data.threshold_percent, event.task_id])).toEqual([[50, "task_2"]]);
  });

  it("renews the lease in the background before it runs out, so no call after the first waits for the limiter", async () => {
    // Room for about 40 calls of this estimate: the lease is a quarter of it, 10,081 tokens. At 500 tokens
    // a call it falls under 30 % after the 15th call on it, which asks for the next one in the background.
    const { limiter, call, drained, status } = await setup(
      { ...NO_BUDGETS, daily_tokens: 40 * 1_034 },
      { prompt_tokens: 500, completion_tokens: 0 },
    );
    for (let step = 1; step <= 20; step++) await call(step);
    await drained();
    expect(limiter.calls.filter((name) => name === "reserve")).toHaveLength(1);
    expect(limiter.calls.filter((name) => name === "lend").length).toBeGreaterThanOrEqual(1);
    // Every call charged once; the replaced lease closed, so only the current one is held.
    const daily = (await status()).daily;
    expect(daily.tokens).toBe(20 * 500);
    expect(daily.reserved_tokens).toBeLessThan(40 * 1_034 * 0.25);
    expect(limiter.calls.some((name) => name.endsWith("+close"))).toBe(true);
  });

  it("a threshold a leased call crosses is reported, with that call's task", async () => {
    const { workspace, call, drained, status } = await setup(
      { ...NO_BUDGETS, daily_tokens: 1_000_000 },
      { prompt_tokens: 300_000, completion_tokens: 0 },
    );
    // 300,000 tokens a call, far over the estimate: the first reserves by itself (30 %), the second draws on
    // the lease (60 %: the 50 % step, reported when its batch reaches the limiter), the third finds the lease
    // spent and reserves by itself again (90 %: the 80 % step).
    for (let step = 1; step <= 3; step++) {
      await call(step);
      await drained();
    }
    expect((await status()).daily).toMatchObject({ tokens: 900_000 });
    const reached = await eventsOf(workspace, "billing.threshold.reached", 2);
    expect(reached.map((event) => [event.data.threshold_percent, event.task_id])).toEqual([
      [50, "task_2"],
      [80, "task_3"],
    ]);
  });
});

describe("an idle lease, through the API", () => {
  // One call: lent with that call's own reservation, the lease is never drawn on (a burst of calls that ends).
  it.each([3, 1])(
    "gives back what it holds when its time is up: GET /api/v1/budgets shows nothing reserved once no call runs (%i calls)",
    async (calls) => {
      // The default chain (simulated), with room for many calls: the first call is lent a lease.
      const workspace = await workspaceWith(null, { ...NO_BUDGETS, daily_tokens: 1_000_000 });
      const headers = { ...workspace.headers, "Content-Type": "application/json" };
      for (let call = 0; call < calls; call++) {
        const answered = await fetcher(`${BASE}/api/v1/llm/chat/completions`, {
          method: "POST",
          headers,
          body: JSON.stringify({ messages: [{ role: "user", content: "hi" }], max_tokens: 10 }),
        });
        expect(answered.status).toBe(200);
      }
      const reserved = async () => {
        const budgets = await fetcher(`${BASE}/api/v1/budgets`, { headers: workspace.headers });
        return ((await budgets.json()) as { daily: { reserved_tokens: number } }).daily.reserved_tokens;
      };
      // Lent: the lease's room is held for this isolate while it may spend it.
      expect(await reserved()).toBeGreaterThan(0);
      // Its 5 s are up and no call came: the room goes back then, not a minute after it was lent (until then
      // every other isolate's call near the limit was refused, budget_held, with nothing in flight).
      await new Promise((wake) => setTimeout(wake, 5_500));
      let left = await reserved();
      for (let tries = 0; left > 0 && tries < 50; tries++) {
        await new Promise((wake) => setTimeout(wake, 20));
        left = await reserved();
      }
      expect(left).toBe(0);
    },
    15_000,
  );
});
