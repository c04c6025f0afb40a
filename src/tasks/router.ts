import type { AppConfig } from "../env.ts";
import type { Logger } from "../lib/logger.ts";
import { LlmError, type LlmRouter } from "../llm/types.ts";

/**
 * The LLM router the agent runs on. Until src/llm/index.ts exports
 * createLlmRouter this answers a retryable error, so tasks wait in retries
 * instead of failing.
 */
export function taskRouter(_config: AppConfig, _logger: Logger, _ctx: Pick<ExecutionContext, "waitUntil">): LlmRouter {
  return {
    async chat() {
      throw new LlmError("all_providers_failed", "the LLM router is not available yet", true);
    },
  };
}
