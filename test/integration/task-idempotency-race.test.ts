import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { expect, it } from "vitest";
import { createDb } from "../../src/db/client.ts";
import { tasks } from "../../src/db/schema.ts";
import { taskMessage } from "../../src/tasks/messages.ts";
import { createTask } from "../../src/tasks/service.ts";
import { createTestWorkspace } from "../support/workspaces.ts";
import { appConfig, BASE, fetcher, insertTask, quietLogger } from "../unit/tasks/fakes.ts";

/**
 * Two submissions with one Idempotency-Key: the one whose insert loses gives its admission back. When that
 * admission held the workspace's only slot, a task waiting behind it starts now, not when its lease lapses.
 */

const db = createDb(env.DB);
const LIMITS = { requests_per_second: 100, burst: 100, max_running_tasks: 1, max_pending_tasks: 10 };

it("sends the task its lost admission let start, rather than leave it pending for two minutes", async () => {
  const workspace = await createTestWorkspace(fetcher, BASE, { name: "idempotency-race" });
  const key = `race-${crypto.randomUUID()}`;
  const waiting = await insertTask(workspace.id, { status: "pending", queuedAt: null });
  let raced = false;
  // The loser's admission takes the only slot; then, before its insert, another task queues behind it and the
  // winner's row with the same key lands.
  const WORKSPACE_LIMITER = {
    getByName(name: string) {
      const real = env.WORKSPACE_LIMITER.getByName(name);
      return {
        submitTask: async (input: Parameters<typeof real.submitTask>[0]) => {
          const admitted = await real.submitTask(input);
          if (!raced) {
            raced = true;
            const behind = await real.submitTask({
              taskId: waiting.id,
              priority: "medium",
              message: taskMessage(workspace.id, waiting.id),
              maxRunning: LIMITS.max_running_tasks,
              maxPending: LIMITS.max_pending_tasks,
            });
            expect(behind.status).toBe("pending");
            await insertTask(workspace.id, { idempotencyKey: key, requestHash: "the winner's" });
          }
          return admitted;
        },
        finishTasks: (ids: string[]) => real.finishTasks(ids),
      };
    },
  };
  const sent: unknown[] = [];
  const TASKS_QUEUE = { sendBatch: async (messages: { body: unknown }[]) => sent.push(...messages.map((m) => m.body)) };
  const config = {
    ...appConfig(),
    WORKSPACE_LIMITER: WORKSPACE_LIMITER as unknown as typeof env.WORKSPACE_LIMITER,
    TASKS_QUEUE: TASKS_QUEUE as unknown as Queue,
  };
  const context = {
    config,
    db,
    workspaceId: workspace.id,
    logger: quietLogger,
    audit: { actor: { type: "system" as const, id: "test" } },
  };
  // The same key with another body than the winner's: refused, which is beside the point here.
  await createTask(context, LIMITS, { title: "Loser", type: "testing", priority: "medium" }, key).catch(() => {});
  expect(raced).toBe(true);
  expect(sent).toEqual([taskMessage(workspace.id, waiting.id)]);
  const [row] = await db.select().from(tasks).where(eq(tasks.id, waiting.id));
  expect(row.status).toBe("queued");
});
