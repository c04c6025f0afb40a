import { trace } from "@opentelemetry/api";
import type { MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import { checkEnv } from "../env.ts";
import { ulid } from "../lib/ids.ts";
import { Logger } from "../lib/logger.ts";
import { continueOrStartTrace, type TraceIds } from "../lib/trace-context.ts";
import type { HonoEnv } from "../types.ts";
import { setResponseHeaders } from "./response-headers.ts";

export const API_VERSION = "1.0";
// Accept the caller's id only if it is short and plain, so it is safe in logs and headers.
const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{8,128}$/;

export function requestIdFrom(header: string | undefined): string {
  return header && SANE_REQUEST_ID.test(header) ? header : `req_${ulid()}`;
}

/** The OpenTelemetry span if tracing is on (it has already continued the caller's traceparent). */
function currentTrace(traceparent: string | undefined): TraceIds {
  const spanContext = trace.getActiveSpan()?.spanContext();
  if (spanContext && trace.isSpanContextValid(spanContext)) {
    return { traceId: spanContext.traceId, spanId: spanContext.spanId, sampled: (spanContext.traceFlags & 1) === 1 };
  }
  return continueOrStartTrace(traceparent);
}

/**
 * First middleware: request id, trace ids, the request's logger, the API
 * version header, and one access-log line when the response is ready.
 */
export const requestContext: MiddlewareHandler<HonoEnv> = async (c, next) => {
  const startedAtMs = Date.now();
  const requestId = requestIdFrom(c.req.header("X-Request-Id"));
  const traceIds = currentTrace(c.req.header("traceparent"));
  const envCheck = checkEnv(c.env);
  const logger = new Logger(
    {
      level: envCheck.ok ? envCheck.config.LOG_LEVEL : "info",
      sampleRate: envCheck.ok ? envCheck.config.LOG_SAMPLE_RATE : 1,
    },
    { request_id: requestId, trace_id: traceIds.traceId, span_id: traceIds.spanId },
  );
  c.set("requestId", requestId);
  c.set("trace", traceIds);
  c.set("logger", logger);

  await next();

  setResponseHeaders(c, { "X-Request-Id": requestId, "X-API-Version": API_VERSION });
  const status = c.res.status;
  // The matched route template ("/api/v1/tasks/:id"), or "*" when nothing matched.
  const route = routePath(c, -1);
  const workspaceId = c.get("workspaceId");
  const span = trace.getActiveSpan();
  if (span) {
    span.updateName(`${c.req.method} ${route}`);
    span.setAttributes({
      "http.route": route,
      "mgx.request_id": requestId,
      ...(workspaceId ? { "mgx.workspace_id": workspaceId } : {}),
    });
  }
  const fields = {
    method: c.req.method,
    path: c.req.path,
    route,
    status,
    duration_ms: Date.now() - startedAtMs,
    ...(workspaceId ? { workspace_id: workspaceId } : {}),
  };
  if (status >= 500) logger.error("request failed", fields);
  else if (status >= 400) logger.warn("request rejected", fields);
  else logger.info("request completed", fields);
};
