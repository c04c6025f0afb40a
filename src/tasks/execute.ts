import type { AppConfig } from "../env.ts";
import type { Logger } from "../lib/logger.ts";
import { LlmError, type LlmRouter } from "../llm/types.ts";
import { AgentRun, TaskTimeoutError } from "./agent/runtime.ts";
import { TaskFiles } from "./artifacts.ts";
import { CancelledError, registerRun, SupersededError } from "./cancellation.ts";
import type { RunEnd } from "./claims.ts";
import { ARTIFACT_LIMITS, type ArtifactLimits, CANCEL_POLL_INTERVAL_MS, taskTimeoutSeconds } from "./config.ts";
import type { EventChain } from "./events.ts";
import type { ArtifactRow, TaskRow } from "./views.ts";

/**
 * Runs one claimed attempt: the agent under a timeout and a cancel switch,
 * and the classification of how it ended (completed, retry, failed,
 * cancelled). Never throws: every failure becomes a RunEnd.
 */

export interface ExecuteInput {
  config: Pick<AppConfig, "ARTIFACTS" | "DB" | "TASK_TIMEOUT_SECONDS">;
  task: TaskRow;
  runId: string;
  agentId: string;
  router: LlmRouter;
  existingArtifacts: ArtifactRow[];
  events: EventChain;
  logger: Logger;
  artifactLimits?: ArtifactLimits;
  /** Sends an error no classification explains (a bug, not a provider's failure or a timeout) to Sentry. */
  report?: (error: unknown) => void;
}

export interface Executed {
  end: RunEnd;
  run: AgentRun;
  files: TaskFiles;
  durationMs: number;
}

export async function executeRun(input: ExecuteInput): Promise<Executed> {
  const { task, runId, config } = input;
  const timeoutSeconds = taskTimeoutSeconds(config, task.type);
  const startedAtMs = Date.now();
  const deadlineMs = startedAtMs + timeoutSeconds * 1000;
  const controller = new AbortController();
  const unregister = registerRun(task.id, runId, controller);
  const timer = setTimeout(() => controller.abort(new TaskTimeoutError(timeoutSeconds)), timeoutSeconds * 1000);
  const files = new TaskFiles({
    bucket: config.ARTIFACTS,
    workspaceId: task.workspaceId,
    taskId: task.id,
    runId,
    existing: input.existingArtifacts,
    limits: input.artifactLimits ?? ARTIFACT_LIMITS,
    signal: controller.signal,
  });
  // The claim checked the row a moment ago, so the first poll waits an interval.
  let lastPollMs = startedAtMs;
  // The claim made this run the task's attempt number `attempts + 1`; a later delivery's claim moves it on.
  const attempt = task.attempts + 1;
  const stopRequested = async (): Promise<Error | null> => {
    if (Date.now() - lastPollMs < CANCEL_POLL_INTERVAL_MS) return null;
    lastPollMs = Date.now();
    let row: { at: string | null; attempts: number } | null;
    try {
      row = await config.DB.prepare("SELECT cancel_requested_at AS at, attempts FROM tasks WHERE id = ?")
        .bind(task.id)
        .first<{ at: string | null; attempts: number }>();
    } catch (error) {
      // A read that failed (D1 drops a connection now and then) asks for no stop: the next step reads again, and the
      // batch's cancel watch reads meanwhile. Thrown, it ended the run as an internal error, to be run again whole.
      input.logger.warn("reading the task's cancel and attempts failed", { error });
      return null;
    }
    if (row && row.attempts !== attempt) return new SupersededError();
    return row?.at != null ? new CancelledError() : null;
  };
  const run = new AgentRun({
    task,
    runId,
    agentId: input.agentId,
    router: input.router,
    files,
    events: input.events,
    signal: controller.signal,
    deadlineMs,
    timeoutSeconds,
    stopRequested,
    logger: input.logger,
  });
  let end: RunEnd;
  try {
    const outcome = await run.run();
    end = {
      kind: "completed",
      result: {
        status: outcome.status,
        summary: outcome.summary.slice(0, 4_000),
        steps: outcome.steps,
        artifacts: outcome.artifactIds,
        simulated: run.simulated,
      },
    };
  } catch (error) {
    end = classify(error, controller.signal);
    // An error none of the known kinds explains is a bug (or storage failing): an operator's to see, as a
    // request's is. Told only in a warning, retried and at last dead-lettered, it never reached Sentry.
    if ("error" in end && end.error.type === INTERNAL_ERROR) {
      input.logger.error("run failed unexpectedly", { error, end: end.kind });
      input.report?.(error);
    } else if (end.kind !== "cancelled") input.logger.warn("run ended with an error", { error, end: end.kind });
  } finally {
    clearTimeout(timer);
    unregister();
  }
  return { end, run, files, durationMs: Date.now() - startedAtMs };
}

const INTERNAL_ERROR = "internal_error";

/** Retryable: timeouts, provider outages, storage hiccups. Not: bad input, exhausted budget, cancellation. */
export function classify(error: unknown, signal: AbortSignal): RunEnd {
  const reason = signal.aborted ? signal.reason : undefined;
  if (error instanceof SupersededError || reason instanceof SupersededError) {
    // Its end changes neither the task nor the run (closed by the claim that took it over): endStatements.
    return {
      kind: "failed",
      runStatus: "timed_out",
      error: { type: "superseded", message: new SupersededError().message },
    };
  }
  if (error instanceof CancelledError || reason instanceof CancelledError) {
    return {
      kind: "cancelled",
      runStatus: "cancelled",
      error: { type: "cancelled", message: "Cancelled while running." },
    };
  }
  if (error instanceof TaskTimeoutError || reason instanceof TaskTimeoutError) {
    const message = (reason instanceof TaskTimeoutError ? reason : (error as Error)).message;
    return { kind: "retry", runStatus: "timed_out", error: { type: "timeout", message } };
  }
  if (error instanceof LlmError) {
    if (error.kind === "cancelled") {
      return { kind: "cancelled", runStatus: "cancelled", error: { type: "cancelled", message: error.message } };
    }
    const type =
      error.kind === "invalid_request"
        ? "validation_error"
        : error.kind === "timeout"
          ? "timeout"
          : `llm_${error.kind}`;
    return error.retryable
      ? {
          kind: "retry",
          runStatus: error.kind === "timeout" ? "timed_out" : "failed",
          error: { type, message: error.message },
          ...(error.retryAfterMs !== undefined ? { retryAfterSeconds: Math.ceil(error.retryAfterMs / 1000) } : {}),
        }
      : { kind: "failed", runStatus: "failed", error: { type, message: error.message } };
  }
  const message = error instanceof Error ? error.message : String(error);
  return { kind: "retry", runStatus: "failed", error: { type: INTERNAL_ERROR, message: message.slice(0, 1_000) } };
}
