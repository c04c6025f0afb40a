import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { writesNoAudit } from "../audit/index.ts";
import { ApiError } from "../lib/problem.ts";
import { httpLlmCall, llmAnswerHeaders, llmCallResponses, sseResponse } from "../llm/http-call.ts";
import { responseId, responsesToChatRequest, toResponse } from "../llm/responses-compat.ts";
import { ResponseCreateRequestSchema, ResponseObjectSchema } from "../llm/responses-schemas.ts";
import { responseEventStream } from "../llm/responses-stream.ts";
import { requireScope } from "../middleware/auth.ts";
import type { HonoEnv } from "../types.ts";

/**
 * OpenAI's Responses API, stateless, through the router as chat completions are (src/routes/llm.ts): the
 * clients built for it (the Vercel AI SDK's default `openai(model)`, the openai SDK's `responses.create()` and
 * `responses.stream()`, Codex-style agents) work with `baseURL` set to `<origin>/api/v1/llm`. Nothing is stored,
 * so a response cannot be retrieved, deleted or continued: the conversation is sent whole each time.
 */

const responsesRoute = createRoute({
  method: "post",
  path: "/api/v1/llm/responses",
  operationId: "createResponse",
  tags: ["LLM"],
  summary: "Create a model response (OpenAI's Responses API, stateless)",
  description:
    "OpenAI's Responses API over the same router as chat completions: routed by the workspace's chain with retries, fallback and circuit breakers, charged against its budgets, one usage row per call. Stateless: nothing is stored whatever `store` says, so `previous_response_id`, `conversation`, `prompt` and `background: true` are refused (422 naming the field), and GET or DELETE of a response answers 404; send the whole conversation as `input` items (messages, `function_call` and `function_call_output`). Only function tools are offered: OpenAI's hosted tools and input images or files are refused likewise. `stream: true` answers Server-Sent Events, OpenAI's semantic events (`response.created` … `response.completed`, or `response.incomplete` / `response.failed`), each with its `sequence_number`. The call ends by the timeout the client says it waits (`X-Stainless-Timeout`, as for chat completions). Errors are problem+json with an `error` member as well, OpenAI's error object (`message`, `type`, `code`, `param`), so OpenAI's SDKs report them as they report OpenAI's.",
  "x-audit-exempt":
    "A response changes no configuration; each call is recorded once as a usage row (GET /api/v1/usage) with its request id.",
  middleware: [requireScope("tasks:write"), writesNoAudit] as const,
  request: {
    body: { required: true, content: { "application/json": { schema: ResponseCreateRequestSchema } } },
  },
  responses: llmCallResponses({
    description:
      "The response (`status` completed, or incomplete with `incomplete_details.reason`), or with `stream: true` an SSE stream of its events.",
    json: ResponseObjectSchema,
    sse: "`event: {type}` and `data: {event}` lines per event, from `response.created` to `response.completed`, `response.incomplete` or `response.failed`.",
  }),
});

/** Told by GET and DELETE of a response (and its input items), which the openai SDK's clients may call. */
export const RESPONSES_NOT_STORED =
  "Responses are not stored here, so none can be retrieved, cancelled or deleted: POST /api/v1/llm/responses is stateless (send the whole conversation as `input`).";

/** The openai SDK's other calls under /responses (`responses.inputTokens.count()`, `responses.compact()`): no stored response is involved, so "not stored" would mislead. */
const RESPONSES_NOT_OFFERED = {
  input_tokens:
    "Counting input tokens is not offered here: POST /api/v1/llm/responses answers with `usage.input_tokens`, and each provider counts its own.",
  compact:
    "Compacting a conversation is not offered here: POST /api/v1/llm/responses is stateless (send the conversation as `input`, shortened as you see fit).",
} as const;

export function registerLlmResponsesRoutes(app: OpenAPIHono<HonoEnv>): void {
  app.openapi(responsesRoute, async (c) => {
    const body = c.req.valid("json");
    const call = httpLlmCall(c, body.stream === true);
    const request = responsesToChatRequest(body);
    const shell = {
      id: responseId(call.callId),
      created_at: Math.floor(Date.now() / 1000),
      model: body.model ?? "auto",
      body,
    };
    if (body.stream) {
      const routed = await call.stream(request);
      const stream = responseEventStream(
        { ...shell, model: routed.model },
        call.callId,
        routed.deltas,
        routed.result,
        call.streamFailed,
        call.abandon,
      );
      return sseResponse(stream, routed) as never;
    }
    const result = await call.whole(request);
    return c.json(toResponse(shell, call.callId, result), 200, llmAnswerHeaders(result));
  });
  // Not in the OpenAPI document: there are no such operations, only these answers to every method.
  for (const [path, detail] of Object.entries(RESPONSES_NOT_OFFERED)) {
    app.all(`/api/v1/llm/responses/${path}`, () => {
      throw new ApiError("NOT_FOUND", detail);
    });
  }
  app.all("/api/v1/llm/responses/*", () => {
    throw new ApiError("NOT_FOUND", RESPONSES_NOT_STORED);
  });
}
