import type { AppConfig } from "../env.ts";
import { publish } from "../events/publish.ts";
import type { Logger } from "../lib/logger.ts";
import type { EventSink } from "./router.ts";
import type { CallContext } from "./types.ts";

/**
 * `llm.provider.error` and `llm.provider.fallback` through the workspace's
 * EventHub, in the seed's shapes plus `simulated` (the data objects are open
 * to additions). Publishing never delays or fails the call: it runs in the
 * background and a failure is only logged.
 */

export function hubEventSink(
  config: Pick<AppConfig, "EVENT_HUB">,
  logger: Logger,
  waitUntil?: (promise: Promise<unknown>) => void,
): EventSink {
  const send = (
    eventType: "llm.provider.error" | "llm.provider.fallback",
    context: CallContext,
    data: Record<string, unknown>,
  ) => {
    const work = publish(
      config,
      {
        event_type: eventType,
        workspace_id: context.workspaceId,
        task_id: context.taskId,
        run_id: context.runId,
        agent_id: context.agentId,
        ...(context.correlationId ? { correlation_id: context.correlationId } : {}),
        data: data as never,
      },
      { logger },
    ).catch((error: unknown) => logger.warn("llm event not published", { error, event_type: eventType }));
    if (waitUntil) waitUntil(work);
  };
  return {
    providerError: (context, data) => send("llm.provider.error", context, { ...data }),
    fallback: (context, data) => send("llm.provider.fallback", context, { ...data }),
  };
}
