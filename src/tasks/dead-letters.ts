import { and, asc, desc, eq, gt, inArray, isNotNull, isNull, lt, or, type SQL, sql } from "drizzle-orm";
import { auditInsertIf, auditStatement, sealChain } from "../audit/index.ts";
import { createDb } from "../db/client.ts";
import { deadLetters, type TaskType, tasks, type WorkspaceLimits } from "../db/schema.ts";
import type { AppConfig } from "../env.ts";
import { EventBatcher } from "../events/batcher.ts";
import { newId } from "../lib/ids.ts";
import type { Logger } from "../lib/logger.ts";
import type { PageKey } from "../lib/pagination.ts";
import { ApiError } from "../lib/problem.ts";
import {
  CANCELLED_WHILE_RUNNING,
  closeRunStatement,
  closeUnstartedStatement,
  LOST_RUN_ERROR,
  loadRunningRuns,
  loadTasks,
  lostRunFiguresStatements,
} from "./claims.ts";
import { QUEUE_MAX_RETRIES, STALE_RUN_GRACE_MS, taskTimeoutSeconds } from "./config.ts";
import { limiterOf, sendDispatches } from "./dispatch.ts";
import { EventChain } from "./events.ts";
import { parseTaskMessage, taskMessage } from "./messages.ts";
import type { TaskContext } from "./service.ts";
import { type DeadLetterRow, isTerminal } from "./views.ts";

/**
 * The `tasks-dlq` consumer and the dead-letter API. A message lands here
 * after max_retries (or when the limiter gave up a lapsed lease): its task
 * becomes `dead_lettered`, one `dead_letters` row records it (unique per
 * message, so a redelivered DLQ message records nothing twice), and a fatal
 * `task.error` is published. Replay sends the task through admission again.
 */

const SYSTEM_ACTOR = { type: "system" as const, id: "tasks-dlq", display: "dead-letter consumer" };

export async function consumeDeadLetterBatch(
  batch: MessageBatch<unknown>,
  config: AppConfig,
  logger: Logger,
  executionCtx?: Pick<ExecutionContext, "waitUntil">,
): Promise<void> {
  const db = createDb(config.DB);
  const nowIso = new Date().toISOString();
  const sourceQueue = batch.queue.replace("-dlq", "");
  const messages = batch.messages.flatMap((message) => {
    const body = parseTaskMessage(message.body);
    if (!body) {
      logger.warn("unreadable dead letter acknowledged", { message_id: message.id });
      message.ack();
      return [];
    }
    return [{ message, body }];
  });
  const rows = await loadTasks(
    db,
    messages.map((item) => item.body.task_id),
  );
  const live = await loadRunningRuns(
    db,
    [...rows.values()].filter((task) => task.status === "running").map((task) => task.id),
  );

  const release = new Map<string, string[]>();
  const recorded: {
    deadLetterId: string;
    task: NonNullable<ReturnType<typeof rows.get>>;
    error: { type: string; message: string };
    index: number;
  }[] = [];
  const cancelled: { task: NonNullable<ReturnType<typeof rows.get>>; index: number }[] = [];
  const statements: D1PreparedStatement[] = [];
  // Acknowledged once what they decided is written: acknowledged before, a letter whose write failed was never
  // delivered again, and its task stayed queued for good, its slot held, no task.error told.
  const decided: Message[] = [];
  for (const { message, body } of messages) {
    const task = rows.get(body.task_id);
    if (!task || task.workspaceId !== body.workspace_id || isTerminal(task.status)) {
      decided.push(message);
      release.set(body.workspace_id, [...(release.get(body.workspace_id) ?? []), body.task_id]);
      continue;
    }
    const run = live.get(task.id);
    if (
      run &&
      run.messageId !== message.id &&
      Date.parse(run.startedAt) + taskTimeoutSeconds(config, task.type) * 1000 + STALE_RUN_GRACE_MS > Date.now()
    ) {
      // A consumer is still running it: that consumer ends it.
      decided.push(message);
      continue;
    }
    if (task.cancelRequestedAt) {
      // Its last delivery's consumer died after a cancel was accepted (202): it ends cancelled, as the tasks
      // consumer ends such a run, not as a dead letter the user would find to replay.
      statements.push(closeUnstartedStatement(config.DB, task.id, "cancelled", CANCELLED_WHILE_RUNNING, nowIso));
      cancelled.push({ task, index: statements.length - 1 });
      if (run) {
        statements.push(
          ...lostRunFiguresStatements(config.DB, [{ runId: run.id, workspaceId: run.workspaceId, taskId: run.taskId }]),
          closeRunStatement(config.DB, run.id, "cancelled", CANCELLED_WHILE_RUNNING, nowIso),
        );
      }
      decided.push(message);
      release.set(task.workspaceId, [...(release.get(task.workspaceId) ?? []), task.id]);
      continue;
    }
    const error =
      body.reason === "lease_expired"
        ? { type: "lease_expired", message: "No consumer kept the task's slot; it was given up." }
        : (task.error ?? { type: "retries_exhausted", message: `Failed ${message.attempts} deliveries.` });
    const deadLetterId = newId("deadLetter");
    statements.push(
      config.DB.prepare(
        `INSERT INTO dead_letters (id, workspace_id, task_id, message_id, queue, attempts, error_type, error_message, payload, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (message_id) DO NOTHING`,
      ).bind(
        deadLetterId,
        task.workspaceId,
        task.id,
        message.id,
        sourceQueue,
        task.attempts,
        error.type,
        error.message,
        JSON.stringify(body),
        nowIso,
      ),
    );
    recorded.push({ deadLetterId, task, error, index: statements.length - 1 });
    if (run) {
      // Its consumer died on the last delivery: the run is closed as lost, with what its calls were charged.
      statements.push(
        ...lostRunFiguresStatements(config.DB, [{ runId: run.id, workspaceId: run.workspaceId, taskId: run.taskId }]),
        closeRunStatement(config.DB, run.id, "timed_out", LOST_RUN_ERROR, nowIso),
      );
    }
    statements.push(
      config.DB.prepare(
        `UPDATE tasks SET status = 'dead_lettered', error = ?, finished_at = ?, updated_at = ?
         WHERE id = ? AND status IN ('pending', 'queued', 'running')`,
      ).bind(JSON.stringify(error), nowIso, nowIso, task.id),
    );
    statements.push(
      auditStatement(config.DB, {
        actor: SYSTEM_ACTOR,
        workspaceId: task.workspaceId,
        action: "task.dead_lettered",
        resourceType: "task",
        resourceId: task.id,
        changes: { before: { status: task.status }, after: { status: "dead_lettered" } },
        metadata: { dead_letter_id: deadLetterId, message_id: message.id, error_type: error.type },
      }),
    );
    decided.push(message);
    release.set(task.workspaceId, [...(release.get(task.workspaceId) ?? []), task.id]);
  }
  const results = statements.length > 0 ? await config.DB.batch(statements) : [];
  for (const message of decided) message.ack();

  // Those recorded by an earlier delivery were announced then.
  const announced = recorded.filter((entry) => (results[entry.index]?.meta.changes ?? 0) > 0);
  const cancelledNow = cancelled.filter((entry) => (results[entry.index]?.meta.changes ?? 0) > 0);
  const batcher = new EventBatcher(config, { logger, executionCtx });
  if (announced.length + cancelledNow.length > 0) {
    // The task's earlier events, if the hub refused them, land before its fatal task.error.
    await batcher
      .deliverParkedFirst([...new Set([...announced, ...cancelledNow].map((entry) => entry.task.workspaceId))])
      .catch((error: unknown) => logger.warn("parked events not delivered first", { error }));
  }
  const chains: EventChain[] = [];
  for (const entry of announced) {
    const chain = new EventChain(config, logger, batcher);
    const { error } = entry;
    chain.emit({
      event_type: "task.error",
      workspace_id: entry.task.workspaceId,
      task_id: entry.task.id,
      data: {
        task_id: entry.task.id,
        error_type: error.type,
        error_message: error.message,
        retry_count: QUEUE_MAX_RETRIES,
        max_retries: QUEUE_MAX_RETRIES,
        fatal: true,
        context: { dead_letter_id: entry.deadLetterId, attempts: entry.task.attempts },
      },
    });
    chains.push(chain);
  }
  for (const { task } of cancelledNow) {
    const chain = new EventChain(config, logger, batcher);
    chain.emit({
      event_type: "task.error",
      workspace_id: task.workspaceId,
      task_id: task.id,
      data: {
        task_id: task.id,
        error_type: CANCELLED_WHILE_RUNNING.type,
        error_message: CANCELLED_WHILE_RUNNING.message,
        retry_count: task.attempts,
        max_retries: QUEUE_MAX_RETRIES,
        fatal: true,
      },
    });
    chains.push(chain);
  }
  await Promise.all([
    ...chains.map((chain) => chain.flush()),
    ...[...release].map(async ([workspaceId, ids]) => {
      try {
        const { dispatch } = await limiterOf(config, workspaceId).finishTasks(ids);
        await sendDispatches(config, db, workspaceId, dispatch, logger);
      } catch (error) {
        logger.error("giving task slots back failed", { error, workspace_id: workspaceId });
      }
    }),
    ...[...new Set(recorded.map((entry) => entry.task.workspaceId))].map((workspaceId) =>
      sealChain(db, workspaceId).catch(() => undefined),
    ),
  ]);
}

export interface DeadLetterFilters {
  replayed?: boolean;
  errorType?: string;
  taskId?: string;
}

/** Newest first. */
export function listDeadLetters(
  db: ReturnType<typeof createDb>,
  workspaceId: string,
  filters: DeadLetterFilters,
  page: { limit: number; after?: PageKey },
): Promise<DeadLetterRow[]> {
  const after = page.after;
  return db
    .select()
    .from(deadLetters)
    .where(
      and(
        eq(deadLetters.workspaceId, workspaceId),
        filters.replayed === undefined
          ? undefined
          : filters.replayed
            ? isNotNull(deadLetters.replayedAt)
            : isNull(deadLetters.replayedAt),
        filters.errorType ? eq(deadLetters.errorType, filters.errorType) : undefined,
        filters.taskId ? eq(deadLetters.taskId, filters.taskId) : undefined,
        after
          ? or(
              lt(deadLetters.createdAt, after.createdAt),
              and(eq(deadLetters.createdAt, after.createdAt), lt(deadLetters.id, after.id)),
            )
          : undefined,
      ),
    )
    .orderBy(desc(deadLetters.createdAt), desc(deadLetters.id))
    .limit(page.limit + 1);
}

export interface ReplaySelection {
  ids?: string[];
  filter?: {
    error_type?: string;
    task_type?: TaskType;
    created_after?: string;
    created_before?: string;
    include_replayed: boolean;
  };
  limit: number;
}

export interface ReplayOutcome {
  replayed: { dead_letter_id: string; task_id: string; status: "queued" | "pending" }[];
  skipped: { dead_letter_id: string; task_id: string | null; reason: string }[];
}

/** Selected dead letters of the caller's workspace, oldest first. */
async function selectForReplay(ctx: TaskContext, selection: ReplaySelection): Promise<DeadLetterRow[]> {
  const { db, workspaceId } = ctx;
  const conditions: (SQL | undefined)[] = [eq(deadLetters.workspaceId, workspaceId)];
  // The ids as one JSON parameter: one bound per id (up to 100, beside the workspace and the limit) passed D1's
  // 100 bound parameters a statement, and a replay of 99 or 100 ids was a 500.
  if (selection.ids)
    conditions.push(sql`${deadLetters.id} IN (SELECT value FROM json_each(${JSON.stringify(selection.ids)}))`);
  const filter = selection.filter;
  if (filter) {
    if (!filter.include_replayed) conditions.push(isNull(deadLetters.replayedAt));
    if (filter.error_type) conditions.push(eq(deadLetters.errorType, filter.error_type));
    // As stored (toISOString: milliseconds, `Z`), so text order is time order: `…T05:06:07Z` sorted after
    // `…T05:06:07.500Z` ('Z' > '.'), and a letter half a second past a whole-second bound fell outside created_after
    // and inside created_before.
    if (filter.created_after) conditions.push(gt(deadLetters.createdAt, new Date(filter.created_after).toISOString()));
    if (filter.created_before)
      conditions.push(lt(deadLetters.createdAt, new Date(filter.created_before).toISOString()));
    if (filter.task_type) {
      conditions.push(
        inArray(
          deadLetters.taskId,
          db
            .select({ id: tasks.id })
            .from(tasks)
            .where(and(eq(tasks.workspaceId, workspaceId), eq(tasks.type, filter.task_type))),
        ),
      );
    }
  }
  // `limit` bounds a filter: named ids (at most 100) are all taken; those past it were answered `not_found`.
  return db
    .select()
    .from(deadLetters)
    .where(and(...conditions))
    .orderBy(asc(deadLetters.createdAt), asc(deadLetters.id))
    .limit(selection.ids ? selection.ids.length : selection.limit);
}

/**
 * Replays dead letters: each task goes through admission again (a refusal
 * skips it, nothing changes), then its row returns to pending/queued and the
 * dead letter is marked replayed, with one audit entry for the replay.
 */
export async function replayDeadLetters(
  ctx: TaskContext,
  limits: WorkspaceLimits,
  selection: ReplaySelection,
): Promise<ReplayOutcome> {
  const { db, workspaceId, config } = ctx;
  const selected = await selectForReplay(ctx, selection);
  const outcome: ReplayOutcome = { replayed: [], skipped: [] };
  // Each id once: one named twice was skipped twice.
  for (const id of new Set(selection.ids)) {
    if (!selected.some((row) => row.id === id))
      outcome.skipped.push({ dead_letter_id: id, task_id: null, reason: "not_found" });
  }
  const taskRows = await loadTasks(db, [...new Set(selected.map((row) => row.taskId))]);
  const limiter = limiterOf(config, workspaceId);
  const dispatch: { taskId: string; message: unknown }[] = [];
  const nowIso = new Date().toISOString();
  for (const letter of selected) {
    const task = taskRows.get(letter.taskId);
    if (!task || task.workspaceId !== workspaceId) {
      outcome.skipped.push({ dead_letter_id: letter.id, task_id: letter.taskId, reason: "task_missing" });
      continue;
    }
    if (task.status !== "dead_lettered") {
      outcome.skipped.push({ dead_letter_id: letter.id, task_id: task.id, reason: `task_${task.status}` });
      continue;
    }
    let admission: Awaited<ReturnType<typeof limiter.submitTask>>;
    try {
      admission = await limiter.submitTask({
        taskId: task.id,
        priority: task.priority,
        message: taskMessage(workspaceId, task.id),
        maxRunning: limits.max_running_tasks,
        maxPending: limits.max_pending_tasks,
      });
    } catch (error) {
      // As POST /tasks answers then: a 503, not a 500. This letter and those after it are unchanged; those replayed
      // already are sent, and the same request repeated skips them (`task_pending`, `task_queued`, …).
      ctx.logger.error("task admission unavailable", { error });
      await sendDispatches(config, db, workspaceId, dispatch, ctx.logger);
      throw new ApiError("DEPENDENCY_UNAVAILABLE", "Task admission is unavailable; retry shortly.", {
        headers: { "Retry-After": "1" },
      });
    }
    if (admission.status === "refused") {
      outcome.skipped.push({ dead_letter_id: letter.id, task_id: task.id, reason: "pending_cap_reached" });
      continue;
    }
    // The letter's mark and the entry only if the task is still dead-lettered when the batch runs: a replay that
    // lost the race to another is skipped as task_changed, and had still counted a replay and written its entry.
    const stillDeadLettered = sql`EXISTS (SELECT 1 FROM tasks WHERE ${and(
      eq(tasks.workspaceId, workspaceId),
      eq(tasks.id, task.id),
      eq(tasks.status, "dead_lettered"),
    )})`;
    const [, , reset] = await db.batch([
      auditInsertIf(
        db,
        {
          ...ctx.audit,
          workspaceId,
          action: "dead_letter.replay",
          resourceType: "dead_letter",
          resourceId: letter.id,
          metadata: { task_id: task.id, replay_count: letter.replayCount + 1 },
        },
        stillDeadLettered,
      ),
      db
        .update(deadLetters)
        .set({ replayedAt: nowIso, replayCount: sql`${deadLetters.replayCount} + 1` })
        .where(and(eq(deadLetters.workspaceId, workspaceId), eq(deadLetters.id, letter.id), stillDeadLettered)),
      db
        .update(tasks)
        .set({
          status: "pending",
          error: null,
          finishedAt: null,
          cancelRequestedAt: null,
          queuedAt: null,
          updatedAt: nowIso,
        })
        .where(and(eq(tasks.workspaceId, workspaceId), eq(tasks.id, task.id), eq(tasks.status, "dead_lettered")))
        .returning({ id: tasks.id }),
    ]);
    if ((reset as { id: string }[]).length === 0) {
      // Another replay of this task may have won the row. submitTask is idempotent per task, so both hold one and
      // the same place: given back, the winner's task stayed pending, never sent. The call that made the place
      // (not a duplicate) sends it for the winner, or gives it back if the task is not waiting on it.
      if (!admission.duplicate) {
        const now = (await loadTasks(db, [task.id])).get(task.id);
        if (now && !isTerminal(now.status)) dispatch.push(...admission.dispatch);
        else await limiter.finishTasks([task.id]);
      }
      outcome.skipped.push({ dead_letter_id: letter.id, task_id: task.id, reason: "task_changed" });
      continue;
    }
    dispatch.push(...admission.dispatch);
    outcome.replayed.push({ dead_letter_id: letter.id, task_id: task.id, status: admission.status });
  }
  await sendDispatches(config, db, workspaceId, dispatch, ctx.logger);
  for (const entry of outcome.replayed) {
    if (dispatch.some((item) => item.taskId === entry.task_id)) entry.status = "queued";
  }
  return outcome;
}
