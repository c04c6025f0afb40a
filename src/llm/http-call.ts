import { z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { ulid } from "../lib/ids.ts";
import { API_PROBLEMS, type HeaderDoc, problemResponses, RETRY_AFTER_HEADER } from "../lib/openapi.ts";
import { liveRequestSignal } from "../lib/request-signal.ts";
import { reportError } from "../observability/sentry.ts";
import type { HonoEnv } from "../types.ts";
import { llmErrorToApiError } from "./http-errors.ts";
import { createLlmRouter, type RoutedStream } from "./index.ts";
import type { CallContext, ChatRequest, ChatResult } from "./types.ts";

/**
 * One call of an OpenAI-compatible route (chat completions, Responses) through the router: the workspace's
 * router, the call's context (its unique charge key, the client's abandonment), and the answer's headers.
 * Both routes make their calls here, so they are metered, budgeted and stopped alike.
 */
export interface HttpLlmCall {
  /** The call's own ulid: it keys its charge and the answer's id. */
  readonly callId: string;
  whole(request: ChatRequest): Promise<ChatResult>;
  stream(request: ChatRequest): Promise<RoutedStream>;
  /** For the stream body's cancel: the client left, so the call stops now rather than at its next event. */
  abandon(): void;
  /** For the stream body: a failure after the response began, logged (the client is told in-stream). */
  streamFailed(error: unknown): void;
}

/** The longest a caller may ask the call to take (X-Stainless-Timeout): a task run's limit, 15 minutes. */
const MAX_CALLER_TIMEOUT_MS = 900_000;
/** Answered this much before the client's own timer fires, so it reads why rather than its own timeout. */
const CALLER_TIMEOUT_MARGIN_MS = 1_000;
/** What OpenAI's SDKs wait for an answer unless told otherwise: 10 minutes. */
const DEFAULT_CALLER_TIMEOUT_MS = 600_000;

/**
 * The call's deadline, from the timeout the client says it waits (`X-Stainless-Timeout`, in seconds: OpenAI's
 * SDKs send it, the npm client only for a call given its own `timeout`), else the 10 minutes those SDKs wait by
 * default. A reasoning model may think, and a long answer take, minutes: given up at the router's own 180 s, such
 * a call failed while the client still waited, and was charged.
 */
export function callerDeadlineMs(timeoutHeader: string | undefined, nowMs: number): number {
  const seconds = timeoutHeader === undefined ? Number.NaN : Number(timeoutHeader.trim());
  const timeoutMs =
    Number.isFinite(seconds) && seconds > 0
      ? Math.min(seconds * 1000, MAX_CALLER_TIMEOUT_MS)
      : DEFAULT_CALLER_TIMEOUT_MS;
  return nowMs + Math.max(timeoutMs - CALLER_TIMEOUT_MARGIN_MS, timeoutMs / 2);
}

export function httpLlmCall(c: Context<HonoEnv>, streamed: boolean): HttpLlmCall {
  const logger = c.get("logger");
  const requestId = c.get("requestId");
  const workspaceId = c.get("workspaceId")!;
  const router = createLlmRouter(c.get("config"), {
    logger,
    waitUntil: (work) => c.executionCtx.waitUntil(work),
    report: (error) =>
      reportError(c.env, c.executionCtx, error, {
        request: c.req.raw,
        tags: { request_id: requestId, workspace_id: workspaceId, trace_id: c.get("trace")?.traceId },
      }),
  });
  const callId = ulid();
  // A stream's client may leave while the provider is silent; its body's cancel aborts the call through this.
  const abandoned = streamed ? new AbortController() : undefined;
  const live = liveRequestSignal(c.req.raw);
  const deadlineMs = callerDeadlineMs(c.req.header("X-Stainless-Timeout"), Date.now());
  const context: CallContext = {
    workspaceId,
    requestId,
    correlationId: c.get("trace")?.traceId,
    // Unique per request: a client reusing its X-Request-Id must not get a call for free.
    chargeKey: `api:${requestId}:${callId}`,
    chargeOnce: true,
    signal: abandoned ? (live ? AbortSignal.any([live, abandoned.signal]) : abandoned.signal) : live,
    deadlineMs,
  };
  return {
    callId,
    async whole(request) {
      // Held by waitUntil too: a client that leaves before the answer does not stop the call (the provider
      // works on), so it still ends in its charge rather than in a reservation released unpaid 30 min later.
      const answer = router.chat(request, context);
      c.executionCtx.waitUntil(answer.catch(() => {}));
      try {
        return await answer;
      } catch (error) {
        throw llmErrorToApiError(error);
      }
    },
    async stream(request) {
      try {
        const routed = await router.chatStream(request, context);
        // The invocation's traces are exported once its waitUntil work is done: without the stream's end among
        // it, they went out with the serving attempt's span still open, its tokens and outcome never told.
        c.executionCtx.waitUntil(routed.result.catch(() => {}));
        return routed;
      } catch (error) {
        throw llmErrorToApiError(error);
      }
    },
    abandon: () => abandoned?.abort(new DOMException("the client went away", "AbortError")),
    streamFailed: (error) => logger.warn("llm stream failed after it started", { error }),
  };
}

/** Who answered, on every answer of the OpenAI-compatible routes. */
export function llmAnswerHeaders(served: { provider: string; simulated: boolean }): Record<string, string> {
  return { "X-LLM-Provider": served.provider, "X-LLM-Simulated": String(served.simulated) };
}

/** A streamed answer: the SSE body, with who serves it. */
export function sseResponse(body: ReadableStream<Uint8Array>, served: RoutedStream): Response {
  return new Response(body, {
    status: 200,
    headers: {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-cache",
      ...llmAnswerHeaders(served),
    },
  });
}

const LLM_CALL_PROBLEMS = {
  ...API_PROBLEMS,
  ...problemResponses(
    "BAD_REQUEST",
    "MALFORMED_JSON",
    "PAYLOAD_TOO_LARGE",
    "UNSUPPORTED_MEDIA_TYPE",
    "VALIDATION_FAILED",
  ),
};

const SHOULD_RETRY_HEADER: HeaderDoc = {
  description:
    "`false` when retrying cannot help (a spent budget, credentials every provider refuses, refusals no retry mends such as spent quotas, a cancelled call); OpenAI's and Anthropic's SDKs obey it.",
  schema: { type: "string" },
};

/**
 * The OpenAPI responses of a routed call: its answer (JSON, or SSE when streamed) with who served it, and the
 * problems any call may meet (a spent budget, every provider failing).
 */
export function llmCallResponses(answer: { description: string; json: z.ZodType; sse: string }) {
  return {
    200: {
      description: answer.description,
      content: {
        "application/json": { schema: answer.json },
        "text/event-stream": { schema: z.string().openapi({ description: answer.sse }) },
      },
      headers: {
        "X-LLM-Provider": {
          description: "The provider that served the call.",
          required: true,
          schema: { type: "string" as const },
        },
        "X-LLM-Simulated": {
          description: "`true` when the offline `simulated` provider answered.",
          required: true,
          schema: { type: "string" as const },
        },
      },
    },
    ...LLM_CALL_PROBLEMS,
    429: { ...LLM_CALL_PROBLEMS[429], headers: { "X-Should-Retry": SHOULD_RETRY_HEADER } },
    503: {
      ...LLM_CALL_PROBLEMS[503],
      headers: {
        "Retry-After": {
          ...RETRY_AFTER_HEADER,
          description:
            "When the caller may retry: the soonest wait the providers asked for, else 1. Not sent with `X-Should-Retry: false`, which no retry mends.",
        },
        "X-Should-Retry": SHOULD_RETRY_HEADER,
      },
    },
  };
}
