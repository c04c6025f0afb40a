/**
 * Running agents of this isolate, by task id. A cancel request handled by the
 * same isolate aborts the agent's controller at once, which also aborts an
 * LLM call in flight; agents elsewhere are stopped so by their consumer's
 * watch of the task rows (cancel-watch.ts), and check the row between steps.
 */

const running = new Map<string, AbortController>();

export function registerRun(taskId: string, controller: AbortController): () => void {
  running.set(taskId, controller);
  return () => {
    if (running.get(taskId) === controller) running.delete(taskId);
  };
}

/** True when an agent of this isolate was running the task and has been told to stop. */
export function cancelLocally(taskId: string): boolean {
  const controller = running.get(taskId);
  if (!controller) return false;
  controller.abort(new CancelledError());
  return true;
}

export class CancelledError extends Error {
  constructor(message = "The task was cancelled.") {
    super(message);
    this.name = "CancelledError";
  }
}
