import OpenAI from "openai";
import { zodFunction, zodResponseFormat } from "openai/helpers/zod";
import { afterEach, describe, expect, it, vi } from "vitest";
import { z } from "zod";
import { fakeUpstreams, sdkAgainstApp, workspaceWith } from "../support/llm.ts";

/**
 * The openai SDK's higher-level helpers (parse, stream, runTools) through POST /api/v1/llm/chat/completions,
 * with the chain on fake OpenAI and Anthropic upstreams: what the SDK makes of our answers must be what it
 * makes of OpenAI's.
 */

afterEach(() => vi.restoreAllMocks());

const OPENAI = "openai.test";
const ANTHROPIC = "anthropic.test";

/** The SDK against the app, with OpenAI and Anthropic configured (at the fake upstreams). */
const sdk = sdkAgainstApp;

const openAiChain = (model: string) => workspaceWith({ strategy: "fallback", chain: [{ provider: "openai", model }] });
const claudeChain = (model = "claude-3-5-haiku-latest") =>
  workspaceWith({ strategy: "fallback", chain: [{ provider: "anthropic", model }] });

const sse = (events: unknown[], done = true) =>
  new Response(
    events.map((event) => `data: ${JSON.stringify(event)}\n\n`).join("") + (done ? "data: [DONE]\n\n" : ""),
    { headers: { "Content-Type": "text/event-stream" } },
  );

const anthropicSse = (events: { type: string; [key: string]: unknown }[]) =>
  new Response(events.map((event) => `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`).join(""), {
    headers: { "Content-Type": "text/event-stream" },
  });

const Weather = z.object({ city: z.string(), celsius: z.number() });
/** A structured-output request for Weather, as the tests' callers send it. */
const weatherRequest = {
  model: "auto",
  messages: [{ role: "user" as const, content: "weather?" }],
  response_format: zodResponseFormat(Weather, "weather"),
};
const usage = { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 };

function openAiAnswer(message: Record<string, unknown>, finish_reason = "stop") {
  return Response.json({
    id: "chatcmpl-up",
    object: "chat.completion",
    created: 1,
    model: "gpt-4o-mini",
    choices: [{ index: 0, message: { role: "assistant", refusal: null, ...message }, finish_reason, logprobs: null }],
    usage,
  });
}

function openAiChunks(deltas: Record<string, unknown>[], finish_reason = "stop") {
  const base = { id: "chatcmpl-up", object: "chat.completion.chunk", created: 1, model: "gpt-4o-mini" };
  return sse([
    { ...base, choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }] },
    ...deltas.map((delta) => ({ ...base, choices: [{ index: 0, delta, finish_reason: null }] })),
    { ...base, choices: [{ index: 0, delta: {}, finish_reason }] },
    { ...base, choices: [], usage },
  ]);
}

describe("parse() and stream() with zodResponseFormat", () => {
  it("OpenAI: parse() answers the parsed object, with refusal null as OpenAI sends it", async () => {
    const workspace = await openAiChain("gpt-4o-mini");
    const fake = fakeUpstreams({ [OPENAI]: () => openAiAnswer({ content: '{"city":"Oslo","celsius":3}' }) });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const completion = await sdk(workspace.key).chat.completions.parse(weatherRequest);
    const message = completion.choices[0].message;
    expect(message.parsed).toEqual({ city: "Oslo", celsius: 3 });
    expect(message.refusal).toBeNull();
  });

  it("OpenAI: parse() answers a refusal as the message's refusal, parsed null", async () => {
    const workspace = await openAiChain("gpt-4o-mini");
    const fake = fakeUpstreams({ [OPENAI]: () => openAiAnswer({ content: null, refusal: "I can't help with that." }) });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const completion = await sdk(workspace.key).chat.completions.parse(weatherRequest);
    const message = completion.choices[0].message;
    expect(message.parsed).toBeNull();
    expect(message.refusal).toBe("I can't help with that.");
    expect(message.content).toBeNull();
  });

  it("a message sent back with tool_calls: [] reaches OpenAI without it, which OpenAI refuses", async () => {
    // Clients send an answer back as it was parsed, and some parse "no tool calls" as an empty list (the SDK's
    // own parse() did before openai-node 4.85); OpenAI answers such a message 400 "empty array".
    const sent: { messages: Record<string, unknown>[] }[] = [];
    const openAiLike = async (request: Request) => {
      const body = (await request.json()) as { messages: Record<string, unknown>[] };
      sent.push(body);
      const emptyList = body.messages.find(
        (message) => Array.isArray(message.tool_calls) && !message.tool_calls.length,
      );
      if (emptyList) {
        const message = "Invalid 'messages[1].tool_calls': empty array. Expected an array with minimum length 1.";
        return Response.json(
          { error: { message, type: "invalid_request_error", code: "empty_array" } },
          { status: 400 },
        );
      }
      return openAiAnswer({ content: "Oslo is 3 degrees." });
    };
    const workspace = await openAiChain("gpt-4o-mini");
    vi.spyOn(globalThis, "fetch").mockImplementation(fakeUpstreams({ [OPENAI]: openAiLike }).impl);
    const answered = await sdk(workspace.key).chat.completions.create({
      model: "auto",
      messages: [
        { role: "user", content: "weather?" },
        { role: "assistant", content: "Which city?", tool_calls: [] },
        { role: "user", content: "Oslo" },
      ],
    });
    expect(answered.choices[0].message.content).toBe("Oslo is 3 degrees.");
    expect(sent[0].messages[1]).toEqual({ role: "assistant", content: "Which city?" });
  });

  it("a conversation goes on after a refusal, the refusing message sent back as the SDK gave it", async () => {
    // OpenAI refuses an assistant message whose content is null with neither tool calls nor a refusal.
    const sent: { messages: Record<string, unknown>[] }[] = [];
    const openAiLike = async (request: Request) => {
      const body = (await request.json()) as { messages: Record<string, unknown>[] };
      sent.push(body);
      const empty = body.messages.find(
        (message) => message.role === "assistant" && message.content == null && !message.tool_calls && !message.refusal,
      );
      if (empty) {
        return Response.json(
          {
            error: {
              message: "Invalid value for 'content': expected a string, got null.",
              type: "invalid_request_error",
            },
          },
          { status: 400 },
        );
      }
      return body.messages.length === 1
        ? openAiAnswer({ content: null, refusal: "I can't help with that." })
        : openAiAnswer({ content: '{"city":"Oslo","celsius":3}' });
    };
    const workspace = await openAiChain("gpt-4o-mini");
    const fake = fakeUpstreams({ [OPENAI]: openAiLike });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const client = sdk(workspace.key);
    const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "weather?" }];
    const response_format = zodResponseFormat(Weather, "weather");
    const refused = await client.chat.completions.parse({ model: "auto", messages, response_format });
    messages.push(refused.choices[0].message, { role: "user", content: "Oslo's, then." });
    const answered = await client.chat.completions.parse({ model: "auto", messages, response_format });
    expect(answered.choices[0].message.parsed).toEqual({ city: "Oslo", celsius: 3 });
    expect(sent[1].messages[1]).toEqual({ role: "assistant", content: null, refusal: "I can't help with that." });

    // Anthropic has no refusal field: the refusal is the assistant turn's text, so the model sees what it said.
    const claude = await claudeChain();
    const anthropic = fakeUpstreams({
      [ANTHROPIC]: () =>
        Response.json({
          id: "msg",
          type: "message",
          role: "assistant",
          content: [{ type: "text", text: "ok" }],
          stop_reason: "end_turn",
          usage: { input_tokens: 10, output_tokens: 5 },
        }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(anthropic.impl);
    await sdk(claude.key).chat.completions.create({ model: "auto", messages });
    const turns = ((await anthropic.calls[ANTHROPIC][0].json()) as { messages: unknown[] }).messages;
    expect(turns[1]).toEqual({ role: "assistant", content: [{ type: "text", text: "I can't help with that." }] });
  });

  it("OpenAI: stream() parses as the JSON comes, and finalChatCompletion() has the finish reason and usage", async () => {
    const workspace = await openAiChain("gpt-4o-mini");
    const fake = fakeUpstreams({
      [OPENAI]: () => openAiChunks([{ content: '{"city":"Os' }, { content: 'lo","celsius":3}' }]),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const stream = sdk(workspace.key).chat.completions.stream({
      ...weatherRequest,
      stream_options: { include_usage: true },
    });
    const partials: unknown[] = [];
    stream.on("content.delta", (event) => partials.push(event.parsed));
    const final = await stream.finalChatCompletion();
    expect(partials).toEqual([{ city: "Os" }, { city: "Oslo", celsius: 3 }]);
    expect(final.choices[0].message.parsed).toEqual({ city: "Oslo", celsius: 3 });
    expect(final.choices[0].finish_reason).toBe("stop");
    expect(final.usage).toMatchObject({ prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 });
    expect(final.choices[0].message.refusal).toBeNull();
  });

  it("OpenAI: stream() answers a streamed refusal as the message's refusal", async () => {
    const workspace = await openAiChain("gpt-4o-mini");
    const fake = fakeUpstreams({
      [OPENAI]: () => openAiChunks([{ refusal: "I can't" }, { refusal: " help." }]),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const stream = sdk(workspace.key).chat.completions.stream(weatherRequest);
    const final = await stream.finalChatCompletion();
    expect(final.choices[0].message.refusal).toBe("I can't help.");
    expect(final.choices[0].message.parsed).toBeNull();
  });

  it("Anthropic (a forced answer tool): parse() and stream() answer the parsed object", async () => {
    const workspace = await claudeChain();
    const fake = fakeUpstreams({
      [ANTHROPIC]: async (request) => {
        const body = (await request.json()) as Record<string, any>;
        if (!body.stream) {
          return Response.json({
            id: "msg",
            type: "message",
            role: "assistant",
            content: [{ type: "tool_use", id: "toolu_1", name: "weather", input: { city: "Oslo", celsius: 3 } }],
            stop_reason: "tool_use",
            usage: { input_tokens: 10, output_tokens: 5 },
          });
        }
        return anthropicSse([
          { type: "message_start", message: { usage: { input_tokens: 10, output_tokens: 1 } } },
          {
            type: "content_block_start",
            index: 0,
            content_block: { type: "tool_use", id: "toolu_1", name: "weather" },
          },
          { type: "content_block_delta", index: 0, delta: { type: "input_json_delta", partial_json: '{"city":"Os' } },
          {
            type: "content_block_delta",
            index: 0,
            delta: { type: "input_json_delta", partial_json: 'lo","celsius":3}' },
          },
          { type: "content_block_stop", index: 0 },
          { type: "message_delta", delta: { stop_reason: "tool_use" }, usage: { output_tokens: 5 } },
          { type: "message_stop" },
        ]);
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const client = sdk(workspace.key);
    const whole = await client.chat.completions.parse(weatherRequest);
    expect(whole.choices[0].message.parsed).toEqual({ city: "Oslo", celsius: 3 });
    expect(whole.choices[0].message.refusal).toBeNull();
    const final = await client.chat.completions
      .stream({ ...weatherRequest, stream_options: { include_usage: true } })
      .finalChatCompletion();
    expect(final.choices[0].message.parsed).toEqual({ city: "Oslo", celsius: 3 });
    expect(final.usage).toMatchObject({ prompt_tokens: 10, completion_tokens: 5 });
  });
});

describe("runTools", () => {
  const tools = (seen: unknown[]) => [
    zodFunction({
      name: "get_weather",
      parameters: z.object({ city: z.string() }),
      function: (args: { city: string }) => {
        seen.push(args);
        return { city: args.city, celsius: 3 };
      },
    }),
  ];

  /** runTools(), whole then streamed: each calls the tool for Oslo, Rome and Lima, in order, and ends in "done". */
  async function expectThreeCitiesThenDone(key: string) {
    const cities = [{ city: "Oslo" }, { city: "Rome" }, { city: "Lima" }];
    const asked = { model: "auto", messages: [{ role: "user" as const, content: "weather?" }] };
    const seen: unknown[] = [];
    const runner = sdk(key).chat.completions.runTools({ ...asked, tools: tools(seen) });
    expect(await runner.finalContent()).toBe("done");
    expect(seen).toEqual(cities);
    const streamed: unknown[] = [];
    const streamRunner = sdk(key).chat.completions.runTools({
      ...asked,
      tools: tools(streamed),
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(await streamRunner.finalContent()).toBe("done");
    expect(streamed).toEqual(cities);
  }

  it("OpenAI: runTools() with a strict zodFunction, parallel calls over two rounds, whole and streamed", async () => {
    const workspace = await openAiChain("gpt-4o-mini");
    const fake = fakeUpstreams({
      [OPENAI]: async (request) => {
        const body = (await request.json()) as Record<string, any>;
        const round = body.messages.filter((m: any) => m.role === "tool").length;
        const calls =
          round === 0
            ? [
                { id: "call_a", type: "function", function: { name: "get_weather", arguments: '{"city":"Oslo"}' } },
                { id: "call_b", type: "function", function: { name: "get_weather", arguments: '{"city":"Rome"}' } },
              ]
            : round === 2
              ? [{ id: "call_c", type: "function", function: { name: "get_weather", arguments: '{"city":"Lima"}' } }]
              : null;
        if (!body.stream) {
          return calls
            ? openAiAnswer({ content: null, tool_calls: calls }, "tool_calls")
            : openAiAnswer({ content: "done" });
        }
        if (!calls) return openAiChunks([{ content: "do" }, { content: "ne" }]);
        return openAiChunks(
          calls.flatMap((call, index) => [
            {
              tool_calls: [
                { index, id: call.id, type: "function", function: { name: call.function.name, arguments: "" } },
              ],
            },
            { tool_calls: [{ index, function: { arguments: call.function.arguments } }] },
          ]),
          "tool_calls",
        );
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    await expectThreeCitiesThenDone(workspace.key);
  });

  it("Anthropic: runTools() with a strict zodFunction, parallel calls over two rounds, whole and streamed", async () => {
    const workspace = await claudeChain();
    const fake = fakeUpstreams({
      [ANTHROPIC]: async (request) => {
        const body = (await request.json()) as Record<string, any>;
        const results = body.messages.flatMap((m: any) => m.content.filter((b: any) => b.type === "tool_result"));
        const round = results.length;
        const calls =
          round === 0
            ? [
                { id: "toolu_a", input: { city: "Oslo" } },
                { id: "toolu_b", input: { city: "Rome" } },
              ]
            : round === 2
              ? [{ id: "toolu_c", input: { city: "Lima" } }]
              : null;
        if (!body.stream) {
          return Response.json({
            id: "msg",
            type: "message",
            role: "assistant",
            content: calls
              ? calls.map((call) => ({ type: "tool_use", id: call.id, name: "get_weather", input: call.input }))
              : [{ type: "text", text: "done" }],
            stop_reason: calls ? "tool_use" : "end_turn",
            usage: { input_tokens: 10, output_tokens: 5 },
          });
        }
        const blocks = calls
          ? calls.flatMap((call, index) => [
              {
                type: "content_block_start",
                index,
                content_block: { type: "tool_use", id: call.id, name: "get_weather", input: {} },
              },
              {
                type: "content_block_delta",
                index,
                delta: { type: "input_json_delta", partial_json: JSON.stringify(call.input) },
              },
              { type: "content_block_stop", index },
            ])
          : [
              { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
              { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "done" } },
              { type: "content_block_stop", index: 0 },
            ];
        return anthropicSse([
          { type: "message_start", message: { usage: { input_tokens: 10, output_tokens: 1 } } },
          ...blocks,
          {
            type: "message_delta",
            delta: { stop_reason: calls ? "tool_use" : "end_turn" },
            usage: { output_tokens: 5 },
          },
          { type: "message_stop" },
        ]);
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    await expectThreeCitiesThenDone(workspace.key);
  });
});

describe("settings OpenAI has and the chain may not", () => {
  it("refuses logprobs with a 422 the SDK reports on its param, rather than answering logprobs: null", async () => {
    const workspace = await openAiChain("gpt-4o-mini");
    const fake = fakeUpstreams({ [OPENAI]: () => openAiAnswer({ content: "hi" }) });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const refused = await sdk(workspace.key)
      .chat.completions.create({ model: "auto", messages: [{ role: "user", content: "hi" }], logprobs: true })
      .then(
        () => expect.unreachable("logprobs were answered without them"),
        (error) => error,
      );
    expect(refused).toBeInstanceOf(OpenAI.UnprocessableEntityError);
    expect(refused).toMatchObject({ type: "invalid_request_error", param: "logprobs" });
    expect(refused.message).toMatch(/log probabilities/);
    expect(fake.count(OPENAI)).toBe(0);
    // false, as some clients send it, asks for nothing.
    const answered = await sdk(workspace.key).chat.completions.create({
      model: "auto",
      messages: [{ role: "user", content: "hi" }],
      logprobs: false,
    });
    expect(answered.choices[0].message.content).toBe("hi");
  });

  it("refuses a logit_bias with a 422 on its param, rather than answering without the bias", async () => {
    const workspace = await openAiChain("gpt-4o-mini");
    const fake = fakeUpstreams({ [OPENAI]: () => openAiAnswer({ content: "hi" }) });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const messages = [{ role: "user" as const, content: "Name a fruit" }];
    // A bias that bans a word: dropped, the word could come back with no word why.
    const refused = await sdk(workspace.key)
      .chat.completions.create({ model: "auto", messages, logit_bias: { "19339": -100 } })
      .then(
        () => expect.unreachable("the bias was dropped"),
        (error) => error,
      );
    expect(refused).toBeInstanceOf(OpenAI.UnprocessableEntityError);
    expect(refused).toMatchObject({ type: "invalid_request_error", param: "logit_bias" });
    expect(refused.message).toMatch(/token biases are not offered/);
    expect(fake.count(OPENAI)).toBe(0);
    // An empty one biases nothing.
    const answered = await sdk(workspace.key).chat.completions.create({ model: "auto", messages, logit_bias: {} });
    expect(answered.choices[0].message.content).toBe("hi");
  });

  it("accepts OpenAI's fields that change no answer and sends them to no provider, not even OpenAI", async () => {
    const workspace = await openAiChain("gpt-4o-mini");
    const fake = fakeUpstreams({ [OPENAI]: () => openAiAnswer({ content: "hi" }) });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const ignored = {
      store: true,
      metadata: { team: "docs" },
      user: "user-1234",
      safety_identifier: "a1b2c3",
      prompt_cache_key: "docs-bot",
      service_tier: "flex" as const,
      prediction: { type: "content" as const, content: "hi" },
      verbosity: "low" as const,
    };
    const answered = await sdk(workspace.key).chat.completions.create({
      model: "auto",
      messages: [{ role: "user", content: "hi" }],
      // What asks for nothing beyond text: text alone, no functions.
      modalities: ["text"],
      functions: [],
      function_call: "none",
      ...ignored,
    });
    expect(answered.choices[0].message.content).toBe("hi");
    const sent = (await fake.calls[OPENAI][0].json()) as Record<string, unknown>;
    for (const field of Object.keys(ignored)) expect(sent, field).not.toHaveProperty(field);
  });
});
