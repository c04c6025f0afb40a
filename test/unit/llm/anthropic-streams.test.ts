import { describe, expect, it } from "vitest";
import { AnthropicAdapter } from "../../../src/llm/adapters/anthropic.ts";
import type { StreamEvent } from "../../../src/llm/provider.ts";

/** Anthropic's streams as its API (and gateways in front of it) send them, against what the adapter reads. */

const signal = new AbortController().signal;
const call = { model: "claude-3-5-haiku-latest", messages: [{ role: "user" as const, content: "go" }], signal };

function adapterAnswering(answer: () => Response): AnthropicAdapter {
  return new AnthropicAdapter({
    apiKey: "ak",
    baseUrl: "https://anthropic.test",
    fetch: (async () => answer()) as typeof fetch,
  });
}

const sseOf = (frames: Record<string, unknown>[]) =>
  new Response(frames.map((frame) => `event: ${frame.type}\ndata: ${JSON.stringify(frame)}\n\n`).join(""), {
    headers: { "Content-Type": "text/event-stream" },
  });

async function eventsOf(adapter: AnthropicAdapter): Promise<StreamEvent[]> {
  const events: StreamEvent[] = [];
  for await (const event of adapter.stream(call)) events.push(event);
  return events;
}

describe("Anthropic stream usage", () => {
  it("keeps message_start's prompt when message_delta's usage says input_tokens: null, as its SDK types allow", async () => {
    // MessageDeltaUsage: input_tokens, cache_creation_input_tokens and cache_read_input_tokens are `number | null`
    // (Anthropic's SDKs update them only when `!= null`); output_tokens is the cumulative count.
    const frames = [
      {
        type: "message_start",
        message: {
          usage: { input_tokens: 900, cache_creation_input_tokens: 0, cache_read_input_tokens: 100, output_tokens: 1 },
        },
      },
      { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Hello." } },
      { type: "content_block_stop", index: 0 },
      {
        type: "message_delta",
        delta: { stop_reason: "end_turn", stop_sequence: null },
        usage: {
          input_tokens: null,
          cache_creation_input_tokens: null,
          cache_read_input_tokens: null,
          output_tokens: 12,
        },
      },
      { type: "message_stop" },
    ];
    const events = await eventsOf(adapterAnswering(() => sseOf(frames)));
    expect(events.at(-1)).toEqual({
      type: "done",
      result: {
        message: { role: "assistant", content: "Hello." },
        finish_reason: "stop",
        usage: { prompt_tokens: 1_000, completion_tokens: 12, total_tokens: 1_012 },
      },
    });
  });

  it("takes message_delta's cumulative input counts when it gives them", async () => {
    const frames = [
      { type: "message_start", message: { usage: { input_tokens: 900, output_tokens: 1 } } },
      { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Hello." } },
      { type: "content_block_stop", index: 0 },
      {
        type: "message_delta",
        delta: { stop_reason: "end_turn", stop_sequence: null },
        usage: { input_tokens: 950, cache_creation_input_tokens: 0, cache_read_input_tokens: 50, output_tokens: 12 },
      },
      { type: "message_stop" },
    ];
    const events = await eventsOf(adapterAnswering(() => sseOf(frames)));
    expect(events.at(-1)).toMatchObject({
      type: "done",
      result: { usage: { prompt_tokens: 1_000, completion_tokens: 12, total_tokens: 1_012 } },
    });
  });
});

describe("an Anthropic stream answered whole, as JSON (a gateway in front of Anthropic)", () => {
  const whole = {
    id: "msg_1",
    type: "message",
    role: "assistant",
    content: [
      { type: "text", text: "Checking." },
      { type: "tool_use", id: "toolu_1", name: "weather", input: { city: "Oslo" } },
    ],
    stop_reason: "tool_use",
    usage: { input_tokens: 20, output_tokens: 30 },
  };

  it("tells the caller the answer in one piece before its end, as the OpenAI-compatible adapter does", async () => {
    const events = await eventsOf(adapterAnswering(() => Response.json(whole)));
    const toolCall = { id: "toolu_1", type: "function", function: { name: "weather", arguments: '{"city":"Oslo"}' } };
    // A caller's stream is made of the deltas alone: without one, it read an empty answer it was charged for.
    expect(events).toEqual([
      { type: "delta", content: "Checking.", tool_calls: [{ index: 0, ...toolCall }] },
      {
        type: "done",
        result: {
          message: { role: "assistant", content: "Checking.", tool_calls: [toolCall] },
          finish_reason: "tool_calls",
          usage: { prompt_tokens: 20, completion_tokens: 30, total_tokens: 50 },
        },
      },
    ]);
  });
});
