import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { beforeAll, describe, expect, it } from "vitest";
import { createDb } from "../../src/db/client.ts";
import { artifacts, tasks } from "../../src/db/schema.ts";
import type { ChatResult, LlmRouter } from "../../src/llm/types.ts";
import { consumeTaskBatch } from "../../src/tasks/consumer.ts";
import { createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";
import {
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

/** The agent's tool calls as the tasks consumer runs them: what the model is told, what the task keeps. */

const db = createDb(env.DB);
let workspace: TestWorkspace;
beforeAll(async () => {
  workspace = await createTestWorkspace(fetcher, BASE, { name: "agent-tool-calls" });
});

async function deliver(router: LlmRouter, taskId: string) {
  const batch = createMessageBatch("tasks", [
    { id: `msg-${taskId}`, timestamp: new Date(), attempts: 1, body: taskBody(workspace.id, taskId) },
  ]);
  await consumeTaskBatch(batch, appConfig(), { router, logger: quietLogger, random: () => 0.5 });
  return getQueueResult(batch, createExecutionContext());
}

const filesOf = (taskId: string) => db.select().from(artifacts).where(eq(artifacts.taskId, taskId));
const contentOf = async (taskId: string, path: string) => {
  const row = (await filesOf(taskId)).find((file) => file.path === path);
  return row ? (await env.ARTIFACTS.get(row.r2Key))?.text() : undefined;
};

/** The tool results the model was sent, in order, parsed. */
function toolResults(router: ReturnType<typeof scriptedRouter>): Record<string, unknown>[] {
  const last = router.calls.at(-1)!.request.messages;
  return last.filter((message) => message.role === "tool").map((message) => JSON.parse(message.content!));
}

describe("read_file", () => {
  it("tells the model a whole file that is not ASCII is whole, not truncated", async () => {
    const row = await insertTask(workspace.id);
    const text = "# Café\n\nNaïve résumé — 日本語 ✓\n";
    const router = scriptedRouter(
      toolCalls({ name: "write_file", args: { path: "notes.md", content: text } }),
      toolCalls({ name: "read_file", args: { path: "notes.md" } }),
      toolCalls({ name: "finish", args: { summary: "Read it back" } }),
    );
    await deliver(router, row.id);
    const [, read] = toolResults(router);
    expect(read).toEqual({ path: "notes.md", content: text, truncated: false });
  });

  it("still says truncated for a file longer than what it hands back", async () => {
    const row = await insertTask(workspace.id);
    const text = "é".repeat(70_000);
    const router = scriptedRouter(
      toolCalls({ name: "write_file", args: { path: "long.txt", content: text } }),
      toolCalls({ name: "read_file", args: { path: "long.txt" } }),
      toolCalls({ name: "finish", args: { summary: "Read it back" } }),
    );
    await deliver(router, row.id);
    const [, read] = toolResults(router);
    expect(read).toMatchObject({ path: "long.txt", truncated: true });
    expect((read.content as string).length).toBe(64 * 1024);
  });

  it("cuts a long file between characters, not inside a surrogate pair", async () => {
    const row = await insertTask(workspace.id);
    const router = scriptedRouter(
      toolCalls({ name: "write_file", args: { path: "emoji.txt", content: `a${"😀".repeat(40_000)}` } }),
      toolCalls({ name: "read_file", args: { path: "emoji.txt" } }),
      toolCalls({ name: "finish", args: { summary: "Read it back" } }),
    );
    await deliver(router, row.id);
    const [, read] = toolResults(router);
    const content = read.content as string;
    // Compared as facts, not strings: a lone surrogate in a failure's diff breaks the test runner's socket.
    expect({ truncated: read.truncated, length: content.length, whole: content === `a${"😀".repeat(32_767)}` }).toEqual(
      {
        truncated: true,
        length: 64 * 1024 - 1,
        whole: true,
      },
    );
  });
});

describe("arguments that are not JSON", () => {
  it("answer the model with a tool error it can act on, and keep the cut-off content out of tool.call", async () => {
    const row = await insertTask(workspace.id);
    // A write_file cut off by max_tokens mid-content: its arguments end inside the string.
    const cut = `{"path": "big.md", "content": "${"lorem ipsum ".repeat(5_000)}`;
    const router = scriptedRouter(
      (request, context, call) => {
        const step = toolCalls({ name: "write_file", args: {} })(request, context, call) as ChatResult;
        step.message.tool_calls![0].function.arguments = cut;
        return { ...step, finish_reason: "length" };
      },
      toolCalls({ name: "finish", args: { summary: "Gave up on big.md" } }),
    );
    await deliver(router, row.id);
    expect(await task(row.id)).toMatchObject({ status: "completed", result: { summary: "Gave up on big.md" } });
    expect(toolResults(router)[0]).toMatchObject({
      status: 400,
      error: expect.stringMatching(/^arguments are not valid JSON \(.*position/),
    });
    const events = await eventsOf(workspace.headers, row.id);
    const call = events.find((event) => event.event_type === "tool.call")!;
    expect(JSON.stringify(call.data.arguments).length).toBeLessThan(1_000);
    expect(call.data.arguments).toMatchObject({ raw: expect.stringContaining('{"path": "big.md"') });
    expect(events.find((event) => event.event_type === "tool.result")!.data).toMatchObject({
      status: "error",
      code: 400,
    });
  });
});

describe("parallel tool calls", () => {
  it("runs every call of a turn that also calls finish, whatever their order", async () => {
    const row = await insertTask(workspace.id);
    const router = scriptedRouter(
      toolCalls(
        { name: "finish", args: { summary: "Wrote notes.md" } },
        { name: "write_file", args: { path: "notes.md", content: "notes\n" } },
      ),
    );
    await deliver(router, row.id);
    expect(await task(row.id)).toMatchObject({ status: "completed", result: { summary: "Wrote notes.md" } });
    expect(await contentOf(row.id, "notes.md")).toBe("notes\n");
    const events = await eventsOf(workspace.headers, row.id);
    expect(events.filter((event) => event.event_type === "tool.result").map((event) => event.data.tool_name)).toEqual([
      "finish",
      "write_file",
    ]);
  });
});

describe("finish", () => {
  it("takes a summary given as lines, and answers a status it does not know with a tool error to mend", async () => {
    const row = await insertTask(workspace.id);
    const router = scriptedRouter(
      toolCalls({ name: "finish", args: { summary: "Done", status: "done" } }),
      toolCalls({ name: "finish", args: { summary: ["Wrote a.ts", "Tested it"], status: "partial_success" } }),
    );
    await deliver(router, row.id);
    expect(toolResults(router)[0]).toEqual({ error: 'status must be "success" or "partial_success"', status: 400 });
    expect(await task(row.id)).toMatchObject({
      status: "completed",
      result: { summary: "Wrote a.ts\nTested it", status: "partial_success" },
    });
  });
});

describe("the run's report", () => {
  it("keeps a REPORT.md the agent wrote itself rather than replacing it with the summary", async () => {
    const row = await insertTask(workspace.id, { type: "documentation" });
    const report = "# Security review\n\nThree findings, each with a fix.\n";
    const router = scriptedRouter(
      toolCalls({ name: "write_file", args: { path: "REPORT.md", content: report } }),
      toolCalls({ name: "finish", args: { summary: "Wrote the review to REPORT.md" } }),
    );
    await deliver(router, row.id);
    expect(await task(row.id)).toMatchObject({ status: "completed" });
    expect(await contentOf(row.id, "REPORT.md")).toBe(report);
  });
});

const task = (id: string) =>
  db
    .select()
    .from(tasks)
    .where(eq(tasks.id, id))
    .then((rows) => rows[0]);

describe("the run's own look at its task row between steps", () => {
  it("lets a run go on when one read of its task row fails, as the batch's cancel watch does", async () => {
    const row = await insertTask(workspace.id);
    const config = appConfig();
    let failed = 0;
    // D1 as it sometimes answers: one read fails (a network blip), the next works.
    const flakyDb = new Proxy(config.DB, {
      get(target, key) {
        if (key !== "prepare") return Reflect.get(target, key, target);
        return (sql: string) => {
          if (sql.startsWith("SELECT cancel_requested_at AS at") && failed++ === 0)
            throw new Error("D1_ERROR: Network connection lost.");
          return target.prepare(sql);
        };
      },
    });
    const slow =
      (step: ReturnType<typeof toolCalls>) =>
      async (...args: Parameters<typeof step>) => {
        // Past the interval between the run's reads of its row (CANCEL_POLL_INTERVAL_MS).
        await new Promise((wake) => setTimeout(wake, 1_100));
        return step(...args);
      };
    const router = scriptedRouter(
      slow(toolCalls({ name: "write_file", args: { path: "a.txt", content: "a" } })),
      toolCalls({ name: "finish", args: { summary: "Wrote a.txt" } }),
    );
    const batch = createMessageBatch("tasks", [
      { id: `msg-${row.id}`, timestamp: new Date(), attempts: 1, body: taskBody(workspace.id, row.id) },
    ]);
    await consumeTaskBatch(batch, { ...config, DB: flakyDb }, { router, logger: quietLogger, random: () => 0.5 });
    const result = await getQueueResult(batch, createExecutionContext());
    expect(failed).toBeGreaterThan(0);
    expect(result.retryMessages).toEqual([]);
    expect(await task(row.id)).toMatchObject({ status: "completed", attempts: 1, result: { summary: "Wrote a.txt" } });
  });
});
