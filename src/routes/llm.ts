import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { writesNoAudit } from "../audit/index.ts";
import { httpLlmCall, llmAnswerHeaders, llmCallResponses, sseResponse } from "../llm/http-call.ts";
import { completionId, completionStream, toChatRequest, toCompletion } from "../llm/openai-compat.ts";
import { ChatCompletionRequestSchema, ChatCompletionSchema } from "../llm/openai-schemas.ts";
import { requireScope } from "../middleware/auth.ts";
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

const chatRoute = createRoute({
  method: "post",
  path: "/api/v1/llm/chat/completions",
  operationId: "createChatCompletion",
  tags: ["LLM"],
  summary: "Create a chat completion (OpenAI-compatible)",
  description:
    "Routed by the workspace's chain with retries, fallback and circuit breakers; charged against its budgets. `stream: true` answers Server-Sent Events in OpenAI's chunk format, with a usage chunk when `stream_options.include_usage` is set. When every target fails, the problem's `failures` lists each one tried (provider, model, attempts, status, code, message), and `detail` says the same in words. The call's retries and failovers, and a whole answer, end by the timeout the client says it waits, `X-Stainless-Timeout` in seconds (OpenAI's SDKs send it; at most 900), less a second, else after 10 minutes (less a second), what OpenAI's SDKs wait by default. Errors are problem+json with an `error` member as well, OpenAI's error object (`message`, `type`, `code`, `param`), so OpenAI's SDKs report them as they report OpenAI's.",
  "x-audit-exempt":
    "A completion changes no configuration; each call is recorded once as a usage row (GET /api/v1/usage) with its request id.",
  middleware: [requireScope("tasks:write"), writesNoAudit] as const,
  request: {
    body: { required: true, content: { "application/json": { schema: ChatCompletionRequestSchema } } },
  },
  responses: llmCallResponses({
    description:
      "The completion, or with `stream: true` an SSE stream of `chat.completion.chunk` objects ending in `[DONE]`.",
    json: ChatCompletionSchema,
    sse: '`data: {chunk}` lines, then `data: [DONE]`; a stream that breaks after it began ends instead with `data: {"error": {"message", "type": "provider_error"}}` and no `[DONE]` (OpenAI\'s SDKs throw it).',
  }),
});

export function registerLlmRoutes(app: OpenAPIHono<HonoEnv>): void {
  app.openapi(chatRoute, async (c) => {
    const body = c.req.valid("json");
    const call = httpLlmCall(c, body.stream === true);
    const request = toChatRequest(body);
    const id = completionId(call.callId);
    if (body.stream) {
      const routed = await call.stream(request);
      const stream = completionStream(
        id,
        routed.model,
        routed.deltas,
        routed.result,
        body.stream_options?.include_usage === true,
        call.streamFailed,
        call.abandon,
      );
      return sseResponse(stream, routed) as never;
    }
    const result = await call.whole(request);
    return c.json(toCompletion(id, result), 200, llmAnswerHeaders(result));
  });
}
