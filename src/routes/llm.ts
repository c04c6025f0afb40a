import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { writesNoAudit } from "../audit/index.ts";
import { ulid } from "../lib/ids.ts";
import { API_PROBLEMS, type HeaderDoc, problemResponses, RETRY_AFTER_HEADER } from "../lib/openapi.ts";
import { ApiError } from "../lib/problem.ts";
import { liveRequestSignal } from "../lib/request-signal.ts";
import { llmErrorToApiError } from "../llm/http-errors.ts";
import { createLlmRouter } from "../llm/index.ts";
import { callerDeadlineMs, completionId, completionStream, toChatRequest, toCompletion } from "../llm/openai-compat.ts";
import { ChatCompletionRequestSchema, ChatCompletionSchema } from "../llm/openai-schemas.ts";
import { requireScope } from "../middleware/auth.ts";
import { reportError } from "../observability/sentry.ts";
import type { HonoEnv } from "../types.ts";

/**
 * OpenAI-compatible chat completions through the router, metered and
 * budgeted like agent calls: the official SDKs work with `baseURL` set to
 * `<origin>/api/v1/llm` and a workspace key as the API key.
 *
 * Metered, not audited: a completion changes no configuration, and each one is
 * already a usage row (provider, model, tokens, cost, request id) written once
 * per call. An audit entry per call as well doubled the writes of the hot path
 * and grew the workspace's hash chain by one entry per call to seal.
 */

const CHAT_PROBLEMS = {
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

const chatRoute = createRoute({
  method: "post",
  path: "/api/v1/llm/chat/completions",
  operationId: "createChatCompletion",
  tags: ["LLM"],
  summary: "Create a chat completion (OpenAI-compatible)",
  description:
    "Routed by the workspace's chain with retries, fallback and circuit breakers; charged against its budgets. `stream: true` answers Server-Sent Events in OpenAI's chunk format, with a usage chunk when `stream_options.include_usage` is set. When every target fails, the problem's `failures` lists each one tried (provider, model, attempts, status, code, message), and `detail` says the same in words. The call's retries and failovers end by the timeout the client says it waits, `X-Stainless-Timeout` in seconds (OpenAI's SDKs send it; at most 900), less a second, else after 180 s. Errors are problem+json with an `error` member as well, OpenAI's error object (`message`, `type`, `code`, `param`), so OpenAI's SDKs report them as they report OpenAI's.",
  "x-audit-exempt":
    "A completion changes no configuration; each call is recorded once as a usage row (GET /api/v1/usage) with its request id.",
  middleware: [requireScope("tasks:write"), writesNoAudit] as const,
  request: {
    body: { required: true, content: { "application/json": { schema: ChatCompletionRequestSchema } } },
  },
  responses: {
    200: {
      description:
        "The completion, or with `stream: true` an SSE stream of `chat.completion.chunk` objects ending in `[DONE]`.",
      content: {
        "application/json": { schema: ChatCompletionSchema },
        "text/event-stream": {
          schema: z.string().openapi({ description: "`data: {chunk}` lines, then `data: [DONE]`." }),
        },
      },
      headers: {
        "X-LLM-Provider": {
          description: "The provider that served the call.",
          required: true,
          schema: { type: "string" },
        },
        "X-LLM-Simulated": {
          description: "`true` when the offline `simulated` provider answered.",
          required: true,
          schema: { type: "string" },
        },
      },
    },
    ...CHAT_PROBLEMS,
    429: { ...CHAT_PROBLEMS[429], headers: { "X-Should-Retry": SHOULD_RETRY_HEADER } },
    503: {
      ...CHAT_PROBLEMS[503],
      headers: {
        "Retry-After": {
          ...RETRY_AFTER_HEADER,
          description: "When the caller may retry: the soonest wait the providers asked for, else 1.",
        },
        "X-Should-Retry": SHOULD_RETRY_HEADER,
      },
    },
  },
});

/**
 * OpenAI's Responses API is not offered, but clients built for OpenAI call it: the Vercel AI SDK's default
 * model (`createOpenAI({ baseURL })(model)`, where `.chat(model)` calls chat completions), LangChain's
 * `ChatOpenAI` with `useResponsesApi` or options only that API has. They report the problem's
 * `error.message`, which names the way to chat completions rather than "No route matches".
 */
export const RESPONSES_API_REFUSAL =
  "OpenAI's Responses API is not offered here, only chat completions (POST /api/v1/llm/chat/completions): " +
  "with the Vercel AI SDK call `createOpenAI({ baseURL, apiKey }).chat(model)` rather than the provider itself; " +
  "with LangChain's ChatOpenAI leave `useResponsesApi` off and send no option only the Responses API has " +
  "(built-in tools, `reasoning.summary`, `previous_response_id`), nor a model name it sends there (codex).";

export function registerLlmRoutes(app: OpenAPIHono<HonoEnv>): void {
  // Not in the OpenAPI document: there is no such operation, only this answer to every method.
  for (const path of ["/api/v1/llm/responses", "/api/v1/llm/responses/*"]) {
    app.all(path, () => {
      throw new ApiError("NOT_FOUND", RESPONSES_API_REFUSAL);
    });
  }
  app.openapi(chatRoute, async (c) => {
    const body = c.req.valid("json");
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
    const abandoned = body.stream ? new AbortController() : undefined;
    const live = liveRequestSignal(c.req.raw);
    const deadlineMs = callerDeadlineMs(c.req.header("X-Stainless-Timeout"), Date.now());
    const context = {
      workspaceId,
      requestId,
      correlationId: c.get("trace")?.traceId,
      // Unique per request: a client reusing its X-Request-Id must not get a call for free.
      chargeKey: `api:${requestId}:${callId}`,
      chargeOnce: true,
      signal: abandoned ? (live ? AbortSignal.any([live, abandoned.signal]) : abandoned.signal) : live,
      ...(deadlineMs !== undefined ? { deadlineMs } : {}),
    };
    const request = toChatRequest(body);
    const id = completionId(callId);
    try {
      if (body.stream) {
        const routed = await router.chatStream(request, context);
        // The invocation's traces are exported once its waitUntil work is done: without the stream's end among
        // it, they went out with the serving attempt's span still open, its tokens and outcome never told.
        c.executionCtx.waitUntil(routed.result.catch(() => {}));
        const stream = completionStream(
          id,
          routed.model,
          routed.deltas,
          routed.result,
          body.stream_options?.include_usage === true,
          (error) => logger.warn("llm stream failed after it started", { error }),
          () => abandoned?.abort(new DOMException("the client went away", "AbortError")),
        );
        return new Response(stream, {
          status: 200,
          headers: {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-LLM-Provider": routed.provider,
            "X-LLM-Simulated": String(routed.simulated),
          },
        }) as never;
      }
      // Held by waitUntil too: a client that leaves before the answer does not stop the call (the provider
      // works on), so it still ends in its charge rather than in a reservation released unpaid 30 min later.
      const answer = router.chat(request, context);
      c.executionCtx.waitUntil(answer.catch(() => {}));
      const result = await answer;
      c.header("X-LLM-Provider", result.provider);
      c.header("X-LLM-Simulated", String(result.simulated));
      return c.json(toCompletion(id, result), 200);
    } catch (error) {
      throw llmErrorToApiError(error);
    }
  });
}
