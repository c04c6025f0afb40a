import { createDb } from "../db/client.ts";
import type { AppConfig } from "../env.ts";
import { EventBatcher } from "../events/batcher.ts";
import { newId } from "../lib/ids.ts";
import type { Logger } from "../lib/logger.ts";
import { DISPATCH_LEASE_MS } from "../limits/admission.ts";
import { configuredProviders } from "../llm/adapters/index.ts";
import { Coalescer } from "../llm/index.ts";
import type { WorkspaceSettings } from "../llm/router.ts";
import { LatencyTracker, parseChain, planTargets, stripQuery } from "../llm/routing.ts";
import { settingsLoader } from "../llm/settings.ts";
import type { LlmRouter } from "../llm/types.ts";
import { artifactUpserts } from "./artifacts.ts";
import { watchCancels } from "./cancel-watch.ts";
import {
  CANCELLED_WHILE_RUNNING,
  type ClaimInput,
  cancelledWaiting,
  claimRuns,
  closeRunStatement,
  closeUnstartedStatement,
  type EndInput,
  endStatements,
  loadArtifacts,
  loadRunningRuns,
  loadTasks,
  lostRunFiguresStatements,
} from "./claims.ts";
import {
  type ArtifactLimits,
  QUEUE_MAX_RETRIES,
  RETRY_AFTER_MAX_SECONDS,
  retryDelaySeconds,
  STALE_RUN_GRACE_MS,
  taskTimeoutSeconds,
} from "./config.ts";
import { limiterOf, sendDispatches } from "./dispatch.ts";
import { EventChain, eventProvider } from "./events.ts";
import { type Executed, executeRun } from "./execute.ts";
import { isNoopMessage, noopAcks, noopWorkOf, parseTaskMessage, type TaskMessage } from "./messages.ts";
import { recordQueueDepth, recordRun } from "./metrics.ts";
import { putProbeObjects } from "./probes.ts";
import { isTerminal, type TaskRow } from "./views.ts";

/**
 * The `tasks` queue consumer. Per batch: read every task in one query, claim
 * the runnable ones in one D1 batch, run their agents concurrently, record
 * every end in one D1 batch, then ack or retry each message and give slots
 * back per workspace in one limiter call each.
 *
 * Idempotent per message: a message whose task already ended is acked
 * without running; one whose task is running elsewhere is retried later; a
 * claim is a compare-and-set (src/tasks/claims.ts), so no task runs twice.
 */

export interface ConsumerDeps {
  router: LlmRouter;
  logger: Logger;
  artifactLimits?: ArtifactLimits;
  /** Jitter source for retry delays (tests pin it). */
  random?: () => number;
  /** The invocation's, for events parked while the hub fails: tried again a few seconds later. */
  executionCtx?: Pick<ExecutionContext, "waitUntil">;
  /** Sends a run's unexpected error to Sentry, tagged with its task, run and workspace. */
  report?: (error: unknown, tags: Record<string, string>) => void;
}

/** How long a message whose task has no row yet waits before it is read again. */
const UNKNOWN_TASK_RETRY_DELAY_SECONDS = 2;

type Work = { message: Message<unknown>; body: TaskMessage; task: TaskRow };

export function agentIdOf(task: Pick<TaskRow, "type">): string {
  return `agent_${task.type}`;
}

export function consumeTaskBatch(batch: MessageBatch<unknown>, config: AppConfig, deps: ConsumerDeps): Promise<void> {
  // A unit of work, so that the writes its LLM calls opened, and only those, are sent at its end (flushAll).
  return Coalescer.withinUnit(() => consumeBatch(batch, config, deps));
}

async function consumeBatch(batch: MessageBatch<unknown>, config: AppConfig, deps: ConsumerDeps): Promise<void> {
  const { logger } = deps;
  const db = createDb(config.DB);
  const nowMs = Date.now();
  const nowIso = new Date(nowMs).toISOString();

  const parsed: { message: Message<unknown>; body: TaskMessage }[] = [];
  const probes: Message<unknown>[] = [];
  let noops = 0;
  for (const message of batch.messages) {
    if (isNoopMessage(message.body)) {
      if (config.ENABLE_DEBUG_ROUTES && noopWorkOf(message.body) === "r2_put") probes.push(message);
      else message.ack();
      noops++;
      continue;
    }
    const body = parseTaskMessage(message.body);
    if (!body) {
      logger.warn("unreadable task message acknowledged", { message_id: message.id });
      message.ack();
    } else parsed.push({ message, body });
  }
  if (probes.length > 0) await putProbeObjects(config, probes);
  if (noops > 0) {
    noopAcks.count += noops;
    noopAcks.lastAtMs = Date.now();
  }
  if (parsed.length === 0) return;
  const batcher = new EventBatcher(config, { logger, executionCtx: deps.executionCtx });
  const [rows] = await Promise.all([
    loadTasks(db, [...new Set(parsed.map((item) => item.body.task_id))]),
    // A task.created the hub refused at submission lands before this batch's task.started.
    batcher.deliverParkedFirst([...new Set(parsed.map((item) => item.body.workspace_id))]),
  ]);

  const release = new Map<string, Set<string>>(); // workspace → task ids whose slot is given back
  const renew = new Map<string, { ids: string[]; leaseMs: number }[]>();
  const releaseSlot = (workspaceId: string, taskId: string) => {
    const set = release.get(workspaceId) ?? new Set<string>();
    set.add(taskId);
    release.set(workspaceId, set);
  };
  const renewSlot = (workspaceId: string, taskId: string, leaseMs: number) => {
    const list = renew.get(workspaceId) ?? [];
    list.push({ ids: [taskId], leaseMs });
    renew.set(workspaceId, list);
  };
  const closing: D1PreparedStatement[] = [];
  // Messages of tasks ended by `closing` (cancelled while waiting): acknowledged once that is written. Acknowledged
  // before, a failed write left the task waiting for good, its message never delivered again.
  const ackWhenClosed: Message[] = [];
  const chains = new Map<string, EventChain>();
  const chainOf = (taskId: string) => {
    let chain = chains.get(taskId);
    if (!chain) {
      chain = new EventChain(config, logger.child({ task_id: taskId }), batcher);
      chains.set(taskId, chain);
    }
    return chain;
  };

  const seen = new Set<string>();
  const runnable: Work[] = [];
  const running: Work[] = [];
  for (const { message, body } of parsed) {
    const task = rows.get(body.task_id);
    if (!task && message.attempts <= QUEUE_MAX_RETRIES) {
      // Its row may not be written yet: a task admitted as pending can be released into a free slot, and its
      // message delivered, before the request that submitted it has inserted its row. Acknowledged, the message was
      // never sent again and the task stayed pending for good. One that never existed ends in the dead-letter
      // queue, whose consumer acknowledges it and frees its place.
      message.retry({ delaySeconds: UNKNOWN_TASK_RETRY_DELAY_SECONDS });
      continue;
    }
    if (!task || task.workspaceId !== body.workspace_id) {
      logger.warn("message for an unknown task acknowledged", { task_id: body.task_id, message_id: message.id });
      message.ack();
      releaseSlot(body.workspace_id, body.task_id);
      continue;
    }
    if (seen.has(task.id)) {
      // The same task twice in one batch (a redelivery next to a redispatch): one message is enough.
      message.ack();
      continue;
    }
    seen.add(task.id);
    if (isTerminal(task.status)) {
      message.ack();
      releaseSlot(task.workspaceId, task.id);
    } else if (task.cancelRequestedAt && task.status !== "running") {
      const error = cancelledWaiting(task.attempts);
      closing.push(closeUnstartedStatement(config.DB, task.id, "cancelled", error, nowIso));
      chainOf(task.id).emit(cancelledEvent(task, error.message));
      ackWhenClosed.push(message);
      releaseSlot(task.workspaceId, task.id);
    } else if (task.status === "running") running.push({ message, body, task });
    else runnable.push({ message, body, task });
  }

  // Running: alive elsewhere (try again later) or left behind by a consumer that died (take over).
  const live = await loadRunningRuns(
    db,
    running.map((work) => work.task.id),
  );
  const claims: ClaimInput[] = [];
  const byTask = new Map<string, Work>();
  for (const work of running) {
    const run = live.get(work.task.id);
    const staleAtMs = run
      ? Date.parse(run.startedAt) + taskTimeoutSeconds(config, work.task.type) * 1000 + STALE_RUN_GRACE_MS
      : 0;
    // The same message again means the invocation that claimed it is gone (a live one holds its message).
    if (run && run.messageId !== work.message.id && staleAtMs > nowMs) {
      work.message.retry({ delaySeconds: Math.min(900, Math.max(5, Math.ceil((staleAtMs - nowMs) / 1000))) });
      continue;
    }
    if (work.task.cancelRequestedAt) {
      // Its run died after a cancel was asked for: end it as cancelled rather than start it again.
      const cancelled = { type: "cancelled", message: "Cancelled while running." };
      closing.push(closeUnstartedStatement(config.DB, work.task.id, "cancelled", cancelled, nowIso));
      if (run) {
        closing.push(
          ...lostRunFiguresStatements(config.DB, [{ runId: run.id, workspaceId: run.workspaceId, taskId: run.taskId }]),
          closeRunStatement(config.DB, run.id, "cancelled", cancelled, nowIso),
        );
      }
      chainOf(work.task.id).emit(cancelledEvent(work.task, cancelled.message));
      ackWhenClosed.push(work.message);
      releaseSlot(work.task.workspaceId, work.task.id);
      continue;
    }
    claims.push({
      task: work.task,
      runId: newId("run"),
      messageId: work.message.id,
      agentId: agentIdOf(work.task),
      staleRunId: run?.id,
    });
    byTask.set(work.task.id, work);
  }
  for (const work of runnable) {
    claims.push({ task: work.task, runId: newId("run"), messageId: work.message.id, agentId: agentIdOf(work.task) });
    byTask.set(work.task.id, work);
  }

  const [claimed] = await Promise.all([
    claimRuns(config.DB, claims, nowIso),
    closing.length > 0 ? config.DB.batch(closing) : Promise.resolve([]),
  ]);
  for (const message of ackWhenClosed) message.ack();
  const started = claims.filter((claim) => claimed.has(claim.task.id));
  // As claimRuns stored it: a task's started_at is its first attempt's start (task.completed's duration counts from it).
  for (const claim of started) claim.task.startedAt ??= nowIso;
  for (const claim of claims) {
    // Lost the race (another consumer, or a cancel in between): the next delivery sees the truth.
    if (!claimed.has(claim.task.id)) byTask.get(claim.task.id)?.message.retry({ delaySeconds: 5 });
  }
  const routing = await routingOf(config, started, logger);
  for (const claim of started) {
    renewSlot(
      claim.task.workspaceId,
      claim.task.id,
      taskTimeoutSeconds(config, claim.task.type) * 1000 + STALE_RUN_GRACE_MS,
    );
    chainOf(claim.task.id).emit(startedEvent(claim, config, routing.get(claim.task.workspaceId)));
  }
  // Renewals go out while the agents run; a failed renewal only means an early redispatch, which is harmless.
  const renewals = flushRenewals(config, renew, logger);
  renew.clear();

  const existing = await loadArtifacts(
    db,
    started.filter((claim) => claim.task.attempts > 0).map((claim) => claim.task.id),
  );
  const cancels = watchCancels(
    config.DB,
    started.map((claim) => ({ taskId: claim.task.id, runId: claim.runId, attempt: claim.task.attempts + 1 })),
    logger,
  );
  const executed = await Promise.all(
    started.map(async (claim) => {
      const result = await executeRun({
        config,
        task: claim.task,
        runId: claim.runId,
        agentId: claim.agentId,
        router: deps.router,
        existingArtifacts: existing.get(claim.task.id) ?? [],
        events: chainOf(claim.task.id),
        logger: logger.child({ task_id: claim.task.id, run_id: claim.runId, workspace_id: claim.task.workspaceId }),
        artifactLimits: deps.artifactLimits,
        report: (error) =>
          deps.report?.(error, { task_id: claim.task.id, run_id: claim.runId, workspace_id: claim.task.workspaceId }),
      });
      cancels.ended(claim.task.id);
      return { claim, result };
    }),
  ).finally(() => cancels.stop());

  const endNowIso = new Date().toISOString();
  const upserts = artifactUpserts(
    config.DB,
    executed.flatMap(({ result }) => result.files.written()),
  );
  const statements = [
    ...upserts,
    ...endStatements(
      config.DB,
      executed.map(({ claim, result }) => endInput(claim, result)),
      endNowIso,
    ),
  ];
  const results = statements.length > 0 ? await config.DB.batch<{ id: string; status: string }>(statements) : [];
  // The tasks these runs ended, with their new status (endStatements): `cancelled` for a cancel that reached a
  // run ending to be retried.
  const ended = new Map((results.at(-1)?.results ?? []).map((row) => [row.id, row.status]));
  const recordedKeys = new Set(
    upserts.length > 0 ? (results[0].results as unknown as { r2_key: string }[]).map((row) => row.r2_key) : [],
  );
  const staleObjects = deleteStaleObjects(
    config.ARTIFACTS,
    executed.flatMap(({ result }) => result.files.staleKeys(recordedKeys)),
    logger,
  );

  for (const { claim, result } of executed) {
    recordRun(
      config.METRICS,
      {
        workspaceId: claim.task.workspaceId,
        type: claim.task.type,
        end: result.end,
        durationMs: result.durationMs,
        simulated: result.run.simulated,
      },
      result.run,
    );
    const work = byTask.get(claim.task.id)!;
    const { end } = result;
    const chain = chainOf(claim.task.id);
    if (!ended.has(claim.task.id)) {
      // Another delivery of this message took the task over (this run looked dead to it), or it was closed as
      // such: that one ends the task and gives its slot back; this run's end would be a second one.
      logger.warn("run ended after its task was taken over", { task_id: claim.task.id, run_id: claim.runId });
      work.message.ack();
      continue;
    }
    if (end.kind === "retry" && ended.get(claim.task.id) === "cancelled") {
      work.message.ack();
      releaseSlot(claim.task.workspaceId, claim.task.id);
      chain.emit(errorEvent(claim, CANCELLED_WHILE_RUNNING, work.message.attempts - 1, true));
      continue;
    }
    if (end.kind === "retry") {
      const attempt = work.message.attempts;
      const last = attempt > QUEUE_MAX_RETRIES;
      // Providers that all asked for a wait (Retry-After) would refuse an earlier delivery too, spending a retry.
      const delaySeconds = Math.max(
        retryDelaySeconds(attempt, deps.random),
        Math.min(RETRY_AFTER_MAX_SECONDS, end.retryAfterSeconds ?? 0),
      );
      // The last retry() moves the message to the dead-letter queue, whose consumer emits the fatal error.
      if (!last) chain.emit(errorEvent(claim, end.error, attempt, false));
      work.message.retry({ delaySeconds });
      renewSlot(claim.task.workspaceId, claim.task.id, delaySeconds * 1000 + DISPATCH_LEASE_MS);
      continue;
    }
    work.message.ack();
    releaseSlot(claim.task.workspaceId, claim.task.id);
    if (end.kind === "completed") chain.emit(completedEvent(claim, result, endNowIso));
    else chain.emit(errorEvent(claim, end.error, work.message.attempts - 1, true));
  }

  // Usage rows and budget charges of this batch's LLM calls: the invocation waits for them (its waitUntil holds
  // the writes it opened), so send them now rather than after the coalescing delay.
  Coalescer.flushAll();
  await Promise.all([
    renewals,
    staleObjects,
    flushRenewals(config, renew, logger),
    ...[...release].map(async ([workspaceId, ids]) => {
      try {
        const { dispatch, depth } = await limiterOf(config, workspaceId).finishTasks([...ids]);
        recordQueueDepth(config.METRICS, workspaceId, depth);
        await sendDispatches(config, db, workspaceId, dispatch, logger);
      } catch (error) {
        // The leases lapse and the limiter frees the slots itself.
        logger.error("giving task slots back failed", { error, workspace_id: workspaceId });
      }
    }),
    ...[...chains.values()].map((chain) => chain.flush()),
  ]);
}

/**
 * Versions of files a run's rows replaced, and the files of runs whose rows were not recorded (taken over): no row
 * names them any more. A failed delete leaves an object no one reads; the task still reads right.
 */
async function deleteStaleObjects(bucket: R2Bucket, keys: string[], logger: Logger): Promise<void> {
  if (keys.length === 0) return;
  try {
    // R2 deletes up to 1,000 keys a call; a batch's runs write far fewer (ARTIFACT_LIMITS.maxFilesPerTask each).
    for (let start = 0; start < keys.length; start += 1_000) await bucket.delete(keys.slice(start, start + 1_000));
  } catch (error) {
    logger.warn("deleting replaced artifact objects failed", { error, objects: keys.length });
  }
}

async function flushRenewals(
  config: AppConfig,
  renew: Map<string, { ids: string[]; leaseMs: number }[]>,
  logger: Logger,
) {
  const calls: Promise<unknown>[] = [];
  for (const [workspaceId, entries] of renew) {
    const byLease = new Map<number, string[]>();
    for (const entry of entries) byLease.set(entry.leaseMs, [...(byLease.get(entry.leaseMs) ?? []), ...entry.ids]);
    for (const [leaseMs, ids] of byLease) {
      calls.push(
        limiterOf(config, workspaceId)
          .renewTasks(ids, leaseMs)
          .catch((error: unknown) => logger.warn("renewing task slots failed", { error, workspace_id: workspaceId })),
      );
    }
  }
  await Promise.all(calls);
}

function endInput(claim: ClaimInput, result: Executed): EndInput {
  return {
    taskId: claim.task.id,
    runId: claim.runId,
    end: result.end,
    provider: result.run.provider,
    model: result.run.model,
    promptTokens: result.run.promptTokens,
    completionTokens: result.run.completionTokens,
    costUsd: result.run.costUsd,
  };
}

/** The envelope fields every event of a claimed run carries. */
function runEnvelope(claim: ClaimInput) {
  return {
    workspace_id: claim.task.workspaceId,
    task_id: claim.task.id,
    run_id: claim.runId,
    agent_id: claim.agentId,
  };
}

/**
 * The routing of each started task's workspace, as the router reads it (the same cached settings, so the
 * run's first call reads nothing more). A workspace whose settings cannot be read gets the default chain.
 */
async function routingOf(
  config: AppConfig,
  started: readonly ClaimInput[],
  logger: Logger,
): Promise<Map<string, WorkspaceSettings>> {
  const load = settingsLoader(config);
  const found = new Map<string, WorkspaceSettings>();
  await Promise.all(
    [...new Set(started.map((claim) => claim.task.workspaceId))].map(async (workspaceId) => {
      try {
        found.set(workspaceId, await load(workspaceId));
      } catch (error) {
        logger.warn("workspace routing not read for task.started", { error, workspace_id: workspaceId });
      }
    }),
  );
  return found;
}

function startedEvent(claim: ClaimInput, config: AppConfig, settings: WorkspaceSettings | undefined) {
  const requested = claim.task.agentConfig?.model;
  // The first target the router will try, planned as it plans it: the task's own model (a bare name where a
  // configured provider serves it), else the head of the workspace's chain (the default chain without one). A
  // weighted or latency-ordered chain may start elsewhere; its head is the best guess before the call.
  const providers = configuredProviders(config);
  const planned = planTargets({
    strategy: settings?.strategy ?? "fallback",
    chain: settings?.chain ?? parseChain(config.LLM_DEFAULT_CHAIN),
    request: { messages: [], ...(typeof requested === "string" ? { model: requested } : {}) },
    estimatedPromptTokens: 0,
    latency: new LatencyTracker(),
    random: () => 0,
    providers,
  });
  const { provider, model } = planned.find((target) => providers.includes(target.provider)) ?? planned[0];
  return {
    event_type: "task.started" as const,
    ...runEnvelope(claim),
    data: {
      task_id: claim.task.id,
      agent_id: claim.agentId,
      resources: {
        estimated_tokens: claim.task.estimatedTokens ?? 0,
        model: stripQuery(model) || "default",
        provider: eventProvider(provider),
        provider_name: provider,
      },
      attempt: claim.task.attempts + 1,
      run_id: claim.runId,
    },
  };
}

function completedEvent(claim: ClaimInput, result: Executed, endedAtIso: string) {
  // The task's, as tokens_used and cost_usd are: from its first attempt's start to this end, the started_at and
  // finished_at GET /api/v1/tasks/{id} shows. This attempt's alone, a task retried after a long failed attempt
  // read as done in seconds. (task_runs, and GET /api/v1/tasks/{id}/runs, keep each attempt's own.)
  const startedAtMs = claim.task.startedAt
    ? Date.parse(claim.task.startedAt)
    : Date.parse(endedAtIso) - result.durationMs;
  const prompt = claim.task.promptTokens + result.run.promptTokens;
  const completion = claim.task.completionTokens + result.run.completionTokens;
  const outcome = result.end.kind === "completed" ? result.end.result : {};
  return {
    event_type: "task.completed" as const,
    ...runEnvelope(claim),
    data: {
      task_id: claim.task.id,
      duration_seconds: Math.max(0, Date.parse(endedAtIso) - startedAtMs) / 1000,
      tokens_used: { prompt, completion, total: prompt + completion },
      cost_usd: claim.task.costUsd + result.run.costUsd,
      result: {
        status: (outcome.status as "success" | "partial_success") ?? "success",
        artifacts: result.files.ids(),
      },
      simulated: result.run.simulated,
    },
  };
}

function errorEvent(claim: ClaimInput, error: { type: string; message: string }, retryCount: number, fatal: boolean) {
  return {
    event_type: "task.error" as const,
    ...runEnvelope(claim),
    data: {
      task_id: claim.task.id,
      error_type: error.type,
      error_message: error.message,
      retry_count: Math.max(0, retryCount),
      max_retries: QUEUE_MAX_RETRIES,
      fatal,
    },
  };
}

function cancelledEvent(task: TaskRow, message: string) {
  return {
    event_type: "task.error" as const,
    workspace_id: task.workspaceId,
    task_id: task.id,
    data: {
      task_id: task.id,
      error_type: "cancelled",
      error_message: message,
      retry_count: task.attempts,
      max_retries: QUEUE_MAX_RETRIES,
      fatal: true,
    },
  };
}
