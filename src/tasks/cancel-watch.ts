import type { Logger } from "../lib/logger.ts";
import { cancelLocally, supersedeLocally } from "./cancellation.ts";
import { CANCEL_POLL_INTERVAL_MS } from "./config.ts";

/**
 * Watches a batch's running tasks and stops each agent that must stop at
 * once, aborting its LLM call in flight:
 * - a cancel made in another isolate (the cancel route there only writes
 *   `cancel_requested_at`). Noticed only between the agent's steps, such a
 *   cancel let the call run to its end: its whole answer was charged, and an
 *   answer that finished the task completed it after the cancel was accepted;
 * - a run another delivery of its message took over (the task's `attempts`
 *   moved past this run's): that run ends the task, and this one went on
 *   calling the provider and writing the task's files beside it.
 * One read per interval for the whole batch.
 */
export interface CancelWatch {
  /** The task's run has ended: no need to read its row any more. */
  ended(taskId: string): void;
  stop(): void;
}

export interface WatchedRun {
  taskId: string;
  runId: string;
  /** The attempt the run claimed: the task's `attempts` while the run is still its latest. */
  attempt: number;
}

const STOPPED_SQL = `SELECT id, attempts FROM tasks
  WHERE id IN (SELECT value FROM json_each(?)) AND (cancel_requested_at IS NOT NULL OR attempts <> json_extract(?, '$.' || id))`;

export function watchCancels(d1: D1Database, runs: readonly WatchedRun[], logger: Logger): CancelWatch {
  const running = new Map(runs.map((run) => [run.taskId, run]));
  let reading = false;
  const read = async () => {
    if (reading || running.size === 0) return;
    reading = true;
    try {
      const watched = [...running.values()];
      const attempts = Object.fromEntries(watched.map((run) => [run.taskId, run.attempt]));
      const { results } = await d1
        .prepare(STOPPED_SQL)
        .bind(JSON.stringify(watched.map((run) => run.taskId)), JSON.stringify(attempts))
        .all<{ id: string; attempts: number }>();
      for (const { id, attempts: taskAttempts } of results) {
        const run = running.get(id);
        if (!run) continue;
        running.delete(id);
        if (taskAttempts !== run.attempt) supersedeLocally(run.runId);
        else cancelLocally(id);
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
