/** The body of a message on the `tasks` queue (and, after max_retries, on `tasks-dlq`). */
export interface TaskMessage {
  v: 1;
  task_id: string;
  workspace_id: string;
  /** Set when the WorkspaceLimiter gave the task up after its lease lapsed too often. */
  reason?: "lease_expired";
}

export function taskMessage(workspaceId: string, taskId: string): TaskMessage {
  return { v: 1, task_id: taskId, workspace_id: workspaceId };
}

/** A body we can act on, or null (a foreign or corrupt message is acknowledged and logged, never retried). */
export function parseTaskMessage(body: unknown): TaskMessage | null {
  if (typeof body !== "object" || body === null) return null;
  const value = body as Record<string, unknown>;
  if (value.v !== 1 || typeof value.task_id !== "string" || typeof value.workspace_id !== "string") return null;
  return {
    v: 1,
    task_id: value.task_id,
    workspace_id: value.workspace_id,
    ...(value.reason === "lease_expired" ? { reason: "lease_expired" as const } : {}),
  };
}

/**
 * A message that asks for nothing: the benchmark measures the raw queue's
 * throughput with these, through the same consumer entry, in the same run.
 */
export function isNoopMessage(body: unknown): boolean {
  return typeof body === "object" && body !== null && (body as Record<string, unknown>).noop === true;
}

/**
 * What a no-op message asks the consumer to do before its ack, to measure a
 * floor: `none`, or `r2_put` — the one R2 put that every task writing a file
 * makes, alone (honoured only with ENABLE_DEBUG_ROUTES).
 */
export type NoopWork = "none" | "r2_put";

export function noopWorkOf(body: unknown): NoopWork {
  return (body as Record<string, unknown>).work === "r2_put" ? "r2_put" : "none";
}

/** No-op messages acknowledged by this isolate, and when the last was: read by the benchmark's debug route. */
export const noopAcks = { count: 0, lastAtMs: 0 };
