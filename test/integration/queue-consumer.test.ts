import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { beforeAll, describe, expect, it, vi } from "vitest";
import { createDb } from "../../src/db/client.ts";
import { artifacts, deadLetters, taskRuns, tasks, usageRecords } from "../../src/db/schema.ts";
import { deliverParkedEvents } from "../../src/events/parked.ts";
import { BudgetExhaustedError, createLlmRouter } from "../../src/llm/index.ts";
import { LlmError, type LlmRouter } from "../../src/llm/types.ts";
import { queueKind } from "../../src/queues/consumer.ts";
import { EMPTY_ANSWER_PROMPT } from "../../src/tasks/agent/prompts.ts";
import { BUDGET_HELD_WAIT_LIMIT_MS } from "../../src/tasks/agent/runtime.ts";
import { cancelLocally } from "../../src/tasks/cancellation.ts";
import { ARTIFACT_LIMITS } from "../../src/tasks/config.ts";
import { consumeTaskBatch } from "../../src/tasks/consumer.ts";
import { consumeDeadLetterBatch } from "../../src/tasks/dead-letters.ts";
import { REQUEST_EVENT_RETRY_DELAYS_MS } from "../../src/tasks/events.ts";
import { cancelTask, createTask } from "../../src/tasks/service.ts";
import { fakeUpstreams, hang, llmConfig, openAiCompletion, workspaceWith } from "../support/llm.ts";
import { createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";
import {
  answer,
  appConfig,
  BASE,
  eventsOf,
  fetcher,
  insertTask,
  quietLogger,
  scriptedRouter,
  taskBody,
  toolCalls,
} from "../unit/tasks/fakes.ts";

/** The `tasks` and `tasks-dlq` consumers driven with createMessageBatch / getQueueResult. */

const db = createDb(env.DB);
let workspace: TestWorkspace;
beforeAll(async () => {
  workspace = await createTestWorkspace(fetcher, BASE, { name: "consumer" });
});

async function deliver(
  router: LlmRouter,
  messages: { id: string; taskId: string; attempts?: number }[],
  options: {
    random?: () => number;
    limits?: typeof ARTIFACT_LIMITS;
    config?: Partial<ReturnType<typeof appConfig>>;
    logger?: typeof quietLogger;
    /** Another workspace than the shared one (e.g. with its own routing chain). */
    workspace?: TestWorkspace;
  } = {},
) {
  const batch = createMessageBatch(
    "tasks",
    messages.map((message) => ({
      id: message.id,
      timestamp: new Date(),
      attempts: message.attempts ?? 1,
      body: taskBody((options.workspace ?? workspace).id, message.taskId),
    })),
  );
  // getQueueResult reports which messages were retried, not their delays: record those here.
  const delays: Record<string, number | undefined> = {};
  for (const message of batch.messages) {
    const retry = message.retry.bind(message);
    vi.spyOn(message, "retry").mockImplementation((options) => {
      delays[message.id] = options?.delaySeconds;
      retry(options);
    });
  }
  await consumeTaskBatch(
    batch,
    { ...appConfig(), ...options.config },
    {
      router,
      logger: options.logger ?? quietLogger,
      random: options.random ?? (() => 0.5),
      artifactLimits: options.limits,
    },
  );
  return { ...(await getQueueResult(batch, createExecutionContext())), delays };
}

const task = (id: string) =>
  db
    .select()
    .from(tasks)
    .where(eq(tasks.id, id))
    .then((rows) => rows[0]);
const runs = (id: string) => db.select().from(taskRuns).where(eq(taskRuns.taskId, id));

describe("the tasks consumer", () => {
  it("routes queues by name, with environment suffixes", () => {
    expect(["tasks", "tasks-staging", "tasks-dlq", "tasks-dlq-production", "other"].map(queueKind)).toEqual([
      "tasks",
      "tasks",
      "tasks-dlq",
      "tasks-dlq",
      null,
    ]);
  });

  it("runs the agent, stores its file in R2, acks, and publishes the lifecycle in order", async () => {
    const row = await insertTask(workspace.id);
    const router = scriptedRouter(
      toolCalls({ name: "write_file", args: { path: "src/hello.ts", content: 'console.log("hello");\n' } }),
      toolCalls({ name: "finish", args: { summary: "Wrote src/hello.ts" } }),
    );
    const result = await deliver(router, [{ id: "msg-ok", taskId: row.id }]);
    expect(result.explicitAcks).toEqual(["msg-ok"]);
    expect(result.retryMessages).toEqual([]);

    const done = await task(row.id);
    expect(done).toMatchObject({ status: "completed", attempts: 1, promptTokens: 200, completionTokens: 40 });
    expect(done.result).toMatchObject({ status: "success", summary: "Wrote src/hello.ts" });
    expect(await runs(row.id)).toMatchObject([
      { attempt: 1, status: "succeeded", messageId: "msg-ok", provider: "simulated" },
    ]);
    expect(router.calls.map((call) => call.context.chargeKey)).toEqual([
      `${(await runs(row.id))[0].id}:1`,
      `${(await runs(row.id))[0].id}:2`,
    ]);

    const files = await db.select().from(artifacts).where(eq(artifacts.taskId, row.id));
    const hello = files.find((file) => file.path === "src/hello.ts")!;
    expect(hello).toMatchObject({ sizeBytes: 22, mimeType: "text/typescript; charset=utf-8", version: 1 });
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode('console.log("hello");\n'));
    expect(hello.sha256).toBe([...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0")).join(""));
    expect(await (await env.ARTIFACTS.get(hello.r2Key))!.text()).toBe('console.log("hello");\n');
    expect(files.map((file) => file.path).sort()).toEqual(["REPORT.md", "src/hello.ts"]);

    const events = await eventsOf(workspace.headers, row.id);
    expect(events.map((event) => event.event_type)).toEqual([
      "task.started",
      "agent.message",
      "tool.call",
      "artifact.created",
      "tool.result",
      "agent.message",
      "tool.call",
      "tool.result",
      "artifact.created",
      "task.completed",
    ]);
    const completed = events.at(-1)!.data;
    expect(completed).toMatchObject({
      task_id: row.id,
      tokens_used: { prompt: 200, completion: 40, total: 240 },
      result: { status: "success" },
    });
    expect((completed.result as { artifacts: string[] }).artifacts.sort()).toEqual(files.map((file) => file.id).sort());
    expect(events.find((event) => event.event_type === "tool.result")!.data.duration_ms).toBeGreaterThanOrEqual(0);
  });

  it("never runs a task twice when its message is delivered again after it completed", async () => {
    const row = await insertTask(workspace.id);
    const first = scriptedRouter(answer("done"));
    await deliver(first, [{ id: "msg-redeliver", taskId: row.id }]);
    const again = scriptedRouter(answer("again"));
    const result = await deliver(again, [{ id: "msg-redeliver", taskId: row.id, attempts: 2 }]);
    expect(result.explicitAcks).toEqual(["msg-redeliver"]);
    expect(again.calls).toHaveLength(0);
    expect(await runs(row.id)).toHaveLength(1);
  });

  it("starts one run when two deliveries of a task race", async () => {
    const row = await insertTask(workspace.id);
    const router = scriptedRouter(answer("done"));
    const [a, b] = await Promise.all([
      deliver(router, [{ id: "race-a", taskId: row.id }]),
      deliver(router, [{ id: "race-b", taskId: row.id }]),
    ]);
    expect(await runs(row.id)).toHaveLength(1);
    expect(router.calls).toHaveLength(1);
    // The loser is acked (the task ended) or retried later (it was running): never run.
    expect([
      ...a.explicitAcks,
      ...b.explicitAcks,
      ...[...a.retryMessages, ...b.retryMessages].map((m) => m.msgId),
    ]).toHaveLength(2);
  });

  it("retries a retryable failure with backoff and full jitter, and records the attempt", async () => {
    const row = await insertTask(workspace.id);
    const router = scriptedRouter(() => {
      throw new LlmError("all_providers_failed", "every provider failed", true);
    });
    const result = await deliver(router, [{ id: "msg-retry", taskId: row.id, attempts: 2 }], { random: () => 0.5 });
    // Second delivery: ceiling 2·2¹ = 4 s, half of it.
    expect(result.retryMessages).toEqual([{ msgId: "msg-retry" }]);
    expect(result.delays).toEqual({ "msg-retry": 2 });
    expect(result.explicitAcks).toEqual([]);
    expect(await task(row.id)).toMatchObject({ status: "queued", attempts: 1 });
    expect(await runs(row.id)).toMatchObject([
      { status: "failed", error: { type: "llm_all_providers_failed", retryable: true } },
    ]);
    const error = (await eventsOf(workspace.headers, row.id)).find((event) => event.event_type === "task.error")!;
    expect(error.data).toMatchObject({
      fatal: false,
      retry_count: 2,
      max_retries: 3,
      error_type: "llm_all_providers_failed",
    });

    // The next delivery is attempt 2 of the task.
    await deliver(scriptedRouter(answer("ok")), [{ id: "msg-retry", taskId: row.id, attempts: 3 }]);
    expect(await task(row.id)).toMatchObject({ status: "completed", attempts: 2 });
    expect((await runs(row.id)).map((run) => run.status).sort()).toEqual(["failed", "succeeded"]);
  });

  it("waits as long as every provider asked (Retry-After) before the next delivery, not the shorter backoff", async () => {
    const row = await insertTask(workspace.id);
    const router = scriptedRouter(() => {
      // What the router throws when each target's last answer was a 429 with Retry-After: 30.
      throw new LlmError("all_providers_failed", "every provider failed: openai:gpt-4o-mini: 429", true, [], 30_000);
    });
    const result = await deliver(router, [{ id: "msg-retry-after", taskId: row.id }], { random: () => 0.5 });
    // The backoff alone would be 1 s (half of 2 s): the task would be back at the same refusals, its retries spent.
    expect(result.retryMessages).toEqual([{ msgId: "msg-retry-after" }]);
    expect(result.delays).toEqual({ "msg-retry-after": 30 });

    // A longer backoff than the providers' wait is kept.
    const later = await insertTask(workspace.id);
    const soon = scriptedRouter(() => {
      throw new LlmError("all_providers_failed", "every provider failed", true, [], 1_200);
    });
    const again = await deliver(soon, [{ id: "msg-retry-soon", taskId: later.id, attempts: 3 }], { random: () => 0.5 });
    // Third delivery: ceiling 2·2² = 8 s, half of it.
    expect(again.delays).toEqual({ "msg-retry-soon": 4 });
  });

  it("waits inside the run for budget room that calls in flight hold, spending no delivery of the task", async () => {
    const row = await insertTask(workspace.id);
    const router = scriptedRouter(() => {
      // What a call meets beside calls that hold the room left (budget_held); a short wait for the test.
      throw new BudgetExhaustedError("held by calls in flight", {
        retryAfterSeconds: 0.05,
        period: "daily",
        metric: "tokens",
        held: true,
      });
    }, answer("done"));
    const result = await deliver(router, [{ id: "msg-held", taskId: row.id }]);
    expect(result.retryMessages).toEqual([]);
    expect(result.explicitAcks).toEqual(["msg-held"]);
    expect(await task(row.id)).toMatchObject({ status: "completed", attempts: 1 });
    expect((await runs(row.id)).map((run) => run.status)).toEqual(["succeeded"]);
    // Asked again as the same call: one charge key, charged once.
    expect(router.calls.map((call) => call.context.chargeKey)).toEqual([
      router.calls[0].context.chargeKey,
      router.calls[0].context.chargeKey,
    ]);
    const types = (await eventsOf(workspace.headers, row.id)).map((event) => event.event_type);
    expect(types).not.toContain("task.error");
  });

  it("gives the task back to the queue when the budget's room would be held longer than a run waits", async () => {
    const row = await insertTask(workspace.id);
    const waitSeconds = BUDGET_HELD_WAIT_LIMIT_MS / 1000 + 1;
    const router = scriptedRouter(() => {
      throw new BudgetExhaustedError("held by calls in flight", {
        retryAfterSeconds: waitSeconds,
        period: "daily",
        metric: "tokens",
        held: true,
      });
    });
    const result = await deliver(router, [{ id: "msg-held-long", taskId: row.id }], { random: () => 0.5 });
    expect(router.calls).toHaveLength(1);
    expect(result.retryMessages).toEqual([{ msgId: "msg-held-long" }]);
    expect(result.delays).toEqual({ "msg-held-long": waitSeconds });
    expect(await runs(row.id)).toMatchObject([
      { status: "failed", error: { type: "llm_budget_exhausted", retryable: true } },
    ]);
  });

  it("names in task.started the first target of the workspace's own routing chain, not the deployment's default", async () => {
    const claude = await workspaceWith({
      strategy: "fallback",
      chain: [
        { provider: "anthropic", model: "claude-3-5-haiku-latest" },
        { provider: "openai", model: "gpt-4o-mini" },
      ],
    });
    const config = llmConfig();
    const chained = await insertTask(claude.id);
    // A task's own model goes first, as the router tries it.
    const pinned = await insertTask(claude.id, { agentConfig: { model: "openai:gpt-4o" } });
    // A bare name is served where the router serves it: on the configured provider that has it.
    const bare = await insertTask(claude.id, { agentConfig: { model: "gpt-4o-mini" } });
    await deliver(
      scriptedRouter(answer("done")),
      [
        { id: "msg-started-chain", taskId: chained.id },
        { id: "msg-started-pinned", taskId: pinned.id },
        { id: "msg-started-bare", taskId: bare.id },
      ],
      { workspace: claude, config },
    );
    const started = async (taskId: string) =>
      (await eventsOf(claude.headers, taskId)).find((event) => event.event_type === "task.started")!.data;
    expect((await started(chained.id)).resources).toMatchObject({
      model: "claude-3-5-haiku-latest",
      provider: "anthropic",
      provider_name: "anthropic",
    });
    expect((await started(pinned.id)).resources).toMatchObject({
      model: "gpt-4o",
      provider: "openai",
      provider_name: "openai",
    });
    expect((await started(bare.id)).resources).toMatchObject({
      model: "gpt-4o-mini",
      provider: "openai",
      provider_name: "openai",
    });
  });

  it("gives each LLM call of a run the run's correlation id, so the billing events its charges cause carry it too", async () => {
    const row = await insertTask(workspace.id);
    const router = scriptedRouter(toolCalls({ name: "list_files", args: {} }), answer("done"));
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    await deliver(router, [{ id: "msg-trace", taskId: row.id }], { logger: quietLogger.child({ trace_id: traceId }) });
    expect(await task(row.id)).toMatchObject({ status: "completed" });
    // The events the run publishes itself carry it already (taken from the logger's trace)...
    const started = (await eventsOf(workspace.headers, row.id)).find((event) => event.event_type === "task.started");
    expect(started).toMatchObject({ correlation_id: traceId });
    // ...and the router needs it in the call's context: budget events are stamped in the WorkspaceLimiter,
    // which has no trace of its own.
    expect(router.calls).toHaveLength(2);
    expect(router.calls.map((call) => call.context.correlationId)).toEqual([traceId, traceId]);
  });

  it("ends a non-retryable failure at once with a fatal task.error", async () => {
    const row = await insertTask(workspace.id);
    const router = scriptedRouter(() => {
      throw new LlmError("budget_exhausted", "the daily token budget is spent", false);
    });
    const result = await deliver(router, [{ id: "msg-fatal", taskId: row.id }]);
    expect(result.explicitAcks).toEqual(["msg-fatal"]);
    expect(result.retryMessages).toEqual([]);
    expect(await task(row.id)).toMatchObject({ status: "failed", error: { type: "llm_budget_exhausted" } });
    const error = (await eventsOf(workspace.headers, row.id)).find((event) => event.event_type === "task.error")!;
    expect(error.data).toMatchObject({ fatal: true, error_type: "llm_budget_exhausted" });
  });

  it("stops a run at its task type's timeout from TASK_TIMEOUT_SECONDS and retries it", async () => {
    const row = await insertTask(workspace.id);
    let aborted: unknown;
    const router = scriptedRouter(async (_request, context) => {
      await new Promise((_resolve, reject) => {
        context.signal?.addEventListener("abort", () => {
          aborted = context.signal?.reason;
          reject(context.signal?.reason);
        });
      });
      return answer("never")(_request, context, 1);
    });
    const result = await deliver(router, [{ id: "msg-timeout", taskId: row.id }], {
      config: { TASK_TIMEOUT_SECONDS: { [row.type]: 1 } },
    });
    expect(aborted).toBeInstanceOf(Error);
    expect(result.retryMessages).toEqual([{ msgId: "msg-timeout" }]);
    expect(await runs(row.id)).toMatchObject([{ status: "timed_out", error: { type: "timeout" } }]);
    const error = (await eventsOf(workspace.headers, row.id)).find((event) => event.event_type === "task.error")!;
    expect(error.data).toMatchObject({ error_type: "timeout", fatal: false });
    expect(String(error.data.error_message)).toContain("1 s timeout");
  });

  it("answers bad paths and oversized files with 4xx tool errors, not a crash", async () => {
    const row = await insertTask(workspace.id);
    const router = scriptedRouter(
      toolCalls(
        { name: "write_file", args: { path: "../etc/passwd", content: "x" } },
        { name: "write_file", args: { path: "/abs.txt", content: "x" } },
        { name: "write_file", args: { path: "ok\u0007.txt", content: "x" } },
        { name: "write_file", args: { path: "big.bin", content: "x".repeat(2_000) } },
        { name: "read_file", args: { path: "missing.txt" } },
      ),
      answer("gave up on those"),
    );
    await deliver(router, [{ id: "msg-limits", taskId: row.id }], {
      limits: { ...ARTIFACT_LIMITS, maxArtifactBytes: 1_000 },
    });
    expect(await task(row.id)).toMatchObject({ status: "completed" });
    const results = (await eventsOf(workspace.headers, row.id)).filter((event) => event.event_type === "tool.result");
    expect(results.map((event) => [event.data.status, event.data.code])).toEqual([
      ["error", 400],
      ["error", 400],
      ["error", 400],
      ["error", 413],
      ["error", 404],
    ]);
    const toolMessages = router.calls[1].request.messages.filter((message) => message.role === "tool");
    expect(JSON.parse(toolMessages[3].content!)).toMatchObject({ status: 413 });
  });

  it("asks the model to go on after an empty answer, and ends short of success after a second in a row", async () => {
    const write = toolCalls({ name: "write_file", args: { path: "a.txt", content: "a" } });
    const seen: { role: string; content: string | null }[][] = [];
    const finish = toolCalls({ name: "finish", args: { summary: "Wrote a.txt" } });
    const resumed = await insertTask(workspace.id);
    const router = scriptedRouter(write, answer(""), (request, context, call) => {
      seen.push(request.messages.map(({ role, content }) => ({ role, content })));
      return finish(request, context, call);
    });
    await deliver(router, [{ id: "msg-empty-once", taskId: resumed.id }]);
    expect((await task(resumed.id)).result).toMatchObject({ status: "success", summary: "Wrote a.txt" });
    // The empty turn is left out (providers refuse an empty assistant message); the nudge follows the tool result.
    expect(seen[0].slice(-3)).toEqual([
      { role: "assistant", content: null },
      { role: "tool", content: expect.any(String) },
      { role: "user", content: EMPTY_ANSWER_PROMPT },
    ]);

    const silent = await insertTask(workspace.id);
    const twice = scriptedRouter(write, answer(""), answer("  "));
    await deliver(twice, [{ id: "msg-empty-twice", taskId: silent.id }]);
    expect(twice.calls).toHaveLength(3);
    expect(await task(silent.id)).toMatchObject({ status: "completed" });
    expect((await task(silent.id)).result).toMatchObject({
      status: "partial_success",
      summary: "The model stopped answering before it finished.",
    });
  });

  it("stops a running agent that is cancelled, aborting the call in flight", async () => {
    const row = await insertTask(workspace.id);
    let cancelResponse: Response | undefined;
    const router = scriptedRouter(toolCalls({ name: "list_files", args: {} }), async (_request, context) => {
      cancelResponse = await fetcher(`${BASE}/api/v1/tasks/${row.id}/cancel`, {
        method: "POST",
        headers: workspace.headers,
      });
      await new Promise((resolve, reject) => {
        if (context.signal?.aborted) reject(context.signal.reason);
        context.signal?.addEventListener("abort", () => reject(context.signal?.reason));
        setTimeout(resolve, 5_000);
      });
      return answer("should not get here")(_request, context, 2);
    });
    const result = await deliver(router, [{ id: "msg-cancel", taskId: row.id }]);
    expect(cancelResponse?.status).toBe(202);
    expect(result.explicitAcks).toEqual(["msg-cancel"]);
    expect(await task(row.id)).toMatchObject({ status: "cancelled" });
    expect(await runs(row.id)).toMatchObject([{ status: "cancelled" }]);
    const error = (await eventsOf(workspace.headers, row.id)).find((event) => event.event_type === "task.error")!;
    expect(error.data).toMatchObject({ error_type: "cancelled", fatal: true });
  });

  it("keeps the end of a run whose last answer came in as it was cancelled, with its REPORT.md", async () => {
    const row = await insertTask(workspace.id);
    let cancelStatus: number | undefined;
    // The provider's answer is in hand when the cancel stops the run: the run ends with it (as documented, the task
    // reads completed with cancel_requested_at set), and a completed task has its report.
    const router = scriptedRouter(async (request, context, call) => {
      cancelStatus = (
        await fetcher(`${BASE}/api/v1/tasks/${row.id}/cancel`, { method: "POST", headers: workspace.headers })
      ).status;
      await new Promise((resolve) => {
        if (context.signal?.aborted) resolve(undefined);
        context.signal?.addEventListener("abort", resolve);
      });
      return answer("Done just in time.")(request, context, call);
    });
    await deliver(router, [{ id: "msg-cancel-answered", taskId: row.id }]);
    expect(cancelStatus).toBe(202);
    const done = await task(row.id);
    expect(done).toMatchObject({ status: "completed", result: { summary: "Done just in time." } });
    expect(done.cancelRequestedAt).not.toBeNull();
    const files = await db.select().from(artifacts).where(eq(artifacts.taskId, row.id));
    expect(files.map((file) => file.path)).toEqual(["REPORT.md"]);
    expect(await (await env.ARTIFACTS.get(files[0].r2Key))!.text()).toContain("Done just in time.");
  });

  it("ends a task cancelled while its last attempt fails retryably as cancelled, not dead-lettered", async () => {
    const row = await insertTask(workspace.id, { attempts: 3 });
    let cancelStatus: number | undefined;
    // The cancel is accepted (202) while the call is at the provider, which fails before the run notices it.
    const router = scriptedRouter(async () => {
      cancelStatus = (
        await fetcher(`${BASE}/api/v1/tasks/${row.id}/cancel`, { method: "POST", headers: workspace.headers })
      ).status;
      throw new LlmError("all_providers_failed", "every provider failed", true);
    });
    const result = await deliver(router, [{ id: "msg-cancel-last", taskId: row.id, attempts: 4 }]);
    expect(cancelStatus).toBe(202);
    // Acknowledged, so it never reaches the dead-letter queue; retried, it would have been dead-lettered there.
    expect(result.explicitAcks).toEqual(["msg-cancel-last"]);
    expect(result.retryMessages).toEqual([]);
    const read = await fetcher(`${BASE}/api/v1/tasks/${row.id}`, { headers: workspace.headers });
    expect(await read.json()).toMatchObject({ status: "cancelled", error: { type: "cancelled" } });
    expect((await task(row.id)).finishedAt).not.toBeNull();
    expect(await runs(row.id)).toMatchObject([{ status: "failed", error: { type: "llm_all_providers_failed" } }]);
    const errors = (await eventsOf(workspace.headers, row.id)).filter((event) => event.event_type === "task.error");
    expect(errors.map((event) => event.data)).toMatchObject([{ error_type: "cancelled", fatal: true }]);
  });

  it("tells a task cancelled while it waits to be retried so, not that it never started", async () => {
    const row = await insertTask(workspace.id);
    const failing = scriptedRouter(async () => {
      throw new LlmError("all_providers_failed", "every provider failed", true);
    });
    const first = await deliver(failing, [{ id: "msg-retry-then-cancel", taskId: row.id }]);
    expect(first.retryMessages).toHaveLength(1);
    expect(await task(row.id)).toMatchObject({ status: "queued", attempts: 1 });
    const cancel = await fetcher(`${BASE}/api/v1/tasks/${row.id}/cancel`, {
      method: "POST",
      headers: workspace.headers,
    });
    expect(cancel.status).toBe(200);
    const read = await fetcher(`${BASE}/api/v1/tasks/${row.id}`, { headers: workspace.headers });
    const told = { type: "cancelled", message: "Cancelled while waiting to be retried, after 1 attempt." };
    expect(await read.json()).toMatchObject({ status: "cancelled", error: told });
    const events = await eventsOf(workspace.headers, row.id);
    expect(events.map((event) => event.event_type)).toContain("task.started");
    const errors = events.filter((event) => event.event_type === "task.error" && event.data.fatal);
    expect(errors.map((event) => event.data)).toMatchObject([{ error_type: "cancelled", error_message: told.message }]);
  });

  it("keeps the first cancel's time when a running task is cancelled twice", async () => {
    const row = await insertTask(workspace.id);
    const answers: { cancel_requested_at: string }[] = [];
    const router = scriptedRouter(async (request, context) => {
      for (let i = 0; i < 2; i++) {
        const response = await fetcher(`${BASE}/api/v1/tasks/${row.id}/cancel`, {
          method: "POST",
          headers: workspace.headers,
        });
        answers.push((await response.json()) as { cancel_requested_at: string });
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      return answer("done")(request, context, 1);
    });
    await deliver(router, [{ id: "msg-cancel-twice", taskId: row.id }]);
    expect(answers).toHaveLength(2);
    expect(answers[0].cancel_requested_at).toMatch(/^\d{4}-\d{2}-\d{2}T/);
    expect(answers[1].cancel_requested_at).toBe(answers[0].cancel_requested_at);
  });

  it("counts the prompt a call cancelled in flight was charged in the run's and the task's figures", async () => {
    const openai = await workspaceWith({ strategy: "fallback", chain: [{ provider: "openai", model: "gpt-4o-mini" }] });
    const row = await insertTask(openai.id);
    const fake = fakeUpstreams({
      "openai.test": (request, call) => {
        if (call === 1) return openAiCompletion("Looking around first.", { prompt_tokens: 400, completion_tokens: 40 });
        // The second turn is at the provider when the task is cancelled.
        setTimeout(() => cancelLocally(row.id), 100);
        return hang(request);
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const config = llmConfig();
    const router = createLlmRouter(config, { logger: quietLogger });
    // The first answer has no tool calls and would end the run: make it ask for a second turn.
    const chat = router.chat.bind(router);
    vi.spyOn(router, "chat").mockImplementation(async (request, context) => {
      const result = await chat(request, context);
      if (fake.count("openai.test") > 1) return result;
      const call = { id: "call_1", type: "function" as const, function: { name: "list_files", arguments: "{}" } };
      return { ...result, message: { ...result.message, tool_calls: [call] } };
    });
    await deliver(router, [{ id: "msg-cancel-charged", taskId: row.id }], { workspace: openai, config });
    expect(fake.count("openai.test")).toBe(2);

    // Both calls were charged: the answer's figures, and the cancelled one's prompt (estimated).
    const rows = await db.select().from(usageRecords).where(eq(usageRecords.taskId, row.id));
    expect(rows).toHaveLength(2);
    expect(rows.find((usage) => usage.estimated)).toMatchObject({ completionTokens: 0 });
    const charged = {
      promptTokens: rows.reduce((sum, usage) => sum + usage.promptTokens, 0),
      completionTokens: rows.reduce((sum, usage) => sum + usage.completionTokens, 0),
      costUsd: rows.reduce((sum, usage) => sum + usage.costUsd, 0),
    };
    expect(charged.promptTokens).toBeGreaterThan(400);
    const [run] = await runs(row.id);
    expect(run).toMatchObject({ status: "cancelled", promptTokens: charged.promptTokens });
    expect(run.completionTokens).toBe(charged.completionTokens);
    expect(run.costUsd).toBeCloseTo(charged.costUsd, 12);
    const done = await task(row.id);
    expect(done).toMatchObject({ status: "cancelled", promptTokens: charged.promptTokens });
    expect(done.costUsd).toBeCloseTo(charged.costUsd, 12);
  });

  it("stops a call in flight when the task is cancelled from another isolate, charging only the prompt", async () => {
    const openai = await workspaceWith({ strategy: "fallback", chain: [{ provider: "openai", model: "gpt-4o-mini" }] });
    const row = await insertTask(openai.id);
    const fake = fakeUpstreams({
      "openai.test": (request) => {
        // A cancel handled by another isolate only writes the task row: this agent has to read it there.
        setTimeout(async () => {
          await db.update(tasks).set({ cancelRequestedAt: new Date().toISOString() }).where(eq(tasks.id, row.id));
        }, 100);
        return new Promise((resolve, reject) => {
          const answered = setTimeout(
            () => resolve(openAiCompletion("Done.", { prompt_tokens: 400, completion_tokens: 40 })),
            3_000,
          );
          request.signal.addEventListener("abort", () => {
            clearTimeout(answered);
            reject(request.signal.reason);
          });
        });
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const config = llmConfig();
    const router = createLlmRouter(config, { logger: quietLogger });
    const result = await deliver(router, [{ id: "msg-cancel-elsewhere", taskId: row.id }], {
      workspace: openai,
      config,
    });
    expect(result.explicitAcks).toEqual(["msg-cancel-elsewhere"]);
    expect(await task(row.id)).toMatchObject({ status: "cancelled", completionTokens: 0 });
    expect(await runs(row.id)).toMatchObject([{ status: "cancelled", completionTokens: 0 }]);
    const rows = await db.select().from(usageRecords).where(eq(usageRecords.taskId, row.id));
    expect(rows).toMatchObject([{ estimated: true, completionTokens: 0 }]);
    const error = (await eventsOf(openai.headers, row.id)).find((event) => event.event_type === "task.error")!;
    expect(error.data).toMatchObject({ error_type: "cancelled", fatal: true });
  });

  it("publishes a run's provider errors and fallbacks in order with its own events, after its task.started", async () => {
    const failing = await workspaceWith({
      strategy: "fallback",
      chain: [
        { provider: "simulated", model: "sim-1?failure_rate=1" },
        { provider: "simulated", model: "sim-2?failure_rate=1" },
      ],
    });
    const row = await insertTask(failing.id);
    const config = llmConfig();
    const router = createLlmRouter(config, { logger: quietLogger, overrides: { sleep: async () => {} } });
    const result = await deliver(router, [{ id: "msg-provider-events", taskId: row.id }], {
      workspace: failing,
      config,
    });
    expect(result.retryMessages).toEqual([{ msgId: "msg-provider-events" }]);
    const events = await eventsOf(failing.headers, row.id);
    expect(events.map((event) => event.event_type)).toEqual([
      "task.started",
      ...Array(3).fill("llm.provider.error"),
      "llm.provider.fallback",
      ...Array(3).fill("llm.provider.error"),
      "task.error",
    ]);
    const [run] = await runs(row.id);
    for (const event of events) expect(event).toMatchObject({ task_id: row.id, run_id: run.id });
  });

  it("counts the prompt of an attempt that timed out at the provider in the run's and the task's figures", async () => {
    const openai = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "openai", model: "gpt-4o-mini-task-timeout" }],
    });
    const row = await insertTask(openai.id);
    const fake = fakeUpstreams({
      "openai.test": (request, call) =>
        call === 1 ? hang(request) : openAiCompletion("Done.", { prompt_tokens: 400, completion_tokens: 40 }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const config = llmConfig();
    const router = createLlmRouter(config, { logger: quietLogger, overrides: { attemptTimeoutMs: 200 } });
    await deliver(router, [{ id: "msg-timeout-charged", taskId: row.id }], { workspace: openai, config });
    expect(fake.count("openai.test")).toBe(2);

    // The answer's figures, and the timed-out attempt's prompt (estimated) in a row of its own.
    const rows = await db.select().from(usageRecords).where(eq(usageRecords.taskId, row.id));
    expect(rows).toHaveLength(2);
    expect(rows.find((usage) => usage.estimated)).toMatchObject({ completionTokens: 0 });
    const promptTokens = rows.reduce((sum, usage) => sum + usage.promptTokens, 0);
    expect(promptTokens).toBeGreaterThan(400);
    const [run] = await runs(row.id);
    expect(run).toMatchObject({ promptTokens, completionTokens: 40 });
    expect(run.costUsd).toBeCloseTo(
      rows.reduce((sum, usage) => sum + usage.costUsd, 0),
      12,
    );
    expect(await task(row.id)).toMatchObject({ promptTokens });
  });

  it("counts the prompt and written answer of an attempt that broke mid-answer in the run's and the task's figures", async () => {
    const openai = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "openai", model: "gpt-4o-mini-task-broken" }],
    });
    const row = await insertTask(openai.id);
    const encoder = new TextEncoder();
    const delta = (content: string) =>
      encoder.encode(
        `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`,
      );
    // The turn is asked as a stream (as the runtime's are): part of it is written, then the connection drops.
    const broken = () =>
      new Response(
        new ReadableStream<Uint8Array>({
          start(controller) {
            controller.enqueue(delta("Looking at the parser "));
            controller.enqueue(delta("before I change it."));
            setTimeout(() => controller.error(new TypeError("Network connection lost.")), 50);
          },
        }),
        { headers: { "Content-Type": "text/event-stream" } },
      );
    const fake = fakeUpstreams({
      "openai.test": (_request, call) =>
        call === 1 ? broken() : openAiCompletion("Done.", { prompt_tokens: 400, completion_tokens: 40 }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const config = llmConfig();
    const router = createLlmRouter(config, { logger: quietLogger, overrides: { sleep: async () => {} } });
    await deliver(router, [{ id: "msg-broken-charged", taskId: row.id }], { workspace: openai, config });
    expect(fake.count("openai.test")).toBe(2);

    // The answer's figures, and the broken attempt's prompt and written answer (estimated) in a row of its own.
    const rows = await db.select().from(usageRecords).where(eq(usageRecords.taskId, row.id));
    expect(rows).toHaveLength(2);
    const interrupted = rows.find((usage) => usage.chargeKey.includes(":interrupted:"));
    expect(interrupted).toMatchObject({ estimated: true });
    expect(interrupted?.completionTokens).toBeGreaterThan(0);
    const promptTokens = rows.reduce((sum, usage) => sum + usage.promptTokens, 0);
    const completionTokens = rows.reduce((sum, usage) => sum + usage.completionTokens, 0);
    expect(promptTokens).toBeGreaterThan(400);
    const [run] = await runs(row.id);
    expect(run).toMatchObject({ promptTokens, completionTokens });
    expect(run.costUsd).toBeCloseTo(
      rows.reduce((sum, usage) => sum + usage.costUsd, 0),
      12,
    );
    expect(await task(row.id)).toMatchObject({ promptTokens, completionTokens });
  });
});

describe("a task.created its hub refused at submission", () => {
  /**
   * Hubs that refuse their first `refusals` calls (all by default), and any call carrying a
   * task.created while `refuseCreated` is set, counting the tries; other calls are passed on.
   */
  function refusingHubs(refusals = Number.POSITIVE_INFINITY, options: { refuseCreated?: boolean } = {}) {
    const tries = { count: 0 };
    const refused = (events: { event_type: string }[]) =>
      ++tries.count <= refusals ||
      (options.refuseCreated && events.some((event) => event.event_type === "task.created"));
    const hubs = {
      getByName: (name: string) => {
        const stub = env.EVENT_HUB.getByName(name);
        return {
          publish: async (event: never) => {
            if (refused([event])) throw new Error("Durable Object is overloaded.");
            return await stub.publish(event);
          },
          publishMany: async (events: never[]) => {
            if (refused(events)) throw new Error("Durable Object is overloaded.");
            return await stub.publishMany(events);
          },
        };
      },
    };
    return { tries, EVENT_HUB: hubs as unknown as typeof env.EVENT_HUB };
  }

  async function submitWithHubDown(sent: unknown[], options: { refusals?: number; waits?: Promise<unknown>[] } = {}) {
    const { tries, EVENT_HUB } = refusingHubs(options.refusals);
    // The queue is recorded, not sent: this test delivers the message itself.
    const TASKS_QUEUE = {
      sendBatch: async (messages: { body: unknown }[]) => sent.push(...messages.map((message) => message.body)),
    };
    const config = { ...appConfig(), EVENT_HUB, TASKS_QUEUE: TASKS_QUEUE as unknown as Queue };
    const limits = { requests_per_second: 100, burst: 100, max_running_tasks: 100, max_pending_tasks: 100 };
    const { task: submitted } = await createTask(
      {
        config,
        db,
        workspaceId: workspace.id,
        logger: quietLogger,
        audit: { actor: { type: "system", id: "test" } },
        waitUntil: options.waits ? (work) => options.waits?.push(work) : undefined,
      },
      limits,
      { title: "Parked at submission", type: "code_generation", priority: "medium" },
      undefined,
    );
    return { submitted, tries };
  }

  const finishAtOnce = () => scriptedRouter(toolCalls({ name: "finish", args: { summary: "done" } }));
  /** What a run that finishes at once publishes, after its task.created. */
  const CREATED_AND_RUN = [
    "task.created",
    "task.started",
    "agent.message",
    "tool.call",
    "tool.result",
    "artifact.created",
    "task.completed",
  ];
  const eventTypes = async (taskId: string) =>
    (await eventsOf(workspace.headers, taskId)).map((event) => event.event_type);
  const parkedCount = async () =>
    (
      await env.DB.prepare("SELECT count(*) AS n FROM parked_events WHERE workspace_id = ?")
        .bind(workspace.id)
        .first<{ n: number }>()
    )?.n;

  it("is parked after one retry, not ~5 s of them, and lands before the task's own events", async () => {
    const sent: unknown[] = [];
    const { submitted, tries } = await submitWithHubDown(sent);
    expect(tries.count).toBe(1 + REQUEST_EVENT_RETRY_DELAYS_MS.length);
    expect(sent).toEqual([taskBody(workspace.id, submitted.id)]);
    const parked = await env.DB.prepare("SELECT event FROM parked_events WHERE workspace_id = ?")
      .bind(workspace.id)
      .all<{ event: string }>();
    expect(parked.results.map((row) => JSON.parse(row.event))).toMatchObject([
      { event_type: "task.created", task_id: submitted.id },
    ]);

    // The hub is back before the cron: the consumer lands the parked event first.
    await deliver(finishAtOnce(), [{ id: `msg-${submitted.id}`, taskId: submitted.id }]);
    expect(await eventTypes(submitted.id)).toEqual(CREATED_AND_RUN);
    expect(await parkedCount()).toBe(0);
  });

  it("is tried again in the background a second later, so a hub back by then has it before the cron", async () => {
    const waits: Promise<unknown>[] = [];
    const { submitted } = await submitWithHubDown([], { refusals: 1 + REQUEST_EVENT_RETRY_DELAYS_MS.length, waits });
    expect(await eventTypes(submitted.id)).toEqual([]);
    expect(waits).toHaveLength(1);
    await Promise.all(waits);
    expect(await eventTypes(submitted.id)).toEqual(["task.created"]);
    expect(await parkedCount()).toBe(0);
  });

  it("a cancel before the run lands it first, then its task.error", async () => {
    const { submitted } = await submitWithHubDown([]);
    const context = {
      config: appConfig(),
      db,
      workspaceId: workspace.id,
      logger: quietLogger,
      audit: { actor: { type: "system" as const, id: "test" } },
    };
    expect(await cancelTask(context, submitted)).toMatchObject({ immediate: true });
    expect(await eventTypes(submitted.id)).toEqual(["task.created", "task.error"]);
  });

  it("a dead letter lands it first, then the fatal task.error", async () => {
    const { submitted } = await submitWithHubDown([]);
    const batch = createMessageBatch("tasks-dlq", [
      { id: `msg-dlq-${submitted.id}`, timestamp: new Date(), attempts: 1, body: taskBody(workspace.id, submitted.id) },
    ]);
    await consumeDeadLetterBatch(batch, appConfig(), quietLogger);
    expect(await task(submitted.id)).toMatchObject({ status: "dead_lettered" });
    expect(await eventTypes(submitted.id)).toEqual(["task.created", "task.error"]);
  });

  it("when the hub still refuses it, the run's events are parked behind it and land in order", async () => {
    const { submitted } = await submitWithHubDown([]);
    // Only the parked task.created is refused; the run's own events would be taken.
    const { EVENT_HUB } = refusingHubs(0, { refuseCreated: true });
    await deliver(finishAtOnce(), [{ id: `msg-${submitted.id}`, taskId: submitted.id }], { config: { EVENT_HUB } });
    expect(await task(submitted.id)).toMatchObject({ status: "completed" });
    expect(await eventTypes(submitted.id)).toEqual([]);

    await deliverParkedEvents(env, quietLogger);
    expect(await eventTypes(submitted.id)).toEqual(CREATED_AND_RUN);
  });
});

describe("recovery from a consumer that died mid-run", () => {
  async function crashedRun(overrides: Parameters<typeof insertTask>[1] = {}) {
    const row = await insertTask(workspace.id, { status: "running", attempts: 1, ...overrides });
    await db.insert(taskRuns).values({
      id: `run_${crypto.randomUUID().replaceAll("-", "").slice(0, 26).toUpperCase()}`,
      workspaceId: workspace.id,
      taskId: row.id,
      attempt: 1,
      messageId: `msg-crash-${row.id}`,
      status: "running",
    });
    return row;
  }

  it("takes over when the run's own message comes back, closing the dead run", async () => {
    const row = await crashedRun();
    const result = await deliver(scriptedRouter(answer("recovered")), [
      { id: `msg-crash-${row.id}`, taskId: row.id, attempts: 2 },
    ]);
    expect(result.explicitAcks).toEqual([`msg-crash-${row.id}`]);
    expect(await task(row.id)).toMatchObject({ status: "completed", attempts: 2 });
    expect((await runs(row.id)).map((run) => [run.attempt, run.status])).toEqual([
      [1, "timed_out"],
      [2, "succeeded"],
    ]);
  });

  /** The calls a dead consumer made before it stopped: charged, with their usage rows written (1,000 tokens in all). */
  async function chargeDeadRun(taskId: string) {
    const [dead] = await runs(taskId);
    const charged = [
      { promptTokens: 300, completionTokens: 30, costUsd: 0.0012 },
      { promptTokens: 500, completionTokens: 0, costUsd: 0.002 },
    ];
    await db.insert(usageRecords).values(
      charged.map((figures, index) => ({
        workspaceId: workspace.id,
        chargeKey: `${dead.id}:${index + 1}`,
        taskId,
        runId: dead.id,
        provider: "simulated",
        model: "sim-test",
        totalTokens: figures.promptTokens + figures.completionTokens,
        simulated: true,
        latencyMs: 10,
        day: new Date().toISOString().slice(0, 10),
        ...figures,
      })),
    );
  }

  it("keeps what the dead run's calls were charged on its run and its task, as its usage rows say", async () => {
    const row = await crashedRun();
    await chargeDeadRun(row.id);
    await deliver(scriptedRouter(answer("recovered")), [{ id: `msg-crash-${row.id}`, taskId: row.id, attempts: 2 }]);
    const [lost, recovered] = await runs(row.id);
    expect(lost).toMatchObject({ status: "timed_out", promptTokens: 800, completionTokens: 30 });
    expect(lost.costUsd).toBeCloseTo(0.0032, 12);
    // The task adds up its runs: the lost one's charges and the answer's (10 + 5 tokens at 0.001 USD).
    const done = await task(row.id);
    expect(done).toMatchObject({
      status: "completed",
      promptTokens: 800 + recovered.promptTokens,
      completionTokens: 30 + recovered.completionTokens,
    });
    expect(done.costUsd).toBeCloseTo(0.0032 + recovered.costUsd, 12);
    // task.completed tells the task's figures as its row does.
    const completed = (await eventsOf(workspace.headers, row.id)).find(
      (event) => event.event_type === "task.completed",
    )!;
    expect(completed.data.tokens_used).toEqual({
      prompt: done.promptTokens,
      completion: done.completionTokens,
      total: done.promptTokens + done.completionTokens,
    });
    expect(completed.data.cost_usd).toBeCloseTo(done.costUsd, 12);
  });

  it("task.completed's duration_seconds is the task's, from its first attempt's start, as started_at and finished_at say", async () => {
    const startedAt = new Date(Date.now() - 10 * 60_000).toISOString();
    const row = await crashedRun({ startedAt });
    await deliver(scriptedRouter(answer("recovered")), [{ id: `msg-crash-${row.id}`, taskId: row.id, attempts: 2 }]);
    const done = await task(row.id);
    expect(done).toMatchObject({ status: "completed", startedAt });
    const completed = (await eventsOf(workspace.headers, row.id)).find(
      (event) => event.event_type === "task.completed",
    )!;
    expect(completed.data.duration_seconds).toBe((Date.parse(done.finishedAt!) - Date.parse(startedAt)) / 1000);
    expect(completed.data.duration_seconds).toBeGreaterThanOrEqual(600);
  });

  it("leaves a live run alone when another message for its task arrives", async () => {
    const row = await crashedRun();
    const router = scriptedRouter(answer("should not run"));
    const result = await deliver(router, [{ id: "msg-other", taskId: row.id }]);
    expect(result.retryMessages.map((message) => message.msgId)).toEqual(["msg-other"]);
    expect(result.delays["msg-other"]).toBeGreaterThan(60);
    expect(router.calls).toHaveLength(0);
    expect(await runs(row.id)).toHaveLength(1);
  });

  it("ends a dead run whose task was cancelled as cancelled", async () => {
    const row = await crashedRun({ cancelRequestedAt: new Date().toISOString() });
    const result = await deliver(scriptedRouter(answer("no")), [
      { id: `msg-crash-${row.id}`, taskId: row.id, attempts: 2 },
    ]);
    expect(result.explicitAcks).toEqual([`msg-crash-${row.id}`]);
    expect(await task(row.id)).toMatchObject({ status: "cancelled" });
    expect((await runs(row.id)).map((run) => run.status)).toEqual(["cancelled"]);
  });

  it("closes the dead run of a task given up in the dead-letter queue, keeping what its calls were charged", async () => {
    const row = await crashedRun();
    await chargeDeadRun(row.id);
    // Its consumer died on the last delivery: the same message comes back through tasks-dlq.
    const batch = createMessageBatch("tasks-dlq", [
      { id: `msg-crash-${row.id}`, timestamp: new Date(), attempts: 1, body: taskBody(workspace.id, row.id) },
    ]);
    await consumeDeadLetterBatch(batch, appConfig(), quietLogger);
    expect(await runs(row.id)).toMatchObject([
      { status: "timed_out", promptTokens: 800, completionTokens: 30, error: { type: "lost" } },
    ]);
    const given = await task(row.id);
    expect(given).toMatchObject({ status: "dead_lettered", promptTokens: 800, completionTokens: 30 });
    expect(given.costUsd).toBeCloseTo(0.0032, 12);
  });

  it("keeps what a dead run's calls were charged when it ends it as cancelled", async () => {
    const row = await crashedRun({ cancelRequestedAt: new Date().toISOString() });
    await chargeDeadRun(row.id);
    await deliver(scriptedRouter(answer("no")), [{ id: `msg-crash-${row.id}`, taskId: row.id, attempts: 2 }]);
    expect(await runs(row.id)).toMatchObject([{ status: "cancelled", promptTokens: 800, completionTokens: 30 }]);
    const cancelled = await task(row.id);
    expect(cancelled).toMatchObject({ status: "cancelled", promptTokens: 800, completionTokens: 30 });
    expect(cancelled.costUsd).toBeCloseTo(0.0032, 12);
  });

  it("ends as cancelled, not as a dead letter, a cancelled task whose consumer died on the last delivery", async () => {
    const row = await crashedRun({ cancelRequestedAt: new Date().toISOString() });
    await chargeDeadRun(row.id);
    const dlq = () =>
      createMessageBatch("tasks-dlq", [
        { id: `msg-crash-${row.id}`, timestamp: new Date(), attempts: 1, body: taskBody(workspace.id, row.id) },
      ]);
    const batch = dlq();
    await consumeDeadLetterBatch(batch, appConfig(), quietLogger);
    expect((await getQueueResult(batch, createExecutionContext())).explicitAcks).toEqual([`msg-crash-${row.id}`]);
    // Delivered again: nothing told twice.
    await consumeDeadLetterBatch(dlq(), appConfig(), quietLogger);

    const shown = await fetcher(`${BASE}/api/v1/tasks/${row.id}`, { headers: workspace.headers });
    expect(await shown.json()).toMatchObject({ status: "cancelled", error: { type: "cancelled" } });
    expect(await runs(row.id)).toMatchObject([{ status: "cancelled", promptTokens: 800, completionTokens: 30 }]);
    const letters = await fetcher(`${BASE}/api/v1/dead-letters?task_id=${row.id}`, { headers: workspace.headers });
    expect(((await letters.json()) as { data: unknown[] }).data).toEqual([]);
    const errors = (await eventsOf(workspace.headers, row.id)).filter((event) => event.event_type === "task.error");
    expect(errors.map((event) => event.data)).toMatchObject([{ error_type: "cancelled", fatal: true }]);
  });
});

/** The task dead-lettered through the dead-letter queue's consumer, and its dead letter. */
async function deadLetterOf(taskId: string) {
  await consumeDeadLetterBatch(
    createMessageBatch("tasks-dlq", [
      { id: `msg-dlq-${taskId}`, timestamp: new Date(), attempts: 1, body: taskBody(workspace.id, taskId) },
    ]),
    appConfig(),
    quietLogger,
  );
  const [letter] = await db.select().from(deadLetters).where(eq(deadLetters.taskId, taskId));
  return letter;
}

describe("the dead-letter path", () => {
  it("sends the last failed delivery on, then records one dead letter and a fatal task.error", async () => {
    const row = await insertTask(workspace.id);
    const router = scriptedRouter(() => {
      throw new LlmError("all_providers_failed", "still down", true);
    });
    const last = await deliver(router, [{ id: "msg-poison", taskId: row.id, attempts: 4 }]);
    expect(last.retryMessages.map((message) => message.msgId)).toEqual(["msg-poison"]);
    expect((await eventsOf(workspace.headers, row.id)).filter((event) => event.event_type === "task.error")).toEqual(
      [],
    );

    const dlq = () =>
      createMessageBatch("tasks-dlq", [
        { id: "msg-poison", timestamp: new Date(), attempts: 1, body: taskBody(workspace.id, row.id) },
      ]);
    const batch = dlq();
    await consumeDeadLetterBatch(batch, appConfig(), quietLogger);
    expect((await getQueueResult(batch, createExecutionContext())).explicitAcks).toEqual(["msg-poison"]);
    // Delivered again: nothing recorded twice.
    await consumeDeadLetterBatch(dlq(), appConfig(), quietLogger);

    expect(await task(row.id)).toMatchObject({ status: "dead_lettered", error: { type: "llm_all_providers_failed" } });
    const letters = await db.select().from(deadLetters).where(eq(deadLetters.taskId, row.id));
    expect(letters).toMatchObject([{ messageId: "msg-poison", queue: "tasks", errorType: "llm_all_providers_failed" }]);
    const fatal = (await eventsOf(workspace.headers, row.id)).filter((event) => event.event_type === "task.error");
    expect(fatal).toHaveLength(1);
    expect(fatal[0].data).toMatchObject({ fatal: true, retry_count: 3, max_retries: 3 });

    const list = await fetcher(`${BASE}/api/v1/dead-letters?replayed=false`, { headers: workspace.headers });
    expect(((await list.json()) as { data: { id: string }[] }).data.map((letter) => letter.id)).toContain(
      letters[0].id,
    );

    const replay = await fetcher(`${BASE}/api/v1/dead-letters/replay`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ ids: [letters[0].id, "dlq_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3"] }),
    });
    expect(replay.status).toBe(200);
    const replayed = (await replay.json()) as {
      replayed: { task_id: string; status: string }[];
      skipped: { reason: string }[];
    };
    expect(replayed.replayed).toEqual([expect.objectContaining({ task_id: row.id, status: "queued" })]);
    expect(replayed.skipped).toEqual([expect.objectContaining({ reason: "not_found" })]);
    expect((await task(row.id)).status).toMatch(/^(queued|running|completed)$/);
    const [letter] = await db.select().from(deadLetters).where(eq(deadLetters.taskId, row.id));
    expect(letter).toMatchObject({ replayCount: 1 });
    expect(letter.replayedAt).not.toBeNull();

    // A filter whose window ends before it starts matches nothing by construction: refused, not answered empty.
    const inverted = await fetcher(`${BASE}/api/v1/dead-letters/replay`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({
        filter: { created_after: "2026-11-28T00:00:00Z", created_before: "2026-11-01T00:00:00Z" },
      }),
    });
    expect(inverted.status).toBe(422);
    expect(((await inverted.json()) as { errors: unknown }).errors).toEqual([
      { path: "filter.created_before", message: "must be after created_after" },
    ]);
  });
  it("replays a list of 100 ids, the most a replay takes (found by fuzz: D1's bound parameters ran out, a 500)", async () => {
    const row = await insertTask(workspace.id);
    const letter = await deadLetterOf(row.id);
    const missing = Array.from({ length: 99 }, (_, index) => `dlq_missing_${index}`);
    const replay = await fetcher(`${BASE}/api/v1/dead-letters/replay`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ ids: [...missing, letter.id] }),
    });
    expect(replay.status).toBe(200);
    const outcome = (await replay.json()) as {
      replayed: { dead_letter_id: string; task_id: string }[];
      skipped: { dead_letter_id: string; reason: string }[];
    };
    expect(outcome.replayed).toEqual([expect.objectContaining({ dead_letter_id: letter.id, task_id: row.id })]);
    expect(outcome.skipped.map((skip) => skip.dead_letter_id)).toEqual(missing);
    expect(new Set(outcome.skipped.map((skip) => skip.reason))).toEqual(new Set(["not_found"]));
    expect((await task(row.id)).status).not.toBe("dead_lettered");
  });
  it("replays a dead letter once when replays of it race: one replayed, the rest skipped, one entry", async () => {
    // Found by fuzz: each replay that lost the race was skipped (task_changed) yet counted a replay and wrote an entry.
    const row = await insertTask(workspace.id);
    const letter = await deadLetterOf(row.id);
    // Rate-limit lease and key lookup cached, so the replays reach D1 together.
    for (let warm = 0; warm < 3; warm++) await fetcher(`${BASE}/api/v1/dead-letters`, { headers: workspace.headers });
    const replays = await Promise.all(
      Array.from({ length: 5 }, () =>
        fetcher(`${BASE}/api/v1/dead-letters/replay`, {
          method: "POST",
          headers: { ...workspace.headers, "Content-Type": "application/json" },
          body: JSON.stringify({ ids: [letter.id] }),
        }),
      ),
    );
    const outcomes = await Promise.all(
      replays.map(async (response) => {
        expect(response.status).toBe(200);
        return (await response.json()) as { replayed: unknown[]; skipped: unknown[] };
      }),
    );
    expect(outcomes.filter((outcome) => outcome.replayed.length === 1)).toHaveLength(1);
    const [after] = await db.select().from(deadLetters).where(eq(deadLetters.id, letter.id));
    expect(after.replayCount).toBe(1);
    const entries = await env.DB.prepare(
      "SELECT count(*) AS n FROM audit_logs WHERE workspace_id = ? AND action = 'dead_letter.replay' AND resource_id = ?",
    )
      .bind(workspace.id, letter.id)
      .first<{ n: number }>();
    expect(entries?.n).toBe(1);
  });
});

describe("benchmark no-op messages", () => {
  const noopBatch = (work: string) =>
    createMessageBatch(
      "tasks",
      ["noop-1", "noop-2"].map((id) => ({
        id: `${id}-${work}-${crypto.randomUUID()}`,
        timestamp: new Date(),
        attempts: 1,
        body: { v: 1, noop: true, work },
      })),
    );
  const probeKeys = async () => (await env.ARTIFACTS.list({ prefix: "__bench/probes/" })).objects.map((o) => o.key);

  it("acks plain no-ops without touching storage, and makes one R2 put each for the r2_put floor", async () => {
    const before = (await probeKeys()).length;
    const plain = noopBatch("none");
    await consumeTaskBatch(plain, appConfig(), { router: scriptedRouter(), logger: quietLogger });
    expect((await getQueueResult(plain, createExecutionContext())).explicitAcks.sort()).toEqual(
      plain.messages.map((message) => message.id).sort(),
    );
    expect((await probeKeys()).length).toBe(before);

    const probes = noopBatch("r2_put");
    await consumeTaskBatch(probes, appConfig(), { router: scriptedRouter(), logger: quietLogger });
    expect((await getQueueResult(probes, createExecutionContext())).explicitAcks.sort()).toEqual(
      probes.messages.map((message) => message.id).sort(),
    );
    expect((await probeKeys()).length).toBe(before + 2);
  });

  it("ignores the r2_put floor without ENABLE_DEBUG_ROUTES: an ack and no write", async () => {
    const before = (await probeKeys()).length;
    const probes = noopBatch("r2_put");
    await consumeTaskBatch(
      probes,
      { ...appConfig(), ENABLE_DEBUG_ROUTES: false },
      { router: scriptedRouter(), logger: quietLogger },
    );
    expect((await getQueueResult(probes, createExecutionContext())).explicitAcks).toHaveLength(2);
    expect((await probeKeys()).length).toBe(before);
  });
});
