import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import type { Context } from "hono";
import { writesNoAudit } from "../audit/index.ts";
import { API_PROBLEMS, jsonResponse, problemResponses } from "../lib/openapi.ts";
import { ApiError } from "../lib/problem.ts";
import { httpLlmCall, llmAnswerHeaders, llmCallResponses, sseResponse } from "../llm/http-call.ts";
import { responseId, toResponse } from "../llm/responses-compat.ts";
import { ResponseCreateRequestSchema, ResponseObjectSchema } from "../llm/responses-schemas.ts";
import { inputItemsPage, ResponsesStore, responsesTurn } from "../llm/responses-store.ts";
import {
  ResponseDeletedSchema,
  ResponseIdParamSchema,
  ResponseInputItemListSchema,
  ResponseInputItemsQuerySchema,
  ResponseRetrieveQuerySchema,
} from "../llm/responses-stored-schemas.ts";
import { responseEventStream } from "../llm/responses-stream.ts";
import { assertScope, requireScope } from "../middleware/auth.ts";
import type { HonoEnv } from "../types.ts";

/**
 * OpenAI's Responses API through the router as chat completions are (src/routes/llm.ts): the clients built for it
 * (the Vercel AI SDK's default `openai(model)`, the openai SDK's `responses.create()`, `responses.stream()`,
 * `retrieve()`, `delete()` and `inputItems.list()`, Codex-style agents) work with `baseURL` set to
 * `<origin>/api/v1/llm`. Responses are stored for 30 days unless `store: false` (src/llm/responses-store.ts), so a
 * conversation continues with `previous_response_id` or `item_reference` items, as at OpenAI.
 */

const responsesRoute = createRoute({
  method: "post",
  path: "/api/v1/llm/responses",
  operationId: "createResponse",
  tags: ["LLM"],
  summary: "Create a model response (OpenAI's Responses API)",
  description:
    "OpenAI's Responses API over the same router as chat completions: routed by the workspace's chain with retries, fallback and circuit breakers, charged against its budgets, one usage row per call. Stored for 30 days unless `store: false` (before the answer is sent, or in a stream before `response.completed`), so GET /api/v1/llm/responses/{id} reads it and a later request continues it: `previous_response_id` puts that response's conversation (its earlier inputs and outputs, not its `instructions`) before `input`, and an `item_reference` input item stands for a stored item; either not found is a 400, and either needs `tasks:read` as well, as reading the stored response does (403 otherwise). `conversation`, `prompt` and `background: true` are refused (422 naming the field). Only function tools are offered: OpenAI's hosted tools and input images or files are refused likewise. `stream: true` answers Server-Sent Events, OpenAI's semantic events (`response.created` … `response.completed`, or `response.incomplete` / `response.failed`), each with its `sequence_number`. The call ends by the timeout the client says it waits (`X-Stainless-Timeout`, as for chat completions). Errors are problem+json with an `error` member as well, OpenAI's error object (`message`, `type`, `code`, `param`), so OpenAI's SDKs report them as they report OpenAI's.",
  "x-audit-exempt":
    "A response changes no configuration; each call is recorded once as a usage row (GET /api/v1/usage) with its request id, and the response itself is the workspace's data (kept 30 days), not a setting.",
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

const STORED_RESPONSE_PROBLEMS = { ...API_PROBLEMS, ...problemResponses("NOT_FOUND", "VALIDATION_FAILED") };
const NOT_STORED_HERE =
  "Stored responses are kept 30 days; one created with `store: false`, deleted, or another workspace's is not found.";

const getResponseRoute = createRoute({
  method: "get",
  path: "/api/v1/llm/responses/{id}",
  operationId: "getResponse",
  tags: ["LLM"],
  summary: "Read a stored response",
  description: `The response object as it was answered (its \`output\`, \`usage\` and \`x_mgx\`). ${NOT_STORED_HERE}`,
  middleware: [requireScope("tasks:read")] as const,
  request: { params: ResponseIdParamSchema, query: ResponseRetrieveQuerySchema },
  responses: {
    200: jsonResponse("The stored response.", ResponseObjectSchema),
    ...STORED_RESPONSE_PROBLEMS,
  },
});

const deleteResponseRoute = createRoute({
  method: "delete",
  path: "/api/v1/llm/responses/{id}",
  operationId: "deleteResponse",
  tags: ["LLM"],
  summary: "Delete a stored response",
  description: `Deleted at once: it can no longer be read, continued with \`previous_response_id\` (nor can the responses that continued it), or referred to by its items' ids. ${NOT_STORED_HERE}`,
  "x-audit-exempt":
    "A stored response is the workspace's data, as its usage rows are, not configuration: deleting one is no change to audit.",
  middleware: [requireScope("tasks:write"), writesNoAudit] as const,
  request: { params: ResponseIdParamSchema },
  responses: {
    200: jsonResponse("Deleted.", ResponseDeletedSchema),
    ...STORED_RESPONSE_PROBLEMS,
  },
});

const listInputItemsRoute = createRoute({
  method: "get",
  path: "/api/v1/llm/responses/{id}/input_items",
  operationId: "listResponseInputItems",
  tags: ["LLM"],
  summary: "List a stored response's input items",
  description: `Its own input items (item references resolved), each with its id, as OpenAI lists them: \`order\` \`desc\` by default, \`after\` an item's id. ${NOT_STORED_HERE}`,
  middleware: [requireScope("tasks:read")] as const,
  request: { params: ResponseIdParamSchema, query: ResponseInputItemsQuerySchema },
  responses: {
    200: jsonResponse("A page of input items.", ResponseInputItemListSchema),
    ...STORED_RESPONSE_PROBLEMS,
    ...problemResponses("BAD_REQUEST"),
  },
});

/** The openai SDK's other calls under /responses (`responses.inputTokens.count()`, `responses.compact()`). */
const RESPONSES_NOT_OFFERED = {
  input_tokens:
    "Counting input tokens is not offered here: POST /api/v1/llm/responses answers with `usage.input_tokens`, and each provider counts its own.",
  compact:
    "Compacting a conversation is not offered here: send the conversation as `input`, shortened as you see fit (a stored response's conversation is sent whole with `previous_response_id`).",
} as const;

/** Whether the request puts stored responses' items before its own: `previous_response_id`, an `item_reference`. */
function continuesStored(body: { previous_response_id?: string | null; input?: unknown }): boolean {
  if (body.previous_response_id) return true;
  return (
    Array.isArray(body.input) &&
    body.input.some((item) => (item as { type?: unknown } | null)?.type === "item_reference")
  );
}

function storedResponses(c: Context<HonoEnv>): ResponsesStore {
  return new ResponsesStore(c.get("config").DB, c.get("workspaceId")!);
}

function responseNotFound(id: string): ApiError {
  // OpenAI's words, so its SDKs' NotFoundError reads as OpenAI's.
  return new ApiError("NOT_FOUND", `Response with id '${id}' not found.`);
}

export function registerLlmResponsesRoutes(app: OpenAPIHono<HonoEnv>): void {
  // Before GET /responses/{id}: these names are no response's id.
  for (const [path, detail] of Object.entries(RESPONSES_NOT_OFFERED)) {
    app.all(`/api/v1/llm/responses/${path}`, () => {
      throw new ApiError("NOT_FOUND", detail);
    });
  }
  // Not in the OpenAPI document: there is no such operation, only this answer (the openai SDK's `cancel()`).
  app.all("/api/v1/llm/responses/:id/cancel", () => {
    throw new ApiError(
      "BAD_REQUEST",
      "Only background responses can be cancelled, and background responses are not offered here: a response is answered in its request.",
    );
  });

  app.openapi(responsesRoute, async (c) => {
    const body = c.req.valid("json");
    // Continuing a stored conversation reads it (a model asked to repeat it tells it): as reading it does, tasks:read.
    if (continuesStored(body)) assertScope(c, "tasks:read");
    const call = httpLlmCall(c, body.stream === true);
    const turn = await responsesTurn(storedResponses(c), body, call.callId, c.get("logger"));
    const shell = {
      id: responseId(call.callId),
      created_at: Math.floor(Date.now() / 1000),
      model: body.model ?? "auto",
      body,
    };
    if (body.stream) {
      const routed = await call.stream(turn.request);
      const stream = responseEventStream(
        { ...shell, model: routed.model },
        call.callId,
        routed.deltas,
        routed.result,
        call.streamFailed,
        call.abandon,
        turn.keep,
      );
      return sseResponse(stream, routed) as never;
    }
    const result = await call.whole(turn.request);
    const response = await turn.keep(toResponse(shell, call.callId, result));
    return c.json(response, 200, llmAnswerHeaders(result));
  });

  app.openapi(getResponseRoute, async (c) => {
    const { id } = c.req.valid("param");
    const response = await storedResponses(c).get(id);
    if (!response) throw responseNotFound(id);
    return c.json(response, 200);
  });

  app.openapi(deleteResponseRoute, async (c) => {
    const { id } = c.req.valid("param");
    if (!(await storedResponses(c).delete(id))) throw responseNotFound(id);
    return c.json({ id, object: "response" as const, deleted: true as const }, 200);
  });

  app.openapi(listInputItemsRoute, async (c) => {
    const { id } = c.req.valid("param");
    const items = await storedResponses(c).inputItems(id);
    if (!items) throw responseNotFound(id);
    return c.json(inputItemsPage(items, c.req.valid("query")), 200);
  });
}
