import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import type { StreamEvent } from "../../../src/llm/provider.ts";
import { ownInputItems, responsesToChatRequest, toResponse } from "../../../src/llm/responses-compat.ts";
import {
  type ResponseCreateRequest,
  ResponseCreateRequestSchema,
  type ResponsesInputItem,
} from "../../../src/llm/responses-schemas.ts";
import { responseEventStream } from "../../../src/llm/responses-stream.ts";
import type { ChatResult } from "../../../src/llm/types.ts";

/** The Responses API's request as the router reads it, and its answers, whole and as the SDK reads a stream. */

const parse = (body: Record<string, unknown>) => ResponseCreateRequestSchema.parse({ input: "hi", ...body });

const result = (overrides: Partial<ChatResult> = {}): ChatResult => ({
  message: { role: "assistant", content: "" },
  finish_reason: "stop",
  usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8, cached_prompt_tokens: 2, reasoning_tokens: 1 },
  usage_estimated: false,
  cost_usd: 0,
  provider: "openai",
  model: "gpt-4o-mini",
  simulated: false,
  attempts: 1,
  ...overrides,
});

const shell = (body: Record<string, unknown> = {}) => ({
  id: "resp_1",
  created_at: 1,
  model: "gpt-4o-mini",
  body: parse(body),
});

/** The events of a stream of these deltas, and the response the openai SDK's responses.stream() makes of them. */
async function streamed(deltas: StreamEvent[], final: ChatResult) {
  async function* events() {
    yield* deltas;
  }
  const body = responseEventStream(shell(), "c1", events(), Promise.resolve(final), () => {});
  const text = await new Response(body).text();
  const types = text
    .split("\n\n")
    .filter(Boolean)
    .map((frame) => JSON.parse(frame.split("\n")[1].slice("data: ".length)).type as string);
  const client = new OpenAI({
    apiKey: "k",
    baseURL: "http://edge.test",
    maxRetries: 0,
    fetch: async () => new Response(text, { headers: { "Content-Type": "text/event-stream" } }),
  });
  const response = await client.responses.stream({ model: "gpt-4o-mini", input: "hi" }).finalResponse();
  return { types, response };
}

/** The chat request of a request without stored items (its input is its whole conversation). */
function chatRequestOf(body: ResponseCreateRequest) {
  return responsesToChatRequest(body, ownInputItems(body.input as string | ResponsesInputItem[], "c1"));
}

describe("responsesToChatRequest", () => {
  it("maps instructions, messages, tools, format, reasoning effort and tool choice to the chat request", () => {
    const parameters = { type: "object", properties: { q: { type: "string" } } };
    expect(
      chatRequestOf(
        parse({
          model: "gpt-4o-mini",
          instructions: "Be brief.",
          input: [
            { type: "message", role: "developer", content: [{ type: "input_text", text: "Rules" }] },
            { role: "user", content: "Search" },
            { role: "assistant", id: "msg_1", content: [{ type: "output_text", text: "Searching" }] },
            { type: "function_call", id: "fc_1", call_id: "call_1", name: "search", arguments: '{"q":"a"}' },
            { type: "function_call", call_id: "call_2", name: "search", arguments: '{"q":"b"}' },
            { type: "reasoning", id: "rs_1", summary: [], encrypted_content: "…" },
            { type: "function_call_output", call_id: "call_1", output: "A" },
            { type: "function_call_output", call_id: "call_2", output: [{ type: "input_text", text: "B" }] },
          ],
          tools: [{ type: "function", name: "search", parameters, strict: true }],
          tool_choice: { type: "function", name: "search" },
          text: { format: { type: "json_object" } },
          reasoning: { effort: "low" },
          max_output_tokens: 64,
          parallel_tool_calls: false,
        }),
      ),
    ).toEqual({
      model: "gpt-4o-mini",
      messages: [
        { role: "system", content: "Be brief." },
        { role: "system", content: "Rules" },
        { role: "user", content: "Search" },
        {
          role: "assistant",
          content: "Searching",
          tool_calls: [
            { id: "call_1", type: "function", function: { name: "search", arguments: '{"q":"a"}' } },
            { id: "call_2", type: "function", function: { name: "search", arguments: '{"q":"b"}' } },
          ],
        },
        { role: "tool", tool_call_id: "call_1", content: "A" },
        { role: "tool", tool_call_id: "call_2", content: "B" },
      ],
      tools: [{ type: "function", function: { name: "search", parameters, strict: true } }],
      tool_choice: { name: "search" },
      response_format: { type: "json_object" },
      reasoning_effort: "low",
      max_tokens: 64,
      parallel_tool_calls: false,
    });
  });

  it("keeps an assistant's refusal, sent back as a content part", () => {
    const request = chatRequestOf(
      parse({ input: [{ role: "assistant", content: [{ type: "refusal", refusal: "No." }] }] }),
    );
    expect(request.messages).toEqual([{ role: "assistant", content: null, refusal: "No." }]);
  });
});

describe("toResponse", () => {
  it("tells usage in the Responses API's terms, cached and reasoning tokens included", () => {
    const response = toResponse(shell(), "c1", result({ message: { role: "assistant", content: "Hi" } }));
    expect(response.usage).toEqual({
      input_tokens: 5,
      input_tokens_details: { cached_tokens: 2 },
      output_tokens: 3,
      output_tokens_details: { reasoning_tokens: 1 },
      total_tokens: 8,
    });
    expect(response.output).toEqual([
      {
        type: "message",
        id: "msg_c1",
        status: "completed",
        role: "assistant",
        content: [{ type: "output_text", text: "Hi", annotations: [], logprobs: [] }],
      },
    ]);
  });

  it("is incomplete for a content filter, and answers a refusal as a refusal part", () => {
    const response = toResponse(
      shell(),
      "c1",
      result({ message: { role: "assistant", content: null, refusal: "No." }, finish_reason: "content_filter" }),
    );
    expect(response).toMatchObject({
      status: "incomplete",
      incomplete_details: { reason: "content_filter" },
      output: [{ type: "message", status: "incomplete", content: [{ type: "refusal", refusal: "No." }] }],
    });
    // Cut at its length, only the last item was cut, as its stream tells.
    const cut = toResponse(
      shell(),
      "c1",
      result({
        message: {
          role: "assistant",
          content: "Reading.",
          tool_calls: [{ id: "call_a", type: "function", function: { name: "f", arguments: '{"x":' } }],
        },
        finish_reason: "length",
      }),
    );
    expect(cut.output.map((item) => [item.type, item.status])).toEqual([
      ["message", "completed"],
      ["function_call", "incomplete"],
    ]);
  });
});

describe("responseEventStream, as the openai SDK reads it", () => {
  it("streams text then tool calls as a message item and function_call items", async () => {
    const { types, response } = await streamed(
      [
        { type: "delta", content: "Let me look" },
        {
          type: "delta",
          tool_calls: [{ index: 0, id: "call_a", type: "function", function: { name: "f", arguments: "" } }],
        },
        { type: "delta", tool_calls: [{ index: 0, function: { arguments: '{"x":' } }] },
        { type: "delta", tool_calls: [{ index: 0, function: { arguments: "1}" } }] },
      ],
      result({
        message: {
          role: "assistant",
          content: "Let me look",
          tool_calls: [{ id: "call_a", type: "function", function: { name: "f", arguments: '{"x":1}' } }],
        },
        finish_reason: "tool_calls",
      }),
    );
    // The message is done before the call is added, as OpenAI streams its items.
    expect(types).toEqual([
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.content_part.added",
      "response.output_text.delta",
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.output_item.added",
      "response.function_call_arguments.delta",
      "response.function_call_arguments.delta",
      "response.function_call_arguments.done",
      "response.output_item.done",
      "response.completed",
    ]);
    expect(response.output_text).toBe("Let me look");
    expect(response.output).toMatchObject([
      { type: "message", content: [{ type: "output_text", text: "Let me look" }] },
      { type: "function_call", id: "fc_c1_0", call_id: "call_a", name: "f", arguments: '{"x":1}' },
    ]);
  });

  it("streams text after a tool call as a message of its own, the first one being done", async () => {
    const { response } = await streamed(
      [
        { type: "delta", content: "Looking." },
        {
          type: "delta",
          tool_calls: [{ index: 0, id: "call_a", type: "function", function: { name: "f", arguments: "{}" } }],
        },
        { type: "delta", content: "Then more." },
      ],
      result({ finish_reason: "tool_calls" }),
    );
    expect(response.output).toMatchObject([
      { type: "message", id: "msg_c1", status: "completed", content: [{ text: "Looking." }] },
      { type: "function_call", id: "fc_c1_0", status: "completed" },
      { type: "message", id: "msg_c1_1", status: "completed", content: [{ text: "Then more." }] },
    ]);
    expect(response.output_text).toBe("Looking.Then more.");
  });

  it("streams a refusal as a refusal part, and an empty answer as an empty message", async () => {
    const refused = await streamed(
      [{ type: "delta", refusal: "I can't" }],
      result({ message: { role: "assistant", content: null, refusal: "I can't" } }),
    );
    expect(refused.types).toContain("response.refusal.delta");
    expect(refused.response.output).toMatchObject([
      { type: "message", content: [{ type: "refusal", refusal: "I can't" }] },
    ]);

    const empty = await streamed([], result());
    expect(empty.response.status).toBe("completed");
    expect(empty.response.output).toMatchObject([{ type: "message", content: [{ type: "output_text", text: "" }] }]);
  });

  it("ends response.incomplete for a content filter", async () => {
    const { types, response } = await streamed(
      [{ type: "delta", content: "Well" }],
      result({ message: { role: "assistant", content: "Well" }, finish_reason: "content_filter" }),
    );
    expect(types.at(-1)).toBe("response.incomplete");
    expect(response).toMatchObject({ status: "incomplete", incomplete_details: { reason: "content_filter" } });
  });
});

describe("responseEventStream, when the client leaves", () => {
  it("stops the call (onCancel) and the router's stream, and reports no failure", async () => {
    let returned = false;
    const deltas: AsyncIterable<StreamEvent> = {
      [Symbol.asyncIterator]: () => ({
        next: async () => ({ done: false, value: { type: "delta", content: "Hi" } }),
        return: async () => {
          returned = true;
          return { done: true, value: undefined };
        },
      }),
    };
    const failures: unknown[] = [];
    let cancelled = 0;
    const body = responseEventStream(
      shell(),
      "c1",
      deltas,
      new Promise<ChatResult>(() => {}),
      (error) => failures.push(error),
      () => cancelled++,
    );
    const reader = body.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first).toMatch(/^event: response.created\n/);
    await reader.cancel();
    expect(cancelled).toBe(1);
    expect(returned).toBe(true);
    expect(failures).toEqual([]);
  });
});
