import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createDb } from "../../src/db/client.ts";
import { tasks, usageRecords } from "../../src/db/schema.ts";
import { createLlmRouter } from "../../src/llm/index.ts";
import { consumeTaskBatch } from "../../src/tasks/consumer.ts";
import { BASE, eventsOf, fakeUpstreams, fetcher, llmConfig, quietLogger, workspaceWith } from "../support/llm.ts";
import { insertTask, taskBody, eventsOf as taskEventsOf } from "../unit/tasks/fakes.ts";

/**
 * A task whose workspace's token budget runs out between two of its LLM calls, run by the real tasks consumer
 * with the real router, WorkspaceLimiter and D1, against a fake OpenAI upstream (global fetch intercepted).
 */

afterEach(() => vi.restoreAllMocks());

/** OpenAI's answer asking for one list_files call, charged 250 tokens: the agent goes on after each. */
function listFilesAnswer(): Response {
  return Response.json({
    id: "chatcmpl-fake",
    object: "chat.completion",
    choices: [
      {
        index: 0,
        message: {
          role: "assistant",
          content: null,
          tool_calls: [
            {
              id: `call_${crypto.randomUUID().slice(0, 8)}`,
              type: "function",
              function: { name: "list_files", arguments: "{}" },
            },
          ],
        },
        finish_reason: "tool_calls",
      },
    ],
    usage: { prompt_tokens: 230, completion_tokens: 20, total_tokens: 250 },
  });
}

describe("budget exhaustion mid-task, through the tasks consumer", () => {
  it("ends the task with the budget error, asks the provider nothing more, and emits the 100% threshold event once", async () => {
    const workspace = await workspaceWith(
      { strategy: "fallback", chain: [{ provider: "openai", model: "gpt-4o-mini" }] },
      { daily_tokens: 1_000, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null },
    );
    const fake = fakeUpstreams({ "openai.test": () => listFilesAnswer() });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const config = llmConfig();
    const router = createLlmRouter(config, { logger: quietLogger });
    const row = await insertTask(workspace.id);

    const batch = createMessageBatch("tasks", [
      { id: "msg-budget", timestamp: new Date(), attempts: 1, body: taskBody(workspace.id, row.id) },
    ]);
    await consumeTaskBatch(batch, config, { router, logger: quietLogger, random: () => 0.5 });
    const result = await getQueueResult(batch, createExecutionContext());

    // 250, 500 (50%), 750 (80%), 1,000 (100%): the fifth call finds nothing left and never reaches OpenAI.
    expect(fake.count("openai.test")).toBe(4);
    // Not retryable: the message is acked, the task failed for good.
    expect(result.explicitAcks).toEqual(["msg-budget"]);
    expect(result.retryMessages).toEqual([]);
    const db = createDb(env.DB);
    const [task] = await db.select().from(tasks).where(eq(tasks.id, row.id));
    expect(task).toMatchObject({
      status: "failed",
      error: { type: "llm_budget_exhausted", message: expect.stringMatching(/daily token budget/) },
      promptTokens: 920,
      completionTokens: 80,
    });
    // As its owner reads it.
    const shown = await fetcher(`${BASE}/api/v1/tasks/${row.id}`, { headers: workspace.headers });
    expect(shown.status).toBe(200);
    expect(await shown.json()).toMatchObject({ status: "failed", error: { type: "llm_budget_exhausted" } });
    const taskEvents = await taskEventsOf(workspace.headers, row.id);
    const errors = taskEvents.filter((event) => event.event_type === "task.error");
    expect(errors).toHaveLength(1);
    expect(errors[0].data).toMatchObject({ fatal: true, error_type: "llm_budget_exhausted" });
    expect(taskEvents.some((event) => event.event_type === "task.completed")).toBe(false);

    const charged = await db.select().from(usageRecords).where(eq(usageRecords.taskId, row.id));
    expect(charged.map((usage) => usage.promptTokens + usage.completionTokens)).toEqual([250, 250, 250, 250]);

    const reached = await eventsOf(workspace, "billing.threshold.reached", 3);
    expect(reached.map((event) => event.data.threshold_percent)).toEqual([50, 80, 100]);
    // Once: a late duplicate would land after the three, so look again a little later.
    await new Promise((wake) => setTimeout(wake, 300));
    const full = (await eventsOf(workspace, "billing.threshold.reached")).filter(
      (event) => event.data.threshold_percent === 100,
    );
    expect(full).toHaveLength(1);
    expect(full[0]).toMatchObject({
      task_id: row.id,
      data: {
        threshold_type: "daily",
        current_usage: 1_000,
        threshold: 1_000,
        percentage: 100,
        alert_level: "critical",
      },
    });
  });
});
