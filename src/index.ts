import { instrument } from "@microlabs/otel-cf-workers";
import { createApp } from "./app.ts";
import type { WorkerEnv } from "./env.ts";
import { isTracingEnabled, resolveTraceConfig } from "./observability/tracing.ts";
import { handleQueueBatch } from "./queues/consumer.ts";
import { handleScheduled } from "./scheduled.ts";

export { EventHub } from "../durable-objects/event-hub.ts";
export { ProviderBreaker } from "../durable-objects/provider-breaker.ts";
export { WorkspaceLimiter } from "../durable-objects/workspace-limiter.ts";

const app = createApp();

function plainHandler(): ExportedHandler<WorkerEnv> {
  return {
    fetch: (request, env, ctx) => app.fetch(request, env, ctx),
    queue: handleQueueBatch,
    scheduled: handleScheduled,
  };
}

const untraced = plainHandler();
// instrument() wraps the object it is given, so the traced handler gets its own.
const traced = instrument(plainHandler(), resolveTraceConfig);

/** Tracing only when an OTLP endpoint is configured: otherwise there is no exporter at all. */
function pick(env: WorkerEnv): ExportedHandler<WorkerEnv> {
  return isTracingEnabled(env) ? traced : untraced;
}

export default {
  fetch(request, env, ctx) {
    return pick(env).fetch!(request, env, ctx);
  },
  queue(batch, env, ctx) {
    return pick(env).queue!(batch, env, ctx);
  },
  scheduled(controller, env, ctx) {
    return pick(env).scheduled!(controller, env, ctx);
  },
} satisfies ExportedHandler<WorkerEnv>;
