import { describe, expect, it } from "vitest";
import { OpenAiCompatibleAdapter } from "../../../src/llm/adapters/openai.ts";
import type { StreamEvent } from "../../../src/llm/provider.ts";

/** OpenAI-compatible streams as servers send them, against what the adapter makes of them. */

const signal = new AbortController().signal;
const call = { model: "minimaxai/minimax-m2.7", messages: [{ role: "user" as const, content: "Read a.ts" }], signal };

function local(...chunks: unknown[]): OpenAiCompatibleAdapter {
  const body = [...chunks.map((chunk) => JSON.stringify(chunk)), "[DONE]"].map((data) => `data: ${data}\n\n`).join("");
  return new OpenAiCompatibleAdapter({
    name: "local",
    baseUrl: "https://integrate.api.nvidia.test/v1",
    fetch: (async () => new Response(body, { headers: { "Content-Type": "text/event-stream" } })) as typeof fetch,
  });
}

const toolChunk = (toolCalls: unknown[]) => ({
  choices: [{ index: 0, delta: { tool_calls: toolCalls }, finish_reason: null }],
});

async function eventsOf(adapter: OpenAiCompatibleAdapter): Promise<StreamEvent[]> {
  const events: StreamEvent[] = [];
  for await (const event of adapter.stream(call)) events.push(event);
  return events;
}

describe("streamed tool calls whose name comes again in every delta (MiniMax through NVIDIA NIM)", () => {
  it("names the call once, not read_fileread_fileread_file, in the answer and in the deltas passed on", async () => {
    const events = await eventsOf(
      local(
        toolChunk([{ index: 0, id: "call_a", type: "function", function: { name: "read_file", arguments: "" } }]),
        toolChunk([
          { index: 0, id: "call_a", type: "function", function: { name: "read_file", arguments: '{"path":' } },
        ]),
        toolChunk([{ index: 0, function: { name: "read_file", arguments: '"a.ts"}' } }]),
        toolChunk([{ index: 1, id: "call_b", type: "function", function: { name: "list_dir", arguments: "{}" } }]),
        toolChunk([{ index: 1, function: { name: "list_dir" } }]),
        {
          choices: [{ index: 0, delta: {}, finish_reason: "tool_calls" }],
          usage: { prompt_tokens: 40, completion_tokens: 12, total_tokens: 52 },
        },
      ),
    );
    const done = events.at(-1);
    expect(done?.type === "done" && done.result.message.tool_calls).toEqual([
      { id: "call_a", type: "function", function: { name: "read_file", arguments: '{"path":"a.ts"}' } },
      { id: "call_b", type: "function", function: { name: "list_dir", arguments: "{}" } },
    ]);
    // A client that joins the names it is sent (openai-python, LangChain's chunks) joins the same name once.
    const names = new Map<number, string>();
    for (const event of events) {
      if (event.type !== "delta") continue;
      for (const part of event.tool_calls ?? []) {
        names.set(part.index, (names.get(part.index) ?? "") + (part.function?.name ?? ""));
      }
    }
    expect([...names.entries()]).toEqual([
      [0, "read_file"],
      [1, "list_dir"],
    ]);
  });

  it("still joins a name a server sends in pieces", async () => {
    const events = await eventsOf(
      local(
        toolChunk([{ index: 0, id: "call_a", type: "function", function: { name: "read_", arguments: "" } }]),
        toolChunk([{ index: 0, function: { name: "file", arguments: "{}" } }]),
        { choices: [{ index: 0, delta: {}, finish_reason: "tool_calls" }] },
      ),
    );
    const done = events.at(-1);
    expect(done?.type === "done" && done.result.message.tool_calls?.[0].function.name).toBe("read_file");
  });
});
