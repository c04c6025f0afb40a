import type { Logger } from "../lib/logger.ts";
import { cancelLocally } from "./cancellation.ts";
import { CANCEL_POLL_INTERVAL_MS } from "./config.ts";

/**
 * Watches a batch's running tasks for a cancel made in another isolate (the
 * cancel route there only writes `cancel_requested_at`) and stops each such
 * agent at once, aborting its LLM call in flight. Noticed only between the
 * agent's steps, such a cancel let the call run to its end: its whole answer
 * was charged, and an answer that finished the task completed it after the
 * cancel was accepted. One read per interval for the whole batch.
 */
export interface CancelWatch {
  /** The task's run has ended: no need to read its row any more. */
  ended(taskId: string): void;
  stop(): void;
}

const CANCELLED_SQL = `SELECT id FROM tasks
  WHERE id IN (SELECT value FROM json_each(?)) AND cancel_requested_at IS NOT NULL`;

export function watchCancels(d1: D1Database, taskIds: readonly string[], logger: Logger): CancelWatch {
  const running = new Set(taskIds);
  let reading = false;
  const read = async () => {
    if (reading || running.size === 0) return;
    reading = true;
    try {
      const { results } = await d1
        .prepare(CANCELLED_SQL)
        .bind(JSON.stringify([...running]))
        .all<{ id: string }>();
      for (const { id } of results) {
        running.delete(id);
        cancelLocally(id);
      }
    } catch (error) {
      // The agents still read the row between their steps.
      logger.warn("reading cancels of running tasks failed", { error });
    } finally {
      reading = false;
    }
  };
  const timer = running.size > 0 ? setInterval(read, CANCEL_POLL_INTERVAL_MS) : undefined;
  return {
    ended: (taskId) => running.delete(taskId),
    stop: () => clearInterval(timer),
  };
}
