import { and, asc, desc, eq, gt, inArray, lt, or, sql } from "drizzle-orm";
import type { AuditEntryInput } from "../audit/audit-logger.ts";
import { canonicalJson } from "../audit/canonical.ts";
import { auditInsertIf, auditStatement } from "../audit/index.ts";
import type { Principal } from "../auth/principal.ts";
import { actorOf } from "../auth/principal.ts";
import type { Database } from "../db/client.ts";
import { artifacts, taskRuns, tasks, type WorkspaceBudgets, type WorkspaceLimits } from "../db/schema.ts";
import { insertStatement } from "../db/statements.ts";
import type { AppConfig } from "../env.ts";
import { sha256Hex } from "../lib/crypto.ts";
import { newId } from "../lib/ids.ts";
import type { Logger } from "../lib/logger.ts";
import type { PageKey } from "../lib/pagination.ts";
import { ApiError } from "../lib/problem.ts";
import type { SubmitResult } from "../limits/admission.ts";
import type { BudgetEventContext } from "../limits/budget-events.ts";
import { budgetStatus, exhaustedMessage } from "../llm/index.ts";
import { settingsLoader } from "../llm/settings.ts";
import { cancelLocally } from "./cancellation.ts";
import { cancelledWaiting } from "./claims.ts";
import { QUEUE_MAX_RETRIES } from "./config.ts";
import { limiterOf, sendDispatches, sendMessages } from "./dispatch.ts";
import { eventUser, publishForRequest } from "./events.ts";
import { taskMessage } from "./messages.ts";
import { recordQueueDepth, recordRefusal } from "./metrics.ts";
import type { NewTask } from "./schemas.ts";
import type { ArtifactRow, RunRow, TaskRow } from "./views.ts";

/** Tasks: submission through admission, listing, cancellation, runs and artifacts. */

export interface TaskContext {
  config: AppConfig;
  db: Database;
  workspaceId: string;
  logger: Logger;
  principal?: Principal;
  /** Actor, request id, trace, IP and user agent for audit entries. */
  audit: Pick<AuditEntryInput, "actor" | "requestId" | "traceId" | "ip" | "userAgent">;
  /** The request's, for work after the answer (another try of a parked event). */
  waitUntil?: (work: Promise<unknown>) => void;
}

export async function findByIdempotencyKey(db: Database, workspaceId: string, key: string): Promise<TaskRow | null> {
  const rows = await db
    .select()
    .from(tasks)
    .where(and(eq(tasks.workspaceId, workspaceId), eq(tasks.idempotencyKey, key)))
    .limit(1);
  return rows[0] ?? null;
}

function replayOf(existing: TaskRow, requestHash: string): { task: TaskRow; replayed: true } {
  if (existing.requestHash !== requestHash) {
    throw new ApiError(
      "CONFLICT",
      "This Idempotency-Key was used with a different request body (task_id names its task); send a new key for a new task.",
      {
        extensions: { task_id: existing.id },
      },
    );
  }
  return { task: existing, replayed: true };
}

/**
 * Submits a task: the workspace's limiter admits it (a slot now → queued, a
 * place in line → pending) or refuses it (429 with Retry-After); the row and
 * its audit entry are written in one batch; then `task.created` is published
 * (or parked within about 0.5 s if the hub will not take it, src/tasks/events.ts)
 * and the released tasks are sent to the queue, in that order.
 */
export async function createTask(
  ctx: TaskContext,
  limits: WorkspaceLimits,
  body: NewTask,
  idempotencyKey: string | undefined,
): Promise<{ task: TaskRow; replayed: boolean }> {
  const { db, workspaceId, config } = ctx;
  const requestHash = await sha256Hex(canonicalJson(body));
  const [existing, settings] = await Promise.all([
    idempotencyKey ? findByIdempotencyKey(db, workspaceId, idempotencyKey) : null,
    // The router's own cached copy of the workspace's budgets (a few seconds old at most).
    settingsLoader(config)(workspaceId),
  ]);
  if (existing) return replayOf(existing, requestHash);
  await refuseIfBudgetExhausted(config, workspaceId, settings.budgets, {
    workspaceId,
    correlationId: ctx.audit.traceId,
    requestId: ctx.audit.requestId,
  });

  const taskId = newId("task");
  const limiter = limiterOf(config, workspaceId);
  let admission: SubmitResult;
  try {
    admission = await limiter.submitTask({
      taskId,
      priority: body.priority,
      message: taskMessage(workspaceId, taskId),
      maxRunning: limits.max_running_tasks,
      maxPending: limits.max_pending_tasks,
    });
  } catch (error) {
    ctx.logger.error("task admission unavailable", { error });
    throw new ApiError("DEPENDENCY_UNAVAILABLE", "Task admission is unavailable; retry shortly.", {
      headers: { "Retry-After": "1" },
    });
  }
  if (admission.status === "refused") {
    recordRefusal(config.METRICS, workspaceId, admission.pending, admission.retryAfterMs);
    const retryAfterSeconds = Math.max(1, Math.ceil(admission.retryAfterMs / 1000));
    throw new ApiError(
      "RATE_LIMITED",
      `${admission.pending} tasks are already waiting (max_pending_tasks ${admission.maxPending}); retry after ${retryAfterSeconds} s.`,
      {
        headers: { "Retry-After": String(retryAfterSeconds) },
        extensions: {
          retry_after_seconds: retryAfterSeconds,
          pending: admission.pending,
          max_pending_tasks: admission.maxPending,
        },
      },
    );
  }

  recordQueueDepth(config.METRICS, workspaceId, admission.depth);
  const nowIso = new Date().toISOString();
  const row: TaskRow = {
    id: taskId,
    workspaceId,
    title: body.title,
    description: body.description ?? null,
    type: body.type,
    priority: body.priority,
    status: admission.status,
    projectId: body.project_id ?? null,
    agentConfig: body.agent_config ?? null,
    estimatedTokens: body.estimated_tokens ?? null,
    idempotencyKey: idempotencyKey ?? null,
    requestHash,
    maxRetries: QUEUE_MAX_RETRIES,
    attempts: 0,
    createdBy: ctx.principal ? actorOf(ctx.principal).id : null,
    promptTokens: 0,
    completionTokens: 0,
    costUsd: 0,
    result: null,
    error: null,
    createdAt: nowIso,
    updatedAt: nowIso,
    queuedAt: admission.status === "queued" ? nowIso : null,
    startedAt: null,
    finishedAt: null,
    cancelRequestedAt: null,
  };
  try {
    // Plain statements: rendering the two drizzle inserts cost more than running them.
    await config.DB.batch([
      insertStatement(config.DB, tasks, row),
      auditStatement(config.DB, {
        ...ctx.audit,
        workspaceId,
        action: "task.create",
        resourceType: "task",
        resourceId: taskId,
        changes: { after: { title: row.title, type: row.type, priority: row.priority, status: row.status } },
        metadata: idempotencyKey ? { idempotency_key: idempotencyKey } : undefined,
      }),
    ]);
  } catch (error) {
    // Give the place back first, whatever happened: the task does not exist. A slot it held may let a waiting task
    // start: sent, or that task stayed pending until its lease lapsed (two minutes, one of its three lapses).
    const freed = await limiter.finishTasks([taskId]).catch(() => undefined);
    if (freed) await sendDispatches(config, db, workspaceId, freed.dispatch, ctx.logger);
    if (idempotencyKey) {
      // Another request with the same key won the unique index.
      const existing = await findByIdempotencyKey(db, workspaceId, idempotencyKey);
      if (existing) return replayOf(existing, requestHash);
    }
    throw error;
  }

  await publishForRequest(
    config,
    ctx.logger,
    {
      event_type: "task.created",
      workspace_id: workspaceId,
      task_id: taskId,
      data: {
        task: {
          id: taskId,
          title: row.title,
          ...(row.description !== null ? { description: row.description } : {}),
          type: row.type,
          priority: row.priority,
          ...(row.projectId !== null ? { project_id: row.projectId } : {}),
          ...(row.agentConfig !== null ? { agent_config: row.agentConfig } : {}),
          ...(row.estimatedTokens !== null ? { estimated_tokens: row.estimatedTokens } : {}),
        },
        user: eventUser(ctx.principal),
        status: row.status,
      },
    },
    { waitUntil: ctx.waitUntil },
  );
  // Our own row is already `queued`; others released in the same call (rare) are marked as they go.
  const mine = admission.dispatch.filter((item) => item.taskId === taskId);
  const others = admission.dispatch.filter((item) => item.taskId !== taskId);
  await Promise.all([
    sendMessages(config, mine, ctx.logger),
    sendDispatches(config, db, workspaceId, others, ctx.logger),
  ]);
  return { task: row, replayed: false };
}

/** A workspace with nothing left to spend gets 429 now rather than a task that fails later. */
async function refuseIfBudgetExhausted(
  config: AppConfig,
  workspaceId: string,
  budgets: WorkspaceBudgets | null,
  untoldTo: BudgetEventContext,
) {
  if (!budgets || Object.values(budgets).every((limit) => limit === null)) return;
  // Thresholds reached by calls no threshold check saw (counted before the budgets were set) are told now.
  const status = await budgetStatus(config, workspaceId, budgets, undefined, untoldTo);
  // retry_after_seconds is when the last spent budget resets: a month's spent beside a day's is the one named,
  // else the answer would say the day's budget resets in the month's time.
  const spent = status.exhausted_by.find((budget) => budget.period === "monthly") ?? status.exhausted_by[0];
  if (!spent) return;
  const retryAfterSeconds = Math.max(1, status.retry_after_seconds ?? 60);
  // As the chat endpoint refuses a call: the period and metric, and no retry before the period resets.
  throw new ApiError("RATE_LIMITED", exhaustedMessage(spent, retryAfterSeconds), {
    headers: { "Retry-After": String(retryAfterSeconds), "X-Should-Retry": "false" },
    extensions: {
      reason: "budget_exhausted",
      period: spent.period,
      metric: spent.metric,
      retryable: false,
      retry_after_seconds: retryAfterSeconds,
    },
  });
}

export interface TaskFilters {
  status?: TaskRow["status"];
  type?: TaskRow["type"];
  priority?: TaskRow["priority"];
}

/** Newest first; each filter rides its (workspace_id, <column>, created_at) index. */
export function listTasks(
  db: Database,
  workspaceId: string,
  filters: TaskFilters,
  page: { limit: number; after?: PageKey },
): Promise<TaskRow[]> {
  const after = page.after;
  return db
    .select()
    .from(tasks)
    .where(
      and(
        eq(tasks.workspaceId, workspaceId),
        filters.status ? eq(tasks.status, filters.status) : undefined,
        filters.type ? eq(tasks.type, filters.type) : undefined,
        filters.priority ? eq(tasks.priority, filters.priority) : undefined,
        after
          ? or(lt(tasks.createdAt, after.createdAt), and(eq(tasks.createdAt, after.createdAt), lt(tasks.id, after.id)))
          : undefined,
      ),
    )
    .orderBy(desc(tasks.createdAt), desc(tasks.id))
    .limit(page.limit + 1);
}

/** Attempts in order. */
export function listRuns(
  db: Database,
  workspaceId: string,
  taskId: string,
  page: { limit: number; after?: PageKey },
): Promise<RunRow[]> {
  const after = page.after;
  return db
    .select()
    .from(taskRuns)
    .where(
      and(
        eq(taskRuns.workspaceId, workspaceId),
        eq(taskRuns.taskId, taskId),
        after
          ? or(
              gt(taskRuns.startedAt, after.createdAt),
              and(eq(taskRuns.startedAt, after.createdAt), gt(taskRuns.id, after.id)),
            )
          : undefined,
      ),
    )
    .orderBy(asc(taskRuns.startedAt), asc(taskRuns.id))
    .limit(page.limit + 1);
}

/** In creation order. */
export function listArtifacts(
  db: Database,
  workspaceId: string,
  taskId: string,
  page: { limit: number; after?: PageKey },
): Promise<ArtifactRow[]> {
  const after = page.after;
  return db
    .select()
    .from(artifacts)
    .where(
      and(
        eq(artifacts.workspaceId, workspaceId),
        eq(artifacts.taskId, taskId),
        after
          ? or(
              gt(artifacts.createdAt, after.createdAt),
              and(eq(artifacts.createdAt, after.createdAt), gt(artifacts.id, after.id)),
            )
          : undefined,
      ),
    )
    .orderBy(asc(artifacts.createdAt), asc(artifacts.id))
    .limit(page.limit + 1);
}

/**
 * Cancels a task. Pending or queued: at once (D1 decides the race with a
 * consumer claiming it), its place or slot freed. Running: the request is
 * recorded, an agent in this isolate is aborted now, one elsewhere stops
 * before its next step. Returns the task and whether it is already cancelled.
 */
export async function cancelTask(ctx: TaskContext, task: TaskRow): Promise<{ task: TaskRow; immediate: boolean }> {
  const { db, workspaceId, config } = ctx;
  if (
    task.status === "completed" ||
    task.status === "failed" ||
    task.status === "cancelled" ||
    task.status === "dead_lettered"
  ) {
    throw new ApiError("CONFLICT", `Task ${task.id} is already ${task.status}.`, {
      extensions: { task_status: task.status },
    });
  }
  const nowIso = new Date().toISOString();
  const thisTask = and(eq(tasks.workspaceId, workspaceId), eq(tasks.id, task.id));
  // Written only if one of the two updates below will match: a cancel that lost the race to another cancel (or to
  // the task's end) is a 409, and wrote an entry claiming it had cancelled the task.
  const audit = auditInsertIf(
    db,
    {
      ...ctx.audit,
      workspaceId,
      action: "task.cancel",
      resourceType: "task",
      resourceId: task.id,
      changes: { before: { status: task.status } },
    },
    sql`EXISTS (SELECT 1 FROM tasks WHERE ${and(thisTask, inArray(tasks.status, ["pending", "queued", "running"]))})`,
  );

  // One batch, two exclusive updates: D1 decides the race with a consumer claiming the task.
  const [, stopped, flagged] = await db.batch([
    audit,
    db
      .update(tasks)
      .set({
        status: "cancelled",
        // As the consumer records such a cancel: GET showed a cancelled task without its error.
        error: cancelledWaiting(task.attempts),
        cancelRequestedAt: nowIso,
        finishedAt: nowIso,
        updatedAt: nowIso,
      })
      .where(and(thisTask, inArray(tasks.status, ["pending", "queued"])))
      .returning(),
    db
      .update(tasks)
      // The first request's time stays: a second cancel of a running task moved it, and answered another one.
      .set({ cancelRequestedAt: sql`coalesce(${tasks.cancelRequestedAt}, ${nowIso})`, updatedAt: nowIso })
      .where(and(thisTask, eq(tasks.status, "running")))
      .returning(),
  ]);
  const cancelled = (stopped as TaskRow[])[0];
  if (cancelled) {
    const { dispatch } = await limiterOf(config, workspaceId).finishTasks([task.id]);
    // After anything of this task still parked (its task.created, if the hub refused it).
    await publishForRequest(
      config,
      ctx.logger,
      {
        event_type: "task.error",
        workspace_id: workspaceId,
        task_id: task.id,
        data: {
          task_id: task.id,
          error_type: "cancelled",
          error_message: cancelledWaiting(cancelled.attempts).message,
          retry_count: cancelled.attempts,
          max_retries: cancelled.maxRetries,
          fatal: true,
        },
      },
      { afterParked: true, waitUntil: ctx.waitUntil },
    );
    await sendDispatches(config, db, workspaceId, dispatch, ctx.logger);
    return { task: cancelled, immediate: true };
  }
  const row = (flagged as TaskRow[])[0];
  if (!row) throw new ApiError("CONFLICT", `Task ${task.id} ended before it could be cancelled.`);
  cancelLocally(task.id);
  return { task: row, immediate: false };
}
