import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, stepCountIs, streamText, tool } from "ai";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app.ts";
import { ANTHROPIC_URL, BASE, fakeUpstreams, OPENAI_URL, workspaceWith } from "../support/llm.ts";

/**
 * The Vercel AI SDK's default OpenAI model (`createOpenAI({ baseURL, apiKey })(model)`, the Responses API), the
 * most common client of POST /api/v1/llm/responses, driving a tool loop against the app with Claude serving it:
 * Anthropic streams a tool's arguments as `input_json_delta`s of content blocks, which must reach the SDK as
 * the Responses API's function-call events.
 */

afterEach(() => vi.restoreAllMocks());

const ANTHROPIC = "anthropic.test";

/** The AI SDK against the app in this isolate, with Anthropic configured at the fake upstream; what it sent. */
function aiSdk(apiKey: string) {
  const sent: Record<string, any>[] = [];
  const providers = {
    OPENAI_API_KEY: "sk-test",
    OPENAI_BASE_URL: OPENAI_URL,
    ANTHROPIC_API_KEY: "ak-test",
    ANTHROPIC_BASE_URL: ANTHROPIC_URL,
  };
  const openai = createOpenAI({
    apiKey,
    baseURL: `${BASE}/api/v1/llm`,
    fetch: async (url, init) => {
      sent.push(JSON.parse(String(init?.body)));
      const request = new Request(String(url), init as RequestInit);
      return createApp().fetch(request, { ...env, ...providers }, createExecutionContext());
    },
  });
  return { model: openai("auto"), sent };
}

const anthropicSse = (events: { type: string; [key: string]: unknown }[]) =>
  new Response(events.map((event) => `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`).join(""), {
    headers: { "Content-Type": "text/event-stream" },
  });

/** Claude's first answer: a sentence, then two calls whose input arrives in pieces; its second, the answer. */
function claude(round: number) {
  const start = { type: "message_start", message: { usage: { input_tokens: 100, output_tokens: 1 } } };
  const text = (index: number, value: string) => [
    { type: "content_block_start", index, content_block: { type: "text", text: "" } },
    { type: "content_block_delta", index, delta: { type: "text_delta", text: value } },
    { type: "content_block_stop", index },
  ];
  const call = (index: number, id: string, pieces: string[]) => [
    { type: "content_block_start", index, content_block: { type: "tool_use", id, name: "weather", input: {} } },
    ...["", ...pieces].map((partial_json) => ({
      type: "content_block_delta",
      index,
      delta: { type: "input_json_delta", partial_json },
    })),
    { type: "content_block_stop", index },
  ];
  const end = (stop_reason: string) => [
    { type: "message_delta", delta: { stop_reason }, usage: { output_tokens: 40 } },
    { type: "message_stop" },
  ];
  return anthropicSse(
    round === 1
      ? [
          start,
          ...text(0, "Let me check."),
          ...call(1, "toolu_a", ['{"city":', '"Oslo"}']),
          ...call(2, "toolu_b", ['{"city":"Rome"}']),
          ...end("tool_use"),
        ]
      : [start, ...text(0, "Sunny in both."), ...end("end_turn")],
  );
}

const weather = tool({
  description: "The weather in a city",
  inputSchema: jsonSchema<{ city: string }>({
    type: "object",
    properties: { city: { type: "string" } },
    required: ["city"],
    additionalProperties: false,
  }),
  execute: async ({ city }) => ({ city, sky: "sunny" }),
});

describe("the AI SDK's default OpenAI model (the Responses API), served by Claude", () => {
  it("streams a tool loop: the sentence, both calls as they are parsed, their results sent back, the answer", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "anthropic", model: "claude-3-5-haiku-latest" }],
    });
    const fake = fakeUpstreams({ [ANTHROPIC]: (_request, round) => claude(round) });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const { model, sent } = aiSdk(workspace.key);
    const result = streamText({
      model,
      prompt: "Weather in Oslo and Rome?",
      tools: { weather },
      stopWhen: stepCountIs(3),
      // Not stored: the SDK sends the first answer's text itself rather than a reference to it.
      providerOptions: { openai: { store: false } },
      maxRetries: 0,
    });
    const calls: unknown[] = [];
    const parts: string[] = [];
    let argumentText = "";
    for await (const part of result.fullStream) {
      if (part.type === "error") throw part.error;
      parts.push(part.type);
      if (part.type === "tool-input-delta") argumentText += part.delta;
      if (part.type === "tool-call") calls.push(part.input);
    }
    expect(calls).toEqual([{ city: "Oslo" }, { city: "Rome" }]);
    // Each item done before the next begins, as OpenAI streams them: the first call is handed to the SDK (which
    // runs it) as soon as its input ends, not when the whole answer does.
    const firstStep = parts.slice(0, parts.indexOf("finish-step"));
    const told = firstStep.filter(
      (type) => type.startsWith("t") && !["tool-input-delta", "tool-result"].includes(type),
    );
    expect(told).toEqual([
      "text-start",
      "text-delta",
      "text-end",
      "tool-input-start",
      "tool-input-end",
      "tool-call",
      "tool-input-start",
      "tool-input-end",
      "tool-call",
    ]);
    expect(argumentText).toBe('{"city":"Oslo"}{"city":"Rome"}');
    expect(await result.text).toBe("Sunny in both.");
    const steps = await result.steps;
    expect(steps.map((step) => [step.finishReason, step.text])).toEqual([
      ["tool-calls", "Let me check."],
      ["stop", "Sunny in both."],
    ]);
    expect(await result.totalUsage).toMatchObject({ inputTokens: 200, outputTokens: 80 });

    // The second step sent the first answer back whole; Claude got it as its own turn and the tools' results.
    expect(sent[1].input.slice(1)).toEqual([
      { role: "assistant", content: "Let me check." },
      { type: "function_call", call_id: "toolu_a", name: "weather", arguments: '{"city":"Oslo"}' },
      { type: "function_call", call_id: "toolu_b", name: "weather", arguments: '{"city":"Rome"}' },
      { type: "function_call_output", call_id: "toolu_a", output: '{"city":"Oslo","sky":"sunny"}' },
      { type: "function_call_output", call_id: "toolu_b", output: '{"city":"Rome","sky":"sunny"}' },
    ]);
    const second = (await fake.calls[ANTHROPIC][1].clone().json()) as Record<string, any>;
    expect(second.messages.slice(1)).toEqual([
      {
        role: "assistant",
        content: [
          { type: "text", text: "Let me check." },
          { type: "tool_use", id: "toolu_a", name: "weather", input: { city: "Oslo" } },
          { type: "tool_use", id: "toolu_b", name: "weather", input: { city: "Rome" } },
        ],
      },
      {
        role: "user",
        content: [
          { type: "tool_result", tool_use_id: "toolu_a", content: '{"city":"Oslo","sky":"sunny"}' },
          { type: "tool_result", tool_use_id: "toolu_b", content: '{"city":"Rome","sky":"sunny"}' },
        ],
      },
    ]);
    // One usage row per step (written just after each answer).
    await vi.waitFor(
      async () => {
        const { results } = await env.DB.prepare("SELECT provider FROM usage_records WHERE workspace_id = ?")
          .bind(workspace.id)
          .all();
        expect(results).toEqual([{ provider: "anthropic" }, { provider: "anthropic" }]);
      },
      { timeout: 5_000, interval: 20 },
    );
  });

  it("with the SDK's defaults (store: true), a tool loop's next step refers to the answer's text, resolved", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "anthropic", model: "claude-3-5-haiku-latest" }],
    });
    const fake = fakeUpstreams({ [ANTHROPIC]: (_request, round) => claude(round) });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const { model, sent } = aiSdk(workspace.key);
    const result = await generateText({
      model,
      prompt: "Weather in Oslo and Rome?",
      tools: { weather },
      stopWhen: stepCountIs(3),
      maxRetries: 0,
    });
    expect(result.text).toBe("Sunny in both.");
    // The SDK's default sends the first answer's text as a reference to its stored item.
    expect(sent[1].input[1]).toEqual({ type: "item_reference", id: expect.stringMatching(/^msg_/) });
    const second = (await fake.calls[ANTHROPIC][1].clone().json()) as Record<string, any>;
    expect(second.messages[1]).toEqual({
      role: "assistant",
      content: [
        { type: "text", text: "Let me check." },
        { type: "tool_use", id: "toolu_a", name: "weather", input: { city: "Oslo" } },
        { type: "tool_use", id: "toolu_b", name: "weather", input: { city: "Rome" } },
      ],
    });
  });

  it("holds a two-turn conversation with the SDK's defaults: the first answer's text reaches the provider", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "anthropic", model: "claude-3-5-haiku-latest" }],
    });
    const answers = ["Oslo is in Norway.", "About 700,000."];
    const fake = fakeUpstreams({
      [ANTHROPIC]: (_request, round) =>
        anthropicSse([
          { type: "message_start", message: { usage: { input_tokens: 10, output_tokens: 1 } } },
          { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
          { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: answers[round - 1] } },
          { type: "content_block_stop", index: 0 },
          { type: "message_delta", delta: { stop_reason: "end_turn" }, usage: { output_tokens: 5 } },
          { type: "message_stop" },
        ]),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const { model, sent } = aiSdk(workspace.key);
    const question = { role: "user" as const, content: "Where is Oslo?" };
    const first = await generateText({ model, messages: [question], maxRetries: 0 });
    expect(first.text).toBe("Oslo is in Norway.");
    const second = await generateText({
      model,
      messages: [question, ...first.response.messages, { role: "user", content: "How many live there?" }],
      maxRetries: 0,
    });
    expect(second.text).toBe("About 700,000.");
    expect(sent[1].input[1]).toEqual({ type: "item_reference", id: expect.stringMatching(/^msg_/) });
    const upstream = (await fake.calls[ANTHROPIC][1].clone().json()) as { messages: unknown[] };
    const said = (role: string, text: string) => ({ role, content: [{ type: "text", text }] });
    expect(upstream.messages).toEqual([
      said("user", "Where is Oslo?"),
      said("assistant", "Oslo is in Norway."),
      said("user", "How many live there?"),
    ]);
  });
});
