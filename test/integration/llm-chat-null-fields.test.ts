import { afterEach, describe, expect, it, vi } from "vitest";
import { fakeUpstreams, sdkAgainstApp, workspaceWith } from "../support/llm.ts";

/**
 * POST /api/v1/llm/chat/completions takes null for an optional field of a message, a tool, a response format or
 * the stream options as it takes null for the request's own optional fields (`temperature: null`…): absent.
 * Clients send them so: openai-python's `message.model_dump()` (and LiteLLM's messages) give an assistant answer
 * back with `tool_calls`, `function_call` and `audio` null, and generated clients send every unset field as null.
 */

afterEach(() => vi.restoreAllMocks());

const OPENAI = "openai.test";

function openAiAnswer(content: string, stream: boolean) {
  if (stream) {
    const base = { id: "chatcmpl-up", object: "chat.completion.chunk", created: 1, model: "gpt-4o-mini" };
    const chunks = [
      { ...base, choices: [{ index: 0, delta: { role: "assistant", content }, finish_reason: null }] },
      { ...base, choices: [{ index: 0, delta: {}, finish_reason: "stop" }] },
    ];
    const body = `${chunks.map((chunk) => `data: ${JSON.stringify(chunk)}\n\n`).join("")}data: [DONE]\n\n`;
    return new Response(body, { headers: { "Content-Type": "text/event-stream" } });
  }
  return Response.json({
    id: "chatcmpl-up",
    object: "chat.completion",
    created: 1,
    model: "gpt-4o-mini",
    choices: [{ index: 0, message: { role: "assistant", content, refusal: null }, finish_reason: "stop" }],
    usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
  });
}

/** The chain on a fake OpenAI that answers every call, keeping the bodies it was sent. */
async function onFakeOpenAi() {
  const workspace = await workspaceWith({
    strategy: "fallback",
    chain: [{ provider: "openai", model: "gpt-4o-mini" }],
  });
  const sent: Record<string, any>[] = [];
  const fake = fakeUpstreams({
    [OPENAI]: async (request) => {
      const body = (await request.json()) as Record<string, any>;
      sent.push(body);
      return openAiAnswer("Oslo is 3 degrees.", body.stream === true);
    },
  });
  vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
  return { client: sdkAgainstApp(workspace.key), sent };
}

describe("null as absent in the nested fields of a chat completion request", () => {
  it("takes back an assistant answer as openai-python's model_dump() gives it: tool_calls, function_call, audio null", async () => {
    const { client, sent } = await onFakeOpenAi();
    // `client.chat.completions.create(...).choices[0].message.model_dump()` in Python, sent back as it came.
    const dumped = {
      content: "Which city?",
      refusal: null,
      role: "assistant",
      annotations: [],
      audio: null,
      function_call: null,
      tool_calls: null,
    };
    const answer = await client.chat.completions.create({
      model: "auto",
      messages: [{ role: "user", content: "weather?" }, dumped as never, { role: "user", content: "Oslo" }],
    });
    expect(answer.choices[0].message.content).toBe("Oslo is 3 degrees.");
    // The provider is sent the message without the nulls (OpenAI's own API takes them; other providers may not).
    expect(sent[0].messages[1]).toEqual({ role: "assistant", content: "Which city?" });
  });

  it("takes null for a message's name and tool_call_id, a tool's description and parameters, and the stream options", async () => {
    const { client, sent } = await onFakeOpenAi();
    const stream = await client.chat.completions.create({
      model: "auto",
      messages: [
        { role: "user", content: "weather?", name: null, tool_call_id: null } as never,
        { role: "assistant", content: null, tool_calls: [call], name: null } as never,
        { role: "tool", tool_call_id: "call_1", content: "3 degrees", name: null } as never,
      ],
      tools: [{ type: "function", function: { name: "weather", description: null, parameters: null } } as never],
      stream: true,
      stream_options: { include_usage: null } as never,
    });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
    expect(text).toBe("Oslo is 3 degrees.");
    expect(sent[0].messages).toEqual([
      { role: "user", content: "weather?" },
      { role: "assistant", content: null, tool_calls: [call] },
      { role: "tool", content: "3 degrees", tool_call_id: "call_1" },
    ]);
    // A tool without parameters takes none, as OpenAI reads it.
    expect(sent[0].tools).toEqual([
      { type: "function", function: { name: "weather", parameters: { type: "object", properties: {} } } },
    ]);
  });

  it("takes null for a JSON schema format's description and strict, and sends the provider neither", async () => {
    const { client, sent } = await onFakeOpenAi();
    const schema = { type: "object", properties: { city: { type: "string" } } };
    await client.chat.completions.create({
      model: "auto",
      messages: [{ role: "user", content: "weather?" }],
      response_format: {
        type: "json_schema",
        json_schema: { name: "weather", description: null, schema, strict: null } as never,
      },
    });
    expect(sent[0].response_format).toEqual({ type: "json_schema", json_schema: { name: "weather", schema } });
  });
});

const call = { id: "call_1", type: "function", function: { name: "weather", arguments: "{}" } };
