import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { consumeTaskBatch } from "../../src/tasks/consumer.ts";
import { withFailingBatches } from "../support/failing-d1.ts";
import { createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";
import {
  answer,
  appConfig,
  BASE,
  fetcher,
  insertTask,
  quietLogger,
  scriptedRouter,
  taskBody,
} from "../unit/tasks/fakes.ts";

/**
 * The tasks consumer acknowledges the message of a task cancelled while it waited only once the task's end is
 * written: acknowledged before, a failed write left the task waiting for good, its message never delivered again.
 */

let workspace: TestWorkspace;
beforeAll(async () => {
  workspace = await createTestWorkspace(fetcher, BASE, { name: "tasks consumer, write failing" });
});

describe("the tasks consumer when ending a cancelled waiting task fails to write", () => {
  it("acknowledges nothing, so the message comes again; delivered again, the task ends cancelled", async () => {
    const task = await insertTask(workspace.id, { cancelRequestedAt: new Date().toISOString() });
    const messages = [
      { id: `msg-cancelled-${task.id}`, timestamp: new Date(), attempts: 1, body: taskBody(workspace.id, task.id) },
    ];
    const deps = { router: scriptedRouter(answer("never asked")), logger: quietLogger, random: () => 0.5 };

    const failed = createMessageBatch("tasks", messages);
    await expect(
      consumeTaskBatch(failed, { ...appConfig(), DB: withFailingBatches(appConfig().DB) }, deps),
    ).rejects.toThrow("database is locked");
    expect((await getQueueResult(failed, createExecutionContext())).explicitAcks).toEqual([]);

    const again = createMessageBatch("tasks", messages);
    await consumeTaskBatch(again, appConfig(), deps);
    expect((await getQueueResult(again, createExecutionContext())).explicitAcks).toEqual([messages[0].id]);
    const stored = await env.DB.prepare("SELECT status FROM tasks WHERE id = ?")
      .bind(task.id)
      .first<{ status: string }>();
    expect(stored?.status).toBe("cancelled");
  });
});
