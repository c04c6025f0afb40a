import type { AppConfig } from "../env.ts";
import type { Logger } from "../lib/logger.ts";
import type { BudgetGate } from "./router.ts";

/** Budgets: reserve before a call, settle after (WorkspaceLimiter). */
export function budgetGate(
  _config: Pick<AppConfig, "WORKSPACE_LIMITER" | "EVENT_HUB">,
  _logger: Logger,
  _waitUntil?: (promise: Promise<unknown>) => void,
): BudgetGate {
  return { reserve: async () => {}, settle: async () => {} };
}
