import type { WorkerEnv } from "../env.ts";
import { reportError } from "../observability/sentry.ts";
import { backgroundLogger } from "../observability/worker-logger.ts";

/**
 * Entry for every queue this Worker consumes. Until a consumer is registered
 * for a queue its messages are retried, never acknowledged, so nothing is lost.
 */
export async function handleQueueBatch(batch: MessageBatch, env: WorkerEnv, ctx: ExecutionContext): Promise<void> {
  const logger = backgroundLogger(env, { queue: batch.queue });
  try {
    logger.warn("no consumer registered for queue; retrying batch", { messages: batch.messages.length });
    batch.retryAll({ delaySeconds: 60 });
  } catch (error) {
    logger.error("queue batch failed", { error });
    reportError(env, ctx, error, { tags: { queue: batch.queue } });
    throw error;
  }
}
