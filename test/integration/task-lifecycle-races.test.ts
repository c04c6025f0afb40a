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
  toolCalls,
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

/** One delivery of a task's message to the consumer, with `router` as its LLM; answers what it did with the message. */
function deliverTo(workspaceId: string, taskId: string) {
  return (router: LlmRouter, messageId: string, attempts: number) => {
    const batch = createMessageBatch("tasks", [
      { id: messageId, timestamp: new Date(), attempts, body: taskBody(workspaceId, taskId) },
    ]);
    return consumeTaskBatch(batch, appConfig(), { router, logger: quietLogger, random: () => 0.5 }).then(() =>
      getQueueResult(batch, createExecutionContext()),
    );
  };
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
    const deliverOnce = deliverTo(workspace.id, row.id);
    const deliver = (router: LlmRouter, attempts: number) => deliverOnce(router, `msg-twice-${row.id}`, attempts);
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

describe("a run another delivery took over", () => {
  /**
   * A task with notes.md from an earlier attempt; its message delivered (to `first`), then delivered again while
   * that run's first call waits for `release`: the second delivery takes the task over and writes notes.md itself.
   */
  async function takenOver(name: string, firstRunWrites: string) {
    const workspace = await createTestWorkspace(fetcher, BASE, { name });
    const row = await insertTask(workspace.id);
    const deliver = deliverTo(workspace.id, row.id);
    const earlier = scriptedRouter(
      toolCalls({ name: "write_file", args: { path: "notes.md", content: "earlier attempt" } }),
      answer("earlier done"),
    );
    await deliver(earlier, `msg-earlier-${row.id}`, 1);
    // Back to queued as a retry would leave it, so the next delivery runs it again.
    await env.DB.prepare("UPDATE tasks SET status = 'queued', finished_at = NULL WHERE id = ?").bind(row.id).run();

    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    // Its provider answers once let go, and stops waiting when the run's call is aborted (as the router's does).
    const first = scriptedRouter(async (request, context, call) => {
      await Promise.race([
        released,
        new Promise((_, reject) => context.signal?.addEventListener("abort", () => reject(context.signal?.reason))),
      ]);
      const step =
        call === 1
          ? toolCalls({ name: "write_file", args: { path: "notes.md", content: firstRunWrites } })
          : answer("first run done");
      return step(request, context, call);
    });
    const firstDelivery = deliver(first, `msg-twice-${row.id}`, 1);
    while (first.calls.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
    const second = scriptedRouter(
      toolCalls({ name: "write_file", args: { path: "notes.md", content: "second run" } }),
      answer("second run done"),
    );
    await deliver(second, `msg-twice-${row.id}`, 2);
    return { workspace, row, first, firstDelivery, release };
  }

  /** The task ended as the second run left it, and storage holds only what its rows name. */
  async function expectSecondRunsFiles(headers: Record<string, string>, workspaceId: string, taskId: string) {
    const shown = (await (await fetcher(`${BASE}/api/v1/tasks/${taskId}`, { headers })).json()) as {
      status: string;
      result: { summary: string };
    };
    expect(shown).toMatchObject({ status: "completed", result: { summary: "second run done" } });
    const files = (
      (await (await fetcher(`${BASE}/api/v1/tasks/${taskId}/artifacts`, { headers })).json()) as {
        data: { id: string; path: string; sha256: string }[];
      }
    ).data;
    const notes = files.find((file) => file.path === "notes.md")!;
    const content = await fetcher(`${BASE}/api/v1/artifacts/${notes.id}/content`, { headers });
    expect(await content.text()).toBe("second run");
    expect(content.headers.get("ETag")).toBe(`"${notes.sha256}"`);
    // The earlier attempt's version was replaced, and nothing the first run wrote is kept.
    const stored = await env.ARTIFACTS.list({ prefix: `tasks/${workspaceId}/${taskId}/` });
    const named = await env.DB.prepare("SELECT r2_key FROM artifacts WHERE task_id = ? ORDER BY r2_key")
      .bind(taskId)
      .all<{ r2_key: string }>();
    expect(stored.objects.map((object) => object.key).sort()).toEqual(named.results.map((row) => row.r2_key));
  }

  it("is stopped at once: its call is aborted, and it writes no file and calls the provider no more", async () => {
    const { workspace, row, first, firstDelivery, release } = await takenOver("run taken over", "first run");
    // Within the watch's interval (a second), with no answer from its provider.
    const firstEnded = await Promise.race([
      firstDelivery.then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 5_000)),
    ]);
    release();
    await firstDelivery;
    expect(firstEnded).toBe(true);
    expect(first.calls).toHaveLength(1);
    await expectSecondRunsFiles(workspace.headers, workspace.id, row.id);
    const runIds = (
      (await (await fetcher(`${BASE}/api/v1/tasks/${row.id}/runs`, { headers: workspace.headers })).json()) as {
        data: { id: string }[];
      }
    ).data.map((run) => run.id);
    const fromFirstRun = (await eventsOf(workspace.headers, row.id)).filter(
      (event) =>
        (event as { run_id?: string }).run_id === runIds[1] &&
        ["tool.call", "artifact.updated", "task.completed"].includes(event.event_type),
    );
    expect(fromFirstRun).toEqual([]);
  });

  it("writing before it is stopped, replaces neither the new run's file nor its row", async () => {
    const { workspace, row, firstDelivery, release } = await takenOver("run taken over, writing", "first run, late");
    // Let go at once: its answer comes before the watch can tell it was taken over, and it writes the file.
    release();
    await firstDelivery;
    await expectSecondRunsFiles(workspace.headers, workspace.id, row.id);
  });
});

describe("a running task cancelled, its message delivered again before its run stops", () => {
  it("keeps the files the run wrote before the cancel, as a cancel the run notices itself does", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE, { name: "cancelled, delivered again" });
    const row = await insertTask(workspace.id);
    const deliverOnce = deliverTo(workspace.id, row.id);
    const deliver = (router: LlmRouter, attempts: number) =>
      deliverOnce(router, `msg-cancel-again-${row.id}`, attempts);
    // The run writes notes.md, then its next call waits until the run is stopped.
    const first = scriptedRouter(
      toolCalls({ name: "write_file", args: { path: "notes.md", content: "written before the cancel" } }),
      async (_request, context) =>
        new Promise((_, reject) => {
          if (context.signal?.aborted) reject(context.signal.reason);
          context.signal?.addEventListener("abort", () => reject(context.signal?.reason));
        }),
    );
    const running = deliver(first, 1);
    while (first.calls.length < 2) await new Promise((resolve) => setTimeout(resolve, 10));
    // Cancelled in another isolate (its route only writes the row): this run's watch sees it within a second.
    await env.DB.prepare("UPDATE tasks SET cancel_requested_at = ? WHERE id = ?")
      .bind(new Date().toISOString(), row.id)
      .run();
    // The message comes again before the run has stopped: that delivery ends the task (and the run) as cancelled.
    await deliver(scriptedRouter(answer("never runs")), 2);
    await running;

    const shown = (await (await fetcher(`${BASE}/api/v1/tasks/${row.id}`, { headers: workspace.headers })).json()) as {
      status: string;
    };
    expect(shown.status).toBe("cancelled");
    const { data } = (await (
      await fetcher(`${BASE}/api/v1/tasks/${row.id}/artifacts`, { headers: workspace.headers })
    ).json()) as { data: { id: string; path: string }[] };
    expect(data.map((file) => file.path)).toEqual(["notes.md"]);
    const content = await fetcher(`${BASE}/api/v1/artifacts/${data[0].id}/content`, { headers: workspace.headers });
    expect(await content.text()).toBe("written before the cancel");
  });
});

describe("a file a running task rewrites", () => {
  it("reads as the version its row describes until the run ends, then as the new one", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE, { name: "rewrite while running" });
    const row = await insertTask(workspace.id);
    const deliverOnce = deliverTo(workspace.id, row.id);
    const deliver = (router: LlmRouter, attempts: number) =>
      deliverOnce(router, `msg-rewrite-${row.id}-${attempts}`, attempts);
    await deliver(
      scriptedRouter(
        toolCalls({ name: "write_file", args: { path: "notes.md", content: "version 1" } }),
        answer("one"),
      ),
      1,
    );
    await env.DB.prepare("UPDATE tasks SET status = 'queued', finished_at = NULL WHERE id = ?").bind(row.id).run();
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const rewriting = scriptedRouter(
      toolCalls({ name: "write_file", args: { path: "notes.md", content: "version 2, longer" } }),
      async (request, context, call) => {
        await released;
        return answer("two")(request, context, call);
      },
    );
    const running = deliver(rewriting, 2);
    while (rewriting.calls.length < 2) await new Promise((resolve) => setTimeout(resolve, 10));

    const read = async () => {
      const { data } = (await (
        await fetcher(`${BASE}/api/v1/tasks/${row.id}/artifacts`, { headers: workspace.headers })
      ).json()) as { data: { id: string; sha256: string; size_bytes: number }[] };
      const content = await fetcher(`${BASE}/api/v1/artifacts/${data[0].id}/content`, { headers: workspace.headers });
      return {
        text: await content.text(),
        etagMatchesRow: content.headers.get("ETag") === `"${data[0].sha256}"`,
        length: Number(content.headers.get("Content-Length")),
        rowSize: data[0].size_bytes,
      };
    };
    // The new version is written, but the row still names the old one: so does the content.
    expect(await read()).toEqual({ text: "version 1", etagMatchesRow: true, length: 9, rowSize: 9 });
    release();
    await running;
    expect(await read()).toEqual({ text: "version 2, longer", etagMatchesRow: true, length: 17, rowSize: 17 });
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
