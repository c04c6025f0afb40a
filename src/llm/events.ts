import { logUndelivered, type PublishEnv, publish } from "../events/index.ts";
import type { Logger } from "../lib/logger.ts";
import type { EventSink } from "./router.ts";
import type { CallContext } from "./types.ts";

/**
 * `llm.provider.error` and `llm.provider.fallback` through the workspace's
 * EventHub, in the seed's shapes plus `simulated` (the data objects are open
 * to additions). Publishing never delays or fails the call: it runs in the
 * background, and what the hub will not take is parked (src/events/parked.ts).
 * A caller with events of its own (CallContext.emitEvent) gets them there.
 */

export function hubEventSink(
  config: PublishEnv,
  logger: Logger,
  waitUntil?: (promise: Promise<unknown>) => void,
): EventSink {
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
    const work = publish(config, event, { logger }).catch((error: unknown) =>
      logUndelivered(logger, error, { event_type: eventType }),
    );
    if (waitUntil) waitUntil(work);
  };
  return {
    providerError: (context, data) => send("llm.provider.error", context, { ...data }),
    fallback: (context, data) => send("llm.provider.fallback", context, { ...data }),
  };
}
