import { and, eq, inArray } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { artifacts, taskRuns, tasks } from "../db/schema.ts";
import type { ArtifactRow, RunRow, TaskRow } from "./views.ts";

/**
 * The consumer's D1 access: reading a batch's tasks, claiming attempts and
 * recording their ends, each as few round trips as the batch allows.
 *
 * A claim is a compare-and-set on `tasks.attempts`: the run row for attempt
 * n+1 is inserted only while the task still has n attempts and may run, and
 * the task moves to running only if that very run row exists. The unique
 * (task_id, attempt) index makes two consumers racing for one task end with
 * one run, so a redelivered message can never start a second one.
 */

/** D1 allows 100 bound parameters per statement. */
const IN_CHUNK = 90;

function chunks<T>(items: T[], size = IN_CHUNK): T[][] {
  const out: T[][] = [];
  for (let start = 0; start < items.length; start += size) out.push(items.slice(start, start + size));
  return out;
}

export async function loadTasks(db: Database, ids: string[]): Promise<Map<string, TaskRow>> {
  const found = new Map<string, TaskRow>();
  for (const part of chunks(ids)) {
    for (const row of await db.select().from(tasks).where(inArray(tasks.id, part))) found.set(row.id, row);
  }
  return found;
}

export async function loadRunningRuns(db: Database, taskIds: string[]): Promise<Map<string, RunRow>> {
  const found = new Map<string, RunRow>();
  for (const part of chunks(taskIds)) {
    const rows = await db
      .select()
      .from(taskRuns)
      .where(and(inArray(taskRuns.taskId, part), eq(taskRuns.status, "running")));
    for (const row of rows) found.set(row.taskId, row);
  }
  return found;
}

export async function loadArtifacts(db: Database, taskIds: string[]): Promise<Map<string, ArtifactRow[]>> {
  const found = new Map<string, ArtifactRow[]>();
  for (const part of chunks(taskIds)) {
    for (const row of await db.select().from(artifacts).where(inArray(artifacts.taskId, part))) {
      const list = found.get(row.taskId) ?? [];
      list.push(row);
      found.set(row.taskId, list);
    }
  }
  return found;
}

export interface ClaimInput {
  task: TaskRow;
  runId: string;
  messageId: string;
  agentId: string;
  /** A run that died with its consumer: closed as timed out in the same transaction. */
  staleRunId?: string;
}

/** One batch for all claims; returns the task ids actually claimed. */
export async function claimRuns(d1: D1Database, claims: ClaimInput[], nowIso: string): Promise<Set<string>> {
  if (claims.length === 0) return new Set();
  const statements: D1PreparedStatement[] = [];
  const updateIndexes: number[] = [];
  for (const claim of claims) {
    const { task } = claim;
    if (claim.staleRunId) {
      statements.push(
        d1
          .prepare(
            `UPDATE task_runs SET status = 'timed_out', finished_at = ?,
               error = json_object('type', 'lost', 'message', 'The consumer running this attempt stopped answering.', 'retryable', json('true'))
             WHERE id = ? AND status = 'running'`,
          )
          .bind(nowIso, claim.staleRunId),
      );
    }
    statements.push(
      d1
        .prepare(
          `INSERT INTO task_runs (id, workspace_id, task_id, attempt, message_id, status, agent_id, started_at)
           SELECT ?, ?, ?, ?, ?, 'running', ?, ?
           WHERE EXISTS (SELECT 1 FROM tasks WHERE id = ? AND attempts = ? AND cancel_requested_at IS NULL
                           AND status IN ('pending', 'queued', 'running'))
           ON CONFLICT (task_id, attempt) DO NOTHING`,
        )
        .bind(
          claim.runId,
          task.workspaceId,
          task.id,
          task.attempts + 1,
          claim.messageId,
          claim.agentId,
          nowIso,
          task.id,
          task.attempts,
        ),
    );
    updateIndexes.push(statements.length);
    statements.push(
      d1
        .prepare(
          `UPDATE tasks SET status = 'running', attempts = attempts + 1, started_at = coalesce(started_at, ?),
             queued_at = coalesce(queued_at, ?), updated_at = ?, error = NULL
           WHERE id = ? AND attempts = ? AND EXISTS (SELECT 1 FROM task_runs WHERE id = ?)
           RETURNING id`,
        )
        .bind(nowIso, nowIso, nowIso, task.id, task.attempts, claim.runId),
    );
  }
  const results = await d1.batch<{ id: string }>(statements);
  const claimed = new Set<string>();
  for (const index of updateIndexes) for (const row of results[index].results ?? []) claimed.add(row.id);
  return claimed;
}

export type RunEnd =
  | { kind: "completed"; result: Record<string, unknown> }
  | {
      kind: "failed" | "cancelled";
      error: { type: string; message: string };
      runStatus: "failed" | "cancelled" | "timed_out";
    }
  | { kind: "retry"; error: { type: string; message: string }; runStatus: "failed" | "timed_out" };

export interface EndInput {
  taskId: string;
  runId: string;
  end: RunEnd;
  provider: string | null;
  model: string | null;
  promptTokens: number;
  completionTokens: number;
  costUsd: number;
}

/** The statements recording one run's end: its run row and its task row (same batch as the artifacts). */
export function endStatements(d1: D1Database, input: EndInput, nowIso: string): D1PreparedStatement[] {
  const { end } = input;
  const runStatus = end.kind === "completed" ? "succeeded" : end.runStatus;
  const runError = end.kind === "completed" ? null : JSON.stringify({ ...end.error, retryable: end.kind === "retry" });
  const taskStatus = end.kind === "retry" ? "queued" : end.kind;
  const finishedAt = end.kind === "retry" ? null : nowIso;
  const taskResult = end.kind === "completed" ? JSON.stringify(end.result) : null;
  const taskError = end.kind === "completed" ? null : JSON.stringify(end.error);
  return [
    d1
      .prepare(
        `UPDATE task_runs SET status = ?, provider = ?, model = ?, prompt_tokens = ?, completion_tokens = ?,
           cost_usd = ?, error = ?, finished_at = ? WHERE id = ?`,
      )
      .bind(
        runStatus,
        input.provider,
        input.model,
        input.promptTokens,
        input.completionTokens,
        input.costUsd,
        runError,
        nowIso,
        input.runId,
      ),
    d1
      .prepare(
        `UPDATE tasks SET status = ?, prompt_tokens = prompt_tokens + ?, completion_tokens = completion_tokens + ?,
           cost_usd = cost_usd + ?, result = coalesce(?, result), error = ?, finished_at = ?, updated_at = ?
         WHERE id = ? AND status = 'running'`,
      )
      .bind(
        taskStatus,
        input.promptTokens,
        input.completionTokens,
        input.costUsd,
        taskResult,
        taskError,
        finishedAt,
        nowIso,
        input.taskId,
      ),
  ];
}

/** A task that ends without running (cancelled while waiting, or given up): one conditional update. */
export function closeUnstartedStatement(
  d1: D1Database,
  taskId: string,
  status: "cancelled" | "dead_lettered" | "failed",
  error: { type: string; message: string },
  nowIso: string,
): D1PreparedStatement {
  return d1
    .prepare(
      `UPDATE tasks SET status = ?, error = ?, finished_at = ?, updated_at = ?
       WHERE id = ? AND status IN ('pending', 'queued', 'running')`,
    )
    .bind(status, JSON.stringify(error), nowIso, nowIso, taskId);
}

/** Closes a run left `running` by a consumer that is gone. */
export function closeRunStatement(
  d1: D1Database,
  runId: string,
  status: "cancelled" | "timed_out",
  error: { type: string; message: string },
  nowIso: string,
): D1PreparedStatement {
  return d1
    .prepare("UPDATE task_runs SET status = ?, error = ?, finished_at = ? WHERE id = ? AND status = 'running'")
    .bind(status, JSON.stringify({ ...error, retryable: false }), nowIso, runId);
}
