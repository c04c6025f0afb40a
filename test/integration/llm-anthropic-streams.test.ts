import { afterEach, describe, expect, it, vi } from "vitest";
import { anthropicMessage, fakeUpstreams, sdkAgainstApp, usageWhenWritten, workspaceWith } from "../support/llm.ts";

/** A chain of Claude streamed through POST /api/v1/llm/chat/completions with the openai SDK, as a user sees it. */

afterEach(() => vi.restoreAllMocks());

const ANTHROPIC = "anthropic.test";

const claudeChain = () =>
  workspaceWith({ strategy: "fallback", chain: [{ provider: "anthropic", model: "claude-3-5-haiku-latest" }] });

async function streamed(key: string) {
  const stream = await sdkAgainstApp(key).chat.completions.create({
    model: "auto",
    messages: [{ role: "user", content: "Say hello." }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let usage: Record<string, unknown> | undefined;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? "";
    if (chunk.usage) usage = chunk.usage as unknown as Record<string, unknown>;
  }
  return { text, usage };
}

describe("a streamed call to Claude", () => {
  it("is answered the text of a gateway that answers the stream whole, as JSON, not an empty answer", async () => {
    const workspace = await claudeChain();
    vi.spyOn(globalThis, "fetch").mockImplementation(
      fakeUpstreams({ [ANTHROPIC]: () => anthropicMessage("Hello there.") }).impl,
    );
    const { text, usage } = await streamed(workspace.key);
    expect(text).toBe("Hello there.");
    expect(usage).toMatchObject({ prompt_tokens: 1_200, completion_tokens: 350 });
  });

  it("is charged the prompt message_start told when message_delta's usage says input_tokens: null", async () => {
    const workspace = await claudeChain();
    const frames = [
      { type: "message_start", message: { usage: { input_tokens: 1_200, output_tokens: 1 } } },
      { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Hello there." } },
      { type: "content_block_stop", index: 0 },
      {
        type: "message_delta",
        delta: { stop_reason: "end_turn", stop_sequence: null },
        usage: {
          input_tokens: null,
          cache_creation_input_tokens: null,
          cache_read_input_tokens: null,
          output_tokens: 350,
        },
      },
      { type: "message_stop" },
    ];
    const sse = frames.map((frame) => `event: ${frame.type}\ndata: ${JSON.stringify(frame)}\n\n`).join("");
    vi.spyOn(globalThis, "fetch").mockImplementation(
      fakeUpstreams({ [ANTHROPIC]: () => new Response(sse, { headers: { "Content-Type": "text/event-stream" } }) })
        .impl,
    );
    const { text, usage } = await streamed(workspace.key);
    expect(text).toBe("Hello there.");
    expect(usage).toMatchObject({ prompt_tokens: 1_200, completion_tokens: 350, total_tokens: 1_550 });
    const shown = await usageWhenWritten(workspace);
    expect(shown.data).toHaveLength(1);
    expect(shown.data[0]).toMatchObject({ prompt_tokens: 1_200, completion_tokens: 350 });
  });
});
