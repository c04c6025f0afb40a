import type { AppConfig } from "../env.ts";
import type { Logger } from "../lib/logger.ts";
import { buildAdapters } from "./adapters/index.ts";
import { BreakerClient } from "./breaker-client.ts";
import type { BreakerPolicy, BreakerState } from "./breaker-core.ts";
import { budgetGate } from "./budgets.ts";
import { hubEventSink } from "./events.ts";
import { Router, type RouterDeps } from "./router.ts";
import { settingsLoader } from "./settings.ts";
import { d1UsageSink } from "./usage.ts";

/**
 * The LLM router's entry point for the rest of the Worker: the agent runtime
 * (queue consumer) and the OpenAI-compatible endpoint both call
 * `createLlmRouter(config, { logger, waitUntil })` and then `router.chat(...)`.
 */

export type { BreakerView } from "./breaker-core.ts";
export { type BudgetStatus, budgetStatus, exhaustedMessage } from "./budgets.ts";
export { Coalescer } from "./coalesce.ts";
export { BudgetExhaustedError } from "./errors.ts";
export { type RoutedStream, Router } from "./router.ts";
export { unpricedEntries } from "./routing.ts";
export { forgetWorkspaceSettings } from "./settings.ts";
export * from "./types.ts";

export interface LlmRouterDeps {
  logger: Logger;
  waitUntil?: (promise: Promise<unknown>) => void;
  /** RouterDeps.report: where a bug met in a call's attempt is sent (Sentry). */
  report?: RouterDeps["report"];
  /** Tests only: shorter timeouts and breaker windows, a stubbed sleep. */
  overrides?: Partial<
    Pick<RouterDeps, "attemptTimeoutMs" | "defaultDeadlineMs" | "maxAttemptsPerTarget" | "sleep" | "random" | "now">
  > & {
    breakerPolicy?: BreakerPolicy;
  };
}

// Breaker copies are per isolate and shared by every router in it: that is the point of the cache.
const breakerClients = new WeakMap<object, BreakerClient>();

export function breakerClientFor(config: AppConfig, policy?: BreakerPolicy): BreakerClient {
  const namespace = config.PROVIDER_BREAKER;
  const cacheKey = (namespace ?? config) as object;
  let client = breakerClients.get(cacheKey);
  if (!client || policy) {
    client = new BreakerClient(
      namespace
        ? {
            // RPC types turn tuples into arrays; the values are the object's own BreakerState.
            sync: async (provider, model, outcomes) =>
              (await namespace.getByName(provider).sync(model, outcomes, policy)) as unknown as BreakerState,
            tryTrial: async (provider, model, leaseMs) =>
              (await namespace.getByName(provider).tryTrial(model, policy, leaseMs)) as unknown as {
                granted: boolean;
                state: BreakerState;
              },
          }
        : undefined,
      { policy },
    );
    if (!policy) breakerClients.set(cacheKey, client);
  }
  return client;
}

export function createLlmRouter(config: AppConfig, deps: LlmRouterDeps): Router {
  const { logger, waitUntil, report, overrides = {} } = deps;
  const { breakerPolicy, ...routerOverrides } = overrides;
  return new Router({
    adapters: buildAdapters(config),
    settings: settingsLoader(config),
    breaker: breakerClientFor(config, breakerPolicy).gate(waitUntil),
    budgets: budgetGate(config, logger, waitUntil),
    usage: d1UsageSink(config.DB, config.METRICS),
    events: hubEventSink(config, logger, waitUntil),
    logger,
    waitUntil,
    report,
    attemptTimeoutMs: config.LLM_ATTEMPT_TIMEOUT_MS,
    ...routerOverrides,
  });
}
