import { logUndelivered, type PublishEnv, publish } from "../events/index.ts";
import type { Logger } from "../lib/logger.ts";
import type { EventSink } from "./router.ts";
import type { CallContext } from "./types.ts";

/**
 * `llm.provider.error` and `llm.provider.fallback` through the workspace's
 * EventHub, in the seed's shapes plus `simulated` (the data objects are open
 * to additions). Publishing never delays or fails the call: it runs in the
 * background, in order, and what the hub will not take is parked (src/events/parked.ts).
 * A caller with events of its own (CallContext.emitEvent) gets them there.
 */

export function hubEventSink(
  config: PublishEnv,
  logger: Logger,
  waitUntil?: (promise: Promise<unknown>) => void,
): EventSink {
  // A call's events go to the hub one after another, each once the one before landed (or was parked): sent at
  // once, a provider error the hub missed for a moment landed, retried, after the fallback told right after it.
  let landed: Promise<unknown> = Promise.resolve();
  const send = (
    eventType: "llm.provider.error" | "llm.provider.fallback",
    context: CallContext,
    data: Record<string, unknown>,
  ) => {
    const event = {
      event_type: eventType,
      workspace_id: context.workspaceId,
      task_id: context.taskId,
      run_id: context.runId,
      agent_id: context.agentId,
      ...(context.correlationId ? { correlation_id: context.correlationId } : {}),
      ...(context.requestId ? { request_id: context.requestId } : {}),
      data: data as never,
    };
    if (context.emitEvent) return context.emitEvent(event);
    const work = landed
      .then(() => publish(config, event, { logger }))
      .catch((error: unknown) => logUndelivered(logger, error, { event_type: eventType }));
    landed = work;
    if (waitUntil) waitUntil(work);
  };
  return {
    providerError: (context, data) => send("llm.provider.error", context, { ...data }),
    fallback: (context, data) => send("llm.provider.fallback", context, { ...data }),
  };
}
