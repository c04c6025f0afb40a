import type { AppConfig } from "../env.ts";
import type { Logger } from "../lib/logger.ts";
import { createLlmRouter } from "../llm/index.ts";
import type { LlmRouter } from "../llm/types.ts";

/** The LLM router one queue batch's agents share (metering, budgets, breakers and fallback live inside it). */
export function taskRouter(
  config: AppConfig,
  logger: Logger,
  ctx: Pick<ExecutionContext, "waitUntil">,
  report?: (error: unknown, tags: Record<string, string>) => void,
): LlmRouter {
  return createLlmRouter(config, {
    logger,
    waitUntil: (promise) => ctx.waitUntil(promise),
    report: (error, context) =>
      report?.(error, {
        workspace_id: context.workspaceId,
        ...(context.taskId ? { task_id: context.taskId } : {}),
        ...(context.runId ? { run_id: context.runId } : {}),
      }),
  });
}
