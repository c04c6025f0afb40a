/**
 * Running agents of this isolate, by run. A cancel request handled by the
 * same isolate marks the task's runs, and each run's own timer aborts its
 * controller within LOCAL_CANCEL_POLL_MS, which also aborts an LLM call in
 * flight; agents elsewhere are stopped so by their consumer's watch of the
 * task rows (cancel-watch.ts), and check the row between steps. The watch
 * also stops a run another delivery of its message took over (supersedeLocally):
 * keyed by run, not task, since both runs of the task may be in this isolate.
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
  taskId: string;
  controller: AbortController;
  /** Why it was told to stop; its timer aborts it with this. */
  stopWith: Error | null;
}

const running = new Map<string, Run>();

/** Called in the run's own context (its queue batch): the timer it starts there is what aborts it. */
export function registerRun(taskId: string, runId: string, controller: AbortController): () => void {
  const run: Run = { taskId, controller, stopWith: null };
  running.set(runId, run);
  const timer = setInterval(() => {
    if (!run.stopWith) return;
    clearInterval(timer);
    controller.abort(run.stopWith);
  }, LOCAL_CANCEL_POLL_MS);
  return () => {
    clearInterval(timer);
    running.delete(runId);
  };
}

/** True when an agent of this isolate was running the task and has been told to stop (within LOCAL_CANCEL_POLL_MS). */
export function cancelLocally(taskId: string): boolean {
  let found = false;
  for (const run of running.values()) {
    if (run.taskId !== taskId) continue;
    run.stopWith ??= new CancelledError();
    found = true;
  }
  return found;
}

/** Stops a run of this isolate that another delivery of its message took over (SupersededError). */
export function supersedeLocally(runId: string): void {
  const run = running.get(runId);
  if (run) run.stopWith ??= new SupersededError();
}

export class CancelledError extends Error {
  constructor(message = "The task was cancelled.") {
    super(message);
    this.name = "CancelledError";
  }
}

/**
 * The run's task was taken over by another delivery of its message, to which this run looked dead: that run ends
 * the task, and this one must stop spending on it and writing its files.
 */
export class SupersededError extends Error {
  constructor() {
    super("Another delivery of the task's message took the task over from this run.");
    this.name = "SupersededError";
  }
}
