/**
 * Running agents of this isolate, by task id. A cancel request handled by the
 * same isolate marks the agent's run, and the run's own timer aborts its
 * controller within LOCAL_CANCEL_POLL_MS, which also aborts an LLM call in
 * flight; agents elsewhere are stopped so by their consumer's watch of the
 * task rows (cancel-watch.ts), and check the row between steps.
 *
 * The cancelling request must not abort the controller itself: in Workers a
 * promise's continuations run in the request that settles it, so the agent
 * (and the rest of its queue batch: its writes, timers, message acks) went on
 * in the cancel request's context, which workerd refuses ("Cannot perform
 * I/O on behalf of a different request", I/O type QueueEventResult) — the
 * batch failed and was delivered again — and what it started there could be
 * cut off with that request. So the abort happens on a timer the run made.
 */

/** How often a running agent looks whether a cancel in this isolate asked it to stop. */
export const LOCAL_CANCEL_POLL_MS = 50;

interface Run {
  controller: AbortController;
  cancelRequested: boolean;
}

const running = new Map<string, Run>();

/** Called in the run's own context (its queue batch): the timer it starts there is what aborts it. */
export function registerRun(taskId: string, controller: AbortController): () => void {
  const run: Run = { controller, cancelRequested: false };
  running.set(taskId, run);
  const timer = setInterval(() => {
    if (!run.cancelRequested) return;
    clearInterval(timer);
    controller.abort(new CancelledError());
  }, LOCAL_CANCEL_POLL_MS);
  return () => {
    clearInterval(timer);
    if (running.get(taskId) === run) running.delete(taskId);
  };
}

/** True when an agent of this isolate was running the task and has been told to stop (within LOCAL_CANCEL_POLL_MS). */
export function cancelLocally(taskId: string): boolean {
  const run = running.get(taskId);
  if (!run) return false;
  run.cancelRequested = true;
  return true;
}

export class CancelledError extends Error {
  constructor(message = "The task was cancelled.") {
    super(message);
    this.name = "CancelledError";
  }
}
