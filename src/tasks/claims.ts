import { and, eq, inArray } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { jsonRowsSql } from "../db/json-rows.ts";
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

/** The error of a run whose consumer is gone. */
export const LOST_RUN_ERROR = { type: "lost", message: "The consumer running this attempt stopped answering." };

const LOST_RUN_COLUMNS = ["run_id", "workspace_id", "task_id"];
type LostRunTaskFigures = Pick<TaskRow, "id" | "promptTokens" | "completionTokens" | "costUsd">;
const LOST_RUN_FIGURES = ["prompt_tokens", "completion_tokens", "cost_usd"];

/**
 * What the calls of runs whose consumer is gone were charged, from their usage rows: set on each run and
 * added to its task, as a run's end does (endStatements), so a task's runs still add up to its usage. To
 * go before the statement that closes those runs: only runs still `running` count, so each counts once.
 */
export function lostRunFiguresStatements(
  d1: D1Database,
  runs: readonly { runId: string; workspaceId: string; taskId: string }[],
): D1PreparedStatement[] {
  if (runs.length === 0) return [];
  const rows = JSON.stringify(runs.map((run) => [run.runId, run.workspaceId, run.taskId]));
  // Through the (workspace_id, task_id) index of usage rows; task_id IS NOT NULL is that index's condition.
  const charged = `SELECT lost.run_id, lost.task_id, ${LOST_RUN_FIGURES.map((name) => `sum(usage.${name}) AS ${name}`).join(", ")}
    FROM ${jsonRowsSql(LOST_RUN_COLUMNS)} AS lost
    JOIN task_runs AS run ON run.id = lost.run_id AND run.status = 'running'
    JOIN usage_records AS usage ON usage.workspace_id = lost.workspace_id AND usage.task_id = lost.task_id
      AND usage.task_id IS NOT NULL AND usage.run_id = lost.run_id
    GROUP BY lost.run_id, lost.task_id`;
  const added = LOST_RUN_FIGURES.map((name) => `${name} = tasks.${name} + c.${name}`).join(", ");
  const set = LOST_RUN_FIGURES.map((name) => `${name} = c.${name}`).join(", ");
  return [
    d1
      .prepare(
        `UPDATE tasks SET ${added} FROM (${charged}) AS c WHERE tasks.id = c.task_id
         RETURNING tasks.id AS id, tasks.prompt_tokens AS promptTokens, tasks.completion_tokens AS completionTokens,
           tasks.cost_usd AS costUsd`,
      )
      .bind(rows),
    d1
      .prepare(
        `UPDATE task_runs SET ${set} FROM (${charged}) AS c WHERE task_runs.id = c.run_id AND task_runs.status = 'running'`,
      )
      .bind(rows),
  ];
}

const CLAIM_COLUMNS = ["run_id", "workspace_id", "task_id", "expected_attempts", "message_id", "agent_id"];

/** One batch for all claims (three statements whatever their number, src/db/json-rows.ts); returns the task ids actually claimed. */
export async function claimRuns(d1: D1Database, claims: ClaimInput[], nowIso: string): Promise<Set<string>> {
  if (claims.length === 0) return new Set();
  const rows = JSON.stringify(
    claims.map((claim) => [
      claim.runId,
      claim.task.workspaceId,
      claim.task.id,
      claim.task.attempts,
      claim.messageId,
      claim.agentId,
    ]),
  );
  const staleRuns = claims.flatMap((claim) =>
    claim.staleRunId ? [{ runId: claim.staleRunId, workspaceId: claim.task.workspaceId, taskId: claim.task.id }] : [],
  );
  const staleRunIds = staleRuns.map((run) => run.runId);
  const statements = lostRunFiguresStatements(d1, staleRuns);
  if (staleRunIds.length > 0) {
    statements.push(
      d1
        .prepare(
          `UPDATE task_runs SET status = 'timed_out', finished_at = ?,
             error = json_object('type', 'lost', 'message', 'The consumer running this attempt stopped answering.', 'retryable', json('true'))
           WHERE id IN (SELECT value FROM json_each(?)) AND status = 'running'`,
        )
        .bind(nowIso, JSON.stringify(staleRunIds)),
    );
  }
  statements.push(
    d1
      .prepare(
        `INSERT INTO task_runs (id, workspace_id, task_id, attempt, message_id, status, agent_id, started_at)
         SELECT c.run_id, c.workspace_id, c.task_id, c.expected_attempts + 1, c.message_id, 'running', c.agent_id, ?1
         FROM ${jsonRowsSql(CLAIM_COLUMNS, "?2")} AS c
         WHERE EXISTS (SELECT 1 FROM tasks WHERE id = c.task_id AND attempts = c.expected_attempts
                         AND cancel_requested_at IS NULL AND status IN ('pending', 'queued', 'running'))
         ON CONFLICT (task_id, attempt) DO NOTHING`,
      )
      .bind(nowIso, rows),
    d1
      .prepare(
        `UPDATE tasks SET status = 'running', attempts = tasks.attempts + 1, started_at = coalesce(started_at, ?1),
           queued_at = coalesce(queued_at, ?1), updated_at = ?1, error = NULL
         FROM ${jsonRowsSql(CLAIM_COLUMNS, "?2")} AS c
         WHERE tasks.id = c.task_id AND tasks.attempts = c.expected_attempts
           AND EXISTS (SELECT 1 FROM task_runs WHERE task_runs.id = c.run_id)
         RETURNING tasks.id AS id`,
      )
      .bind(nowIso, rows),
  );
  const results = await d1.batch<{ id: string }>(statements);
  if (staleRuns.length > 0) {
    // The task's figures now count its lost run's charges: its events (task.completed) tell them so.
    const counted = new Map((results[0].results as LostRunTaskFigures[]).map((row) => [row.id, row]));
    for (const claim of claims) {
      const figures = counted.get(claim.task.id);
      if (figures) {
        const { promptTokens, completionTokens, costUsd } = figures;
        Object.assign(claim.task, { promptTokens, completionTokens, costUsd });
      }
    }
  }
  return new Set((results.at(-1)?.results ?? []).map((row) => row.id));
}

export type RunEnd =
  | { kind: "completed"; result: Record<string, unknown> }
  | {
      kind: "failed" | "cancelled";
      error: { type: string; message: string };
      runStatus: "failed" | "cancelled" | "timed_out";
    }
  | {
      kind: "retry";
      error: { type: string; message: string };
      runStatus: "failed" | "timed_out";
      /** Every provider tried asked to be left alone this long (Retry-After): the next delivery waits at least this. */
      retryAfterSeconds?: number;
    };

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

const END_COLUMNS = [
  "run_id",
  "task_id",
  "run_status",
  "task_status",
  "provider",
  "model",
  "prompt_tokens",
  "completion_tokens",
  "cost_usd",
  "run_error",
  "task_error",
  "task_result",
  "finished_at",
];

/** The error a task ends with when a cancel was asked for while its run was ending to be retried. */
export const CANCELLED_WHILE_RUNNING = { type: "cancelled", message: "Cancelled while running." };

/**
 * The error a task cancelled while it waited ends with: before its first attempt, or between attempts (a queued
 * retry), which "before it started" misdescribed: its task.started and failed run are in its history.
 */
export function cancelledWaiting(attempts: number): { type: "cancelled"; message: string } {
  return {
    type: "cancelled",
    message:
      attempts === 0
        ? "Cancelled before it started."
        : `Cancelled while waiting to be retried, after ${attempts} attempt${attempts === 1 ? "" : "s"}.`,
  };
}

/**
 * The statements recording runs' ends, three whatever their number. A run's figures are always its whole tally,
 * and its task gains what they add to what the run row already held (a run presumed dead had its charges until
 * then counted, lostRunFiguresStatements), so a task's figures stay the sum of its runs'. A run ends its task only
 * while it is the task's latest attempt and the task is still running: a run that another delivery of its message
 * took over (a message delivered twice, the first still running) ends neither itself nor the task again. The last
 * statement returns the tasks ended, with their new status: a run ending to be retried whose task was asked to
 * cancel meanwhile (a cancel accepted while its call failed) ends the task `cancelled`, not `queued` for another
 * attempt.
 */
export function endStatements(d1: D1Database, inputs: readonly EndInput[], nowIso: string): D1PreparedStatement[] {
  if (inputs.length === 0) return [];
  const rows = JSON.stringify(
    inputs.map((input) => {
      const { end } = input;
      return [
        input.runId,
        input.taskId,
        end.kind === "completed" ? "succeeded" : end.runStatus,
        end.kind === "retry" ? "queued" : end.kind,
        input.provider,
        input.model,
        input.promptTokens,
        input.completionTokens,
        input.costUsd,
        end.kind === "completed" ? null : JSON.stringify({ ...end.error, retryable: end.kind === "retry" }),
        end.kind === "completed" ? null : JSON.stringify(end.error),
        end.kind === "completed" ? JSON.stringify(end.result) : null,
        end.kind === "retry" ? null : nowIso,
      ];
    }),
  );
  const ends = `${jsonRowsSql(END_COLUMNS, "?2")} AS e`;
  const added = `SELECT e.task_id, e.prompt_tokens - run.prompt_tokens AS prompt_tokens,
      e.completion_tokens - run.completion_tokens AS completion_tokens, e.cost_usd - run.cost_usd AS cost_usd
    FROM ${ends} JOIN task_runs AS run ON run.id = e.run_id`;
  const open = "task_runs.status = 'running'";
  const cancelledRetry = "e.task_status = 'queued' AND tasks.cancel_requested_at IS NOT NULL";
  return [
    d1
      .prepare(
        `UPDATE tasks SET prompt_tokens = tasks.prompt_tokens + d.prompt_tokens,
           completion_tokens = tasks.completion_tokens + d.completion_tokens, cost_usd = tasks.cost_usd + d.cost_usd
         FROM (${added}) AS d WHERE tasks.id = d.task_id`,
      )
      .bind(nowIso, rows),
    d1
      .prepare(
        `UPDATE task_runs SET provider = e.provider, model = e.model,
           prompt_tokens = e.prompt_tokens, completion_tokens = e.completion_tokens, cost_usd = e.cost_usd,
           status = CASE WHEN ${open} THEN e.run_status ELSE task_runs.status END,
           error = CASE WHEN ${open} THEN e.run_error ELSE task_runs.error END,
           finished_at = CASE WHEN ${open} THEN ?1 ELSE task_runs.finished_at END
         FROM ${ends} WHERE task_runs.id = e.run_id`,
      )
      .bind(nowIso, rows),
    d1
      .prepare(
        `UPDATE tasks SET status = CASE WHEN ${cancelledRetry} THEN 'cancelled' ELSE e.task_status END,
           result = coalesce(e.task_result, tasks.result),
           error = CASE WHEN ${cancelledRetry} THEN ?3 ELSE e.task_error END,
           finished_at = CASE WHEN ${cancelledRetry} THEN ?1 ELSE e.finished_at END,
           updated_at = ?1
         FROM ${ends} WHERE tasks.id = e.task_id AND tasks.status = 'running'
           AND tasks.attempts = (SELECT attempt FROM task_runs WHERE task_runs.id = e.run_id)
         RETURNING tasks.id AS id, tasks.status AS status`,
      )
      .bind(nowIso, rows, JSON.stringify(CANCELLED_WHILE_RUNNING)),
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
