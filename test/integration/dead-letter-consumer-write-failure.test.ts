import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { consumeDeadLetterBatch } from "../../src/tasks/dead-letters.ts";
import { withFailingBatches } from "../support/failing-d1.ts";
import { createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";
import { appConfig, BASE, fetcher, insertTask, quietLogger, taskBody } from "../unit/tasks/fakes.ts";

/**
 * The dead-letter queue's consumer acknowledges a letter only once what it decided is written: acknowledged
 * before its write, a letter whose D1 batch failed was never delivered again, and its task stayed queued for good.
 */

let workspace: TestWorkspace;
beforeAll(async () => {
  workspace = await createTestWorkspace(fetcher, BASE, { name: "dead letters, write failing" });
});

describe("the dead-letter consumer when its write fails", () => {
  it("acknowledges nothing, so the letter comes again; delivered again, it is recorded", async () => {
    const task = await insertTask(workspace.id);
    const messages = [
      { id: `msg-dlq-write-${task.id}`, timestamp: new Date(), attempts: 1, body: taskBody(workspace.id, task.id) },
    ];
    const config = appConfig();
    const failed = createMessageBatch("tasks-dlq", messages);
    await expect(
      consumeDeadLetterBatch(failed, { ...config, DB: withFailingBatches(config.DB) }, quietLogger),
    ).rejects.toThrow("database is locked");
    expect((await getQueueResult(failed, createExecutionContext())).explicitAcks).toEqual([]);

    const again = createMessageBatch("tasks-dlq", messages);
    await consumeDeadLetterBatch(again, config, quietLogger);
    expect((await getQueueResult(again, createExecutionContext())).explicitAcks).toEqual([messages[0].id]);
    const stored = await env.DB.prepare("SELECT status FROM tasks WHERE id = ?")
      .bind(task.id)
      .first<{ status: string }>();
    expect(stored?.status).toBe("dead_lettered");
  });
});
