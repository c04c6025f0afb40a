import type { artifacts, deadLetters, taskRuns, tasks } from "../db/schema.ts";

/** Rows → the JSON the API returns. */

export type TaskRow = typeof tasks.$inferSelect;
export type RunRow = typeof taskRuns.$inferSelect;
export type ArtifactRow = typeof artifacts.$inferSelect;
export type DeadLetterRow = typeof deadLetters.$inferSelect;

export const TERMINAL_STATUSES = ["completed", "failed", "cancelled", "dead_lettered"] as const;

export function isTerminal(status: TaskRow["status"]): boolean {
  return (TERMINAL_STATUSES as readonly string[]).includes(status);
}

export function toTaskView(row: TaskRow) {
  return {
    id: row.id,
    title: row.title,
    description: row.description,
    type: row.type,
    priority: row.priority,
    status: row.status,
    project_id: row.projectId,
    agent_config: row.agentConfig,
    estimated_tokens: row.estimatedTokens,
    attempts: row.attempts,
    max_retries: row.maxRetries,
    tokens: {
      prompt: row.promptTokens,
      completion: row.completionTokens,
      total: row.promptTokens + row.completionTokens,
    },
    cost_usd: row.costUsd,
    result: row.result,
    error: row.error,
    created_by: row.createdBy,
    created_at: row.createdAt,
    updated_at: row.updatedAt,
    queued_at: row.queuedAt,
    started_at: row.startedAt,
    finished_at: row.finishedAt,
    cancel_requested_at: row.cancelRequestedAt,
  };
}

export function toRunView(row: RunRow) {
  return {
    id: row.id,
    task_id: row.taskId,
    attempt: row.attempt,
    status: row.status,
    agent_id: row.agentId,
    provider: row.provider,
    model: row.model,
    tokens: {
      prompt: row.promptTokens,
      completion: row.completionTokens,
      total: row.promptTokens + row.completionTokens,
    },
    cost_usd: row.costUsd,
    error: row.error,
    started_at: row.startedAt,
    finished_at: row.finishedAt,
    duration_ms: row.finishedAt ? Date.parse(row.finishedAt) - Date.parse(row.startedAt) : null,
  };
}

export function toArtifactView(row: ArtifactRow) {
  return {
    id: row.id,
    task_id: row.taskId,
    run_id: row.runId,
    path: row.path,
    size_bytes: row.sizeBytes,
    mime_type: row.mimeType,
    sha256: row.sha256,
    version: row.version,
    content_url: `/api/v1/artifacts/${row.id}/content`,
    created_at: row.createdAt,
    updated_at: row.updatedAt,
  };
}

export function toDeadLetterView(row: DeadLetterRow) {
  return {
    id: row.id,
    task_id: row.taskId,
    message_id: row.messageId,
    queue: row.queue,
    attempts: row.attempts,
    error_type: row.errorType,
    error_message: row.errorMessage,
    created_at: row.createdAt,
    replayed_at: row.replayedAt,
    replay_count: row.replayCount,
  };
}
