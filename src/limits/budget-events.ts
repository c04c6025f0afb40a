import type { EventEnvelope } from "../events/catalog.ts";
import { type PublishInput, stampEvent } from "../events/publish.ts";
import type { Logger } from "../lib/logger.ts";
import type { ThresholdCrossing } from "./budget-types.ts";

/**
 * What a budget threshold crossing is told as: `billing.threshold.reached`
 * and `billing.usage_alert`, in the seed's shape. The WorkspaceLimiter
 * stamps them in the transaction that crossed the threshold and queues them
 * in its outbox (src/events/outbox.ts), so they are published once even when
 * the isolate that made the call is gone by then.
 */

/** Who the charge that crossed a threshold belongs to, for the events' envelope. */
export interface BudgetEventContext {
  workspaceId: string;
  taskId?: string;
  runId?: string;
  agentId?: string;
  correlationId?: string;
  /** The API request whose call (or budget change) crossed the threshold. */
  requestId?: string;
}

const ALERT_LEVELS: Record<number, "info" | "warning" | "critical"> = { 50: "info", 80: "warning", 100: "critical" };

export function thresholdEventInputs(
  crossing: ThresholdCrossing,
  context: BudgetEventContext,
): PublishInput<"billing.threshold.reached" | "billing.usage_alert">[] {
  const data = {
    workspace_id: context.workspaceId,
    threshold_type: crossing.period,
    current_usage: crossing.used,
    threshold: crossing.limit,
    percentage: crossing.percentage,
    alert_level: ALERT_LEVELS[crossing.thresholdPercent] ?? "info",
    // Beyond the seed's fields (the data objects are open): which budget and which step.
    metric: crossing.metric,
    threshold_percent: crossing.thresholdPercent,
  };
  const common = {
    workspace_id: context.workspaceId,
    task_id: context.taskId,
    run_id: context.runId,
    agent_id: context.agentId,
    ...(context.correlationId ? { correlation_id: context.correlationId } : {}),
    ...(context.requestId ? { request_id: context.requestId } : {}),
  };
  return (["billing.threshold.reached", "billing.usage_alert"] as const).map((eventType) => ({
    ...common,
    event_type: eventType,
    data,
  }));
}

/**
 * The crossings' events, stamped (event ids fixed from here on). One that
 * fails the contract is a producer bug: stampEvent logs and reports it, and it
 * is left out rather than undoing the charge that crossed the threshold.
 */
export function stampedThresholdEvents(
  crossings: readonly ThresholdCrossing[],
  context: BudgetEventContext,
  logger: Logger,
): EventEnvelope[] {
  const events: EventEnvelope[] = [];
  for (const crossing of crossings) {
    // With the request (or task) and trace whose charge crossed it, as its events carry them: the limiter's own
    // line named only the workspace, so what crossed it was found in the events alone.
    logger.warn("budget threshold reached", {
      workspace_id: context.workspaceId,
      ...(context.requestId ? { request_id: context.requestId } : {}),
      ...(context.correlationId ? { trace_id: context.correlationId } : {}),
      ...(context.taskId ? { task_id: context.taskId } : {}),
      ...(context.runId ? { run_id: context.runId } : {}),
      ...crossing,
    });
    for (const input of thresholdEventInputs(crossing, context)) {
      try {
        events.push(stampEvent(input, { logger }) as EventEnvelope);
      } catch {
        // Logged and reported by stampEvent.
      }
    }
  }
  return events;
}
