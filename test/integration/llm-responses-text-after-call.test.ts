import type OpenAI from "openai";
import { afterEach, describe, expect, it, vi } from "vitest";
import { fakeUpstreams, openAiCompletion, sdkAgainstApp, workspaceWith } from "../support/llm.ts";

/**
 * A streamed answer whose text goes on after a tool call (Claude may write some) is stored as OpenAI streams it:
 * a message, the call, then a message of its own. Sent back (by `previous_response_id`, or as items), those are one
 * assistant turn: in chat terms one assistant message with the call, which its tool output must directly follow, as
 * OpenAI requires of chat requests.
 */

afterEach(() => vi.restoreAllMocks());

const anthropicSse = (events: { type: string; [key: string]: unknown }[]) =>
  new Response(events.map((event) => `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`).join(""), {
    headers: { "Content-Type": "text/event-stream" },
  });

/** Claude's answer: a sentence, a call, and more text after the call. */
function claudeTextCallText() {
  const text = (index: number, value: string) => [
    { type: "content_block_start", index, content_block: { type: "text", text: "" } },
    { type: "content_block_delta", index, delta: { type: "text_delta", text: value } },
    { type: "content_block_stop", index },
  ];
  return anthropicSse([
    { type: "message_start", message: { usage: { input_tokens: 10, output_tokens: 1 } } },
    ...text(0, "Reading it."),
    {
      type: "content_block_start",
      index: 1,
      content_block: { type: "tool_use", id: "toolu_a", name: "read_file", input: {} },
    },
    { type: "content_block_delta", index: 1, delta: { type: "input_json_delta", partial_json: '{"path":"a.txt"}' } },
    { type: "content_block_stop", index: 1 },
    ...text(2, " Back soon."),
    { type: "message_delta", delta: { stop_reason: "tool_use" }, usage: { output_tokens: 20 } },
    { type: "message_stop" },
  ]);
}

/** OpenAI's rule for a chat request: an assistant message's tool calls are answered by the tool messages right after it. */
function openAiRefusal(messages: Record<string, any>[]): string | undefined {
  for (const [index, message] of messages.entries()) {
    if (message.role !== "assistant" || !message.tool_calls?.length) continue;
    const answered = new Set<string>();
    for (const next of messages.slice(index + 1)) {
      if (next.role !== "tool") break;
      answered.add(next.tool_call_id);
    }
    const missing = message.tool_calls.filter((call: { id: string }) => !answered.has(call.id));
    if (missing.length > 0) {
      return `An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: ${missing.map((call: { id: string }) => call.id).join(", ")}`;
    }
  }
  return undefined;
}

describe("text after a tool call, sent back", () => {
  it("reaches OpenAI as one assistant message with the call, its tool output right after it", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "openai", model: "gpt-4o-mini" }],
    });
    const fake = fakeUpstreams({
      "anthropic.test": () => claudeTextCallText(),
      "openai.test": async (request) => {
        const { messages } = (await request.clone().json()) as { messages: Record<string, any>[] };
        const refusal = openAiRefusal(messages);
        if (refusal) {
          return Response.json(
            { error: { message: refusal, type: "invalid_request_error", param: "messages", code: null } },
            { status: 400 },
          );
        }
        return openAiCompletion("a.txt says hello");
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const sdk = sdkAgainstApp(workspace.key);
    const tools: OpenAI.Responses.FunctionTool[] = [
      { type: "function", name: "read_file", parameters: { type: "object" }, strict: false },
    ];
    const first = await sdk.responses
      .stream({ model: "anthropic:claude-3-5-haiku-latest", input: "Read a.txt", tools })
      .finalResponse();
    expect(first.output.map((item) => item.type)).toEqual(["message", "function_call", "message"]);
    const toolOutput = { type: "function_call_output" as const, call_id: "toolu_a", output: "hello" };

    // Continued by previous_response_id on the workspace's model, OpenAI's.
    const continued = await sdk.responses.create({
      previous_response_id: first.id,
      input: [toolOutput],
      tools,
    });
    expect(continued.output_text).toBe("a.txt says hello");
    const sent = (await fake.calls["openai.test"][0].clone().json()) as { messages: unknown[] };
    expect(sent.messages).toEqual([
      { role: "user", content: "Read a.txt" },
      {
        role: "assistant",
        content: "Reading it. Back soon.",
        tool_calls: [
          { id: "toolu_a", type: "function", function: { name: "read_file", arguments: '{"path":"a.txt"}' } },
        ],
      },
      { role: "tool", tool_call_id: "toolu_a", content: "hello" },
    ]);

    // Sent back as items, as the openai SDK's users and the AI SDK (its texts by item_reference) send them.
    const resent = await sdk.responses.create({
      input: [
        { role: "user", content: "Read a.txt" },
        ...(first.output as OpenAI.Responses.ResponseInputItem[]),
        toolOutput,
      ],
      tools,
    });
    expect(resent.output_text).toBe("a.txt says hello");
    const referenced = await sdk.responses.create({
      input: [
        { role: "user", content: "Read a.txt" },
        { type: "item_reference", id: first.output[0].id! },
        { type: "function_call", call_id: "toolu_a", name: "read_file", arguments: '{"path":"a.txt"}' },
        { type: "item_reference", id: first.output[2].id! },
        toolOutput,
      ],
      tools,
    });
    expect(referenced.output_text).toBe("a.txt says hello");
  });
});
