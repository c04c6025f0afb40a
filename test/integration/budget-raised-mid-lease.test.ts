import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
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
 * A budget raised while an isolate holds a lease lent under the old one: the lease's last batch, which only closes
 * it (no call's charge in it), must not judge the period's use against the budget it was lent under. That told the
 * old budget's step again (re-armed by the raise), and marked it reported, so the raised budget's own step never was.
 */

afterEach(() => vi.restoreAllMocks());

describe("a lease closed after its budget was raised", { timeout: 30_000 }, () => {
  it("reports no step of the old budget, and the raised budget's 50% when the use reaches it", async () => {
    const workspace = await workspaceWith(
      { strategy: "fallback", chain: [{ provider: "openai", model: "gpt-4o-mini" }] },
      { ...NO_BUDGETS, daily_tokens: 1_000_000 },
    );
    // 300,000 tokens a call, far over its estimate (10 of prompt, 1,024 of answer).
    vi.spyOn(globalThis, "fetch").mockImplementation(
      fakeUpstreams({ "openai.test": () => openAiCompletion("done", { prompt_tokens: 300_000, completion_tokens: 0 }) })
        .impl,
    );
    const background: Promise<unknown>[] = [];
    const router = createLlmRouter(llmConfig(), { logger: quietLogger, waitUntil: (work) => background.push(work) });
    const call = (step: number) =>
      router.chat(
        { messages: [{ role: "user", content: "Summarise the changelog." }], max_tokens: 1_024 },
        { workspaceId: workspace.id, taskId: `task_${step}`, chargeKey: `run_raise:${step}` },
      );
    const drained = async () => {
      while (background.length > 0) await Promise.all(background.splice(0));
    };
    const daily = () => env.WORKSPACE_LIMITER.getByName(workspace.id).budgetStatus();

    // The first call reserves by itself and is lent a lease; the second draws on it: 60% of the 1,000,000 day,
    // its 50% step reported when the lease's batch lands (within 250 ms).
    await call(1);
    await call(2);
    await vi.waitFor(async () => expect((await daily()).daily.tokens).toBe(600_000), { timeout: 4_000 });
    await limiterOutboxDrained(workspace.id);
    const before = await eventsOf(workspace, "billing.threshold.reached", 1);
    expect(before.map((event) => [event.data.threshold_percent, event.data.threshold])).toEqual([[50, 1_000_000]]);

    // Raised to 2,000,000 while the lease is still lent: 600,000 is 30% of it, so its 50% step is armed again.
    const put = await fetcher(`${BASE}/api/v1/budgets`, {
      method: "PUT",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ ...NO_BUDGETS, daily_tokens: 2_000_000 }),
    });
    expect(put.status).toBe(200);
    expect(((await put.json()) as { daily: { thresholds_reached: unknown[] } }).daily.thresholds_reached).toEqual([]);

    // The lease's time is up and it closes, with no call's charge in its batch: nothing is reached by that.
    await drained();
    expect((await daily()).daily).toMatchObject({ tokens: 600_000, reserved_tokens: 0, thresholds_reached: [] });

    // Two more calls: 1,200,000 is 60% of the raised budget, whose 50% step is told, once.
    await call(3);
    await call(4);
    await drained();
    expect((await daily()).daily.tokens).toBe(1_200_000);
    await limiterOutboxDrained(workspace.id);
    const reached = await eventsOf(workspace, "billing.threshold.reached", 2);
    expect(reached.map((event) => [event.data.threshold_percent, event.data.threshold, event.task_id])).toEqual([
      [50, 1_000_000, "task_2"],
      [50, 2_000_000, "task_4"],
    ]);
    expect(await eventsOf(workspace, "billing.usage_alert")).toHaveLength(2);
  });
});
