import { checkEnv, type WorkerEnv } from "../env.ts";
import type { Logger } from "../lib/logger.ts";
import { reportError } from "../observability/sentry.ts";
import { backgroundLogger } from "../observability/worker-logger.ts";
import { consumeTaskBatch } from "../tasks/consumer.ts";
import { consumeDeadLetterBatch } from "../tasks/dead-letters.ts";
import { taskRouter } from "../tasks/router.ts";

/**
 * Entry for every queue this Worker consumes, by queue name (staging and
 * production add a suffix: `tasks-staging`, `tasks-dlq-production`). A queue
 * without a consumer has its messages retried, never acknowledged, so nothing
 * is lost.
 */

export type QueueKind = "tasks" | "tasks-dlq" | null;

export function queueKind(name: string): QueueKind {
  if (name === "tasks-dlq" || name.startsWith("tasks-dlq-")) return "tasks-dlq";
  if (name === "tasks" || name.startsWith("tasks-")) return "tasks";
  return null;
}

export async function handleQueueBatch(batch: MessageBatch, env: WorkerEnv, ctx: ExecutionContext): Promise<void> {
  const logger = backgroundLogger(env, { queue: batch.queue });
  try {
    const checked = checkEnv(env);
    if (!checked.ok) throw new Error(`bad environment: ${checked.problems.map((problem) => problem.path).join(", ")}`);
    const config = checked.config;
    switch (queueKind(batch.queue)) {
      case "tasks": {
        const report = (error: unknown, tags: Record<string, string>) =>
          reportError(env, ctx, error, { tags: { queue: batch.queue, ...tags } });
        await consumeTaskBatch(batch, config, {
          router: taskRouter(config, logger, ctx, report),
          logger,
          executionCtx: ctx,
          report,
        });
        return;
      }
      case "tasks-dlq":
        await consumeDeadLetterBatch(batch, config, logger, ctx);
        return;
      default:
        unhandled(batch, logger);
    }
  } catch (error) {
    logger.error("queue batch failed", { error });
    reportError(env, ctx, error, { tags: { queue: batch.queue } });
    // Messages not yet acked or retried are delivered again: the consumers are idempotent.
    throw error;
  }
}

function unhandled(batch: MessageBatch, logger: Logger): void {
  logger.warn("no consumer registered for queue; retrying batch", { messages: batch.messages.length });
  batch.retryAll({ delaySeconds: 60 });
}
