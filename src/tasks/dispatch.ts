import { and, eq, inArray } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { tasks } from "../db/schema.ts";
import type { AppConfig } from "../env.ts";
import type { Logger } from "../lib/logger.ts";
import type { AdmissionSnapshot, Depth, Dispatch, SubmitInput, SubmitResult } from "../limits/admission.ts";

/**
 * Sending tasks the WorkspaceLimiter released into free slots: one queue
 * `sendBatch` and one D1 update (pending → queued) for all of them. If this
 * fails half-way the slots' leases lapse and the limiter sends them again, so
 * a lost send delays a task but never loses it.
 */

/** Below the queue's 100 messages per sendBatch and D1's 100 bound parameters per statement. */
const CHUNK_SIZE = 90;

/** The workspace's admission, as plain promises (RPC results are structured clones of these shapes). */
export interface Admission {
  submitTask(input: SubmitInput): Promise<SubmitResult>;
  finishTasks(taskIds: string[]): Promise<{ dispatch: Dispatch[]; released: number; depth: Depth }>;
  renewTasks(taskIds: string[], leaseMs: number): Promise<{ renewed: string[] }>;
  admissionSnapshot(): Promise<AdmissionSnapshot>;
  setTaskCaps(maxRunning: number, maxPending: number): Promise<{ dispatch: Dispatch[]; depth: Depth }>;
}

export function limiterOf(config: Pick<AppConfig, "WORKSPACE_LIMITER">, workspaceId: string): Admission {
  const stub = config.WORKSPACE_LIMITER.getByName(workspaceId);
  return {
    submitTask: async (input) => (await stub.submitTask(input)) as SubmitResult,
    finishTasks: async (taskIds) =>
      (await stub.finishTasks(taskIds)) as { dispatch: Dispatch[]; released: number; depth: Depth },
    renewTasks: async (taskIds, leaseMs) => (await stub.renewTasks(taskIds, leaseMs)) as { renewed: string[] },
    admissionSnapshot: async () => (await stub.admissionSnapshot()) as AdmissionSnapshot,
    setTaskCaps: async (maxRunning, maxPending) =>
      (await stub.setTaskCaps(maxRunning, maxPending)) as { dispatch: Dispatch[]; depth: Depth },
  };
}

/**
 * The workspace's task caps changed: the limiter takes them now, and the pending tasks a raised
 * `max_running_tasks` makes room for are sent. It never fails the change, which D1 already holds: a limiter that
 * does not answer takes the caps with the workspace's next submission, as it did before.
 */
export async function applyTaskCaps(
  config: Pick<AppConfig, "WORKSPACE_LIMITER" | "TASKS_QUEUE">,
  db: Database,
  workspaceId: string,
  caps: { max_running_tasks: number; max_pending_tasks: number },
  logger: Logger,
): Promise<void> {
  let dispatch: Dispatch[];
  try {
    ({ dispatch } = await limiterOf(config, workspaceId).setTaskCaps(caps.max_running_tasks, caps.max_pending_tasks));
  } catch (error) {
    logger.error("task caps not applied to the limiter", { error, workspace_id: workspaceId });
    return;
  }
  await sendDispatches(config, db, workspaceId, dispatch, logger);
}

export async function sendDispatches(
  config: Pick<AppConfig, "TASKS_QUEUE">,
  db: Database,
  workspaceId: string,
  dispatch: Dispatch[],
  logger: Logger,
): Promise<void> {
  if (dispatch.length === 0) return;
  try {
    for (let start = 0; start < dispatch.length; start += CHUNK_SIZE) {
      const chunk = dispatch.slice(start, start + CHUNK_SIZE);
      await config.TASKS_QUEUE.sendBatch(chunk.map((item) => ({ body: item.message, contentType: "json" as const })));
      const queuedAt = new Date().toISOString();
      await db
        .update(tasks)
        .set({ status: "queued", queuedAt, updatedAt: queuedAt })
        .where(
          and(
            eq(tasks.workspaceId, workspaceId),
            inArray(
              tasks.id,
              chunk.map((item) => item.taskId),
            ),
            eq(tasks.status, "pending"),
          ),
        );
    }
  } catch (error) {
    // The leases lapse and the limiter's alarm sends these again.
    logger.error("sending released tasks failed; the limiter will send them again", {
      error,
      task_ids: dispatch.map((item) => item.taskId),
    });
  }
}

/** Only the queue send, for tasks whose rows already say `queued`; a failure is left to the lease. */
export async function sendMessages(config: Pick<AppConfig, "TASKS_QUEUE">, dispatch: Dispatch[], logger: Logger) {
  if (dispatch.length === 0) return;
  try {
    await config.TASKS_QUEUE.sendBatch(dispatch.map((item) => ({ body: item.message, contentType: "json" as const })));
  } catch (error) {
    logger.error("sending a task failed; the limiter will send it again", {
      error,
      task_ids: dispatch.map((item) => item.taskId),
    });
  }
}
