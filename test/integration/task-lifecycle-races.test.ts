import {
  createExecutionContext,
  createMessageBatch,
  getQueueResult,
  runDurableObjectAlarm,
  runInDurableObject,
} from "cloudflare:test";
import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { createDb } from "../../src/db/client.ts";
import { deadLetters } from "../../src/db/schema.ts";
import { newId } from "../../src/lib/ids.ts";
import { MAX_LEASE_EXPIRIES } from "../../src/limits/admission.ts";
import type { LlmRouter } from "../../src/llm/types.ts";
import { consumeTaskBatch } from "../../src/tasks/consumer.ts";
import { consumeDeadLetterBatch, replayDeadLetters } from "../../src/tasks/dead-letters.ts";
import { limiterOf } from "../../src/tasks/dispatch.ts";
import type { TaskContext } from "../../src/tasks/service.ts";
import { createTestWorkspace } from "../support/workspaces.ts";
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
} from "../unit/tasks/fakes.ts";

/** Races between the steps of a task's lifecycle that a user can start at the same time. */

const db = createDb(env.DB);
const LIMITS = { requests_per_second: 100, burst: 100, max_running_tasks: 1, max_pending_tasks: 10 };

async function statusOf(headers: Record<string, string>, taskId: string, until: (status: string) => boolean) {
  let status = "";
  // Local queues run one batch at a time, and other tests' tasks may be ahead of this one.
  for (let i = 0; i < 200; i++) {
    status = ((await (await fetcher(`${BASE}/api/v1/tasks/${taskId}`, { headers })).json()) as { status: string })
      .status;
    if (until(status)) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return status;
}

describe("a message delivered again while its first delivery still runs", () => {
  it("takes the task over once: one task.completed, and the task counts both runs' tokens", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE, { name: "message twice" });
    const row = await insertTask(workspace.id);
    let answerFirst!: () => void;
    const held = new Promise<void>((resolve) => {
      answerFirst = resolve;
    });
    const first = scriptedRouter(async (request, context, call) => {
      await held;
      return answer("first delivery")(request, context, call);
    });
    const deliver = (router: LlmRouter, attempts: number) => {
      const batch = createMessageBatch("tasks", [
        { id: `msg-twice-${row.id}`, timestamp: new Date(), attempts, body: taskBody(workspace.id, row.id) },
      ]);
      return consumeTaskBatch(batch, appConfig(), { router, logger: quietLogger, random: () => 0.5 }).then(() =>
        getQueueResult(batch, createExecutionContext()),
      );
    };
    const firstDelivery = deliver(first, 1);
    while (first.calls.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
    // The same message again: to its consumer the first run looks dead, so it takes the task over and ends it.
    const second = await deliver(scriptedRouter(answer("second delivery")), 2);
    expect(second.explicitAcks).toHaveLength(1);
    answerFirst();
    expect((await firstDelivery).explicitAcks).toHaveLength(1);

    const shown = (await (await fetcher(`${BASE}/api/v1/tasks/${row.id}`, { headers: workspace.headers })).json()) as {
      status: string;
      result: { summary: string };
      tokens: { prompt: number; completion: number };
    };
    expect(shown).toMatchObject({ status: "completed", result: { summary: "second delivery" } });
    const runs = (
      (await (await fetcher(`${BASE}/api/v1/tasks/${row.id}/runs`, { headers: workspace.headers })).json()) as {
        data: { status: string; tokens: { prompt: number; completion: number } }[];
      }
    ).data;
    expect(runs.map((run) => run.status)).toEqual(["timed_out", "succeeded"]);
    expect(shown.tokens).toMatchObject({
      prompt: runs.reduce((sum, run) => sum + run.tokens.prompt, 0),
      completion: runs.reduce((sum, run) => sum + run.tokens.completion, 0),
    });
    expect(shown.tokens.prompt).toBe(200);
    const ends = (await eventsOf(workspace.headers, row.id)).filter((event) =>
      ["task.completed", "task.error"].includes(event.event_type),
    );
    expect(ends.map((event) => event.event_type)).toEqual(["task.completed"]);
  });
});

describe("a pending task released before its submission has written its row", () => {
  it("is run once its row is there, not dropped as an unknown task", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE, { name: "row not yet written" });
    // The limiter released the task into a free slot and its message came at once: the row is not written yet.
    const taskId = newId("task");
    const deliver = (attempts: number) => {
      const batch = createMessageBatch("tasks", [
        { id: `msg-early-${taskId}`, timestamp: new Date(), attempts, body: taskBody(workspace.id, taskId) },
      ]);
      return consumeTaskBatch(batch, appConfig(), {
        router: scriptedRouter(answer("done")),
        logger: quietLogger,
      }).then(() => getQueueResult(batch, createExecutionContext()));
    };
    const early = await deliver(1);
    expect(early.explicitAcks).toEqual([]);
    expect(early.retryMessages).toHaveLength(1);

    await insertTask(workspace.id, { id: taskId, status: "pending", queuedAt: null });
    expect((await deliver(2)).explicitAcks).toHaveLength(1);
    const shown = await fetcher(`${BASE}/api/v1/tasks/${taskId}`, { headers: workspace.headers });
    expect(await shown.json()).toMatchObject({ status: "completed", attempts: 1 });
  });
});

describe("two replays of one dead letter at once", () => {
  it("replay the task once, and it still runs when a slot frees", { timeout: 30_000 }, async () => {
    const workspace = await createTestWorkspace(fetcher, BASE, { name: "replay race", limits: LIMITS });
    const config = appConfig();
    // The workspace's one slot is taken, so the replayed task waits in the pending line.
    const blocker = await insertTask(workspace.id);
    await limiterOf(config, workspace.id).submitTask({
      taskId: blocker.id,
      priority: "medium",
      message: taskBody(workspace.id, blocker.id),
      maxRunning: LIMITS.max_running_tasks,
      maxPending: LIMITS.max_pending_tasks,
    });
    const row = await insertTask(workspace.id, { agentConfig: { model: "simulated:sim-1" } });
    await consumeDeadLetterBatch(
      createMessageBatch("tasks-dlq", [
        { id: `msg-dead-${row.id}`, timestamp: new Date(), attempts: 1, body: taskBody(workspace.id, row.id) },
      ]),
      config,
      quietLogger,
    );
    const [letter] = await db.select().from(deadLetters).where(eq(deadLetters.taskId, row.id));

    // Both read the letter before either resets its task: the one that loses the row is skipped.
    const ctx: TaskContext = {
      config,
      db,
      workspaceId: workspace.id,
      logger: quietLogger,
      audit: { actor: { type: "system", id: "test", display: "test" }, requestId: "req_replay_race" },
    };
    const outcomes = await Promise.all([
      replayDeadLetters(ctx, LIMITS, { ids: [letter.id], limit: 100 }),
      replayDeadLetters(ctx, LIMITS, { ids: [letter.id], limit: 100 }),
    ]);
    expect(outcomes.flatMap((outcome) => outcome.replayed)).toEqual([
      expect.objectContaining({ task_id: row.id, status: "pending" }),
    ]);
    expect(outcomes.flatMap((outcome) => outcome.skipped)).toEqual([
      expect.objectContaining({ task_id: row.id, reason: "task_changed" }),
    ]);

    // The blocker ends: its slot goes to the replayed task, which runs (the real queue, the simulated provider).
    const batch = createMessageBatch("tasks", [
      { id: `msg-blocker-${blocker.id}`, timestamp: new Date(), attempts: 1, body: taskBody(workspace.id, blocker.id) },
    ]);
    await consumeTaskBatch(batch, config, { router: scriptedRouter(answer("done")), logger: quietLogger });
    expect((await getQueueResult(batch, createExecutionContext())).explicitAcks).toHaveLength(1);
    expect(
      await statusOf(workspace.headers, row.id, (status) => !["pending", "queued", "running"].includes(status)),
    ).toBe("completed");
  });
});

describe("a slot the limiter's alarm gives up", () => {
  it("goes to the next pending task, whose row reads queued at once, not pending until it starts", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE, { name: "lapsed lease", limits: LIMITS });
    const config = appConfig();
    const submit = (taskId: string) =>
      limiterOf(config, workspace.id).submitTask({
        taskId,
        priority: "medium",
        message: taskBody(workspace.id, taskId),
        maxRunning: LIMITS.max_running_tasks,
        maxPending: LIMITS.max_pending_tasks,
      });
    const stuck = await insertTask(workspace.id);
    expect(await submit(stuck.id)).toMatchObject({ status: "queued" });
    const waiting = await insertTask(workspace.id, { status: "pending", queuedAt: null });
    expect(await submit(waiting.id)).toMatchObject({ status: "pending" });
    // No consumer kept the first task's slot, and its lease has lapsed for the last time: the alarm gives it up.
    const limiter = env.WORKSPACE_LIMITER.getByName(workspace.id);
    await runInDurableObject(limiter, (_instance, state) => {
      state.storage.sql.exec(
        "UPDATE limiter_tasks SET lease_expires_at_ms = 0, lease_expiries = ? WHERE task_id = ?",
        MAX_LEASE_EXPIRIES - 1,
        stuck.id,
      );
    });
    expect(await runDurableObjectAlarm(limiter)).toBe(true);
    const shown = await fetcher(`${BASE}/api/v1/tasks/${waiting.id}`, { headers: workspace.headers });
    expect(((await shown.json()) as { status: string }).status).not.toBe("pending");
  });
});
