import { describe, expect, it } from "vitest";
import { callerDeadlineMs } from "../../../src/llm/http-call.ts";
import { completionStream, toChatRequest, toCompletion } from "../../../src/llm/openai-compat.ts";
import { ChatCompletionRequestSchema } from "../../../src/llm/openai-schemas.ts";
import type { StreamEvent } from "../../../src/llm/provider.ts";
import type { ChatResult } from "../../../src/llm/types.ts";

/** The OpenAI request as the router reads it. */

const parse = (body: Record<string, unknown>) =>
  toChatRequest(ChatCompletionRequestSchema.parse({ messages: [{ role: "user", content: "hi" }], ...body }));

describe("toChatRequest", () => {
  it("keeps the settings that are set, in the router's terms, and drops nulls and empty lists", () => {
    expect(
      parse({
        messages: [
          { role: "developer", content: "Be brief." },
          {
            role: "user",
            content: [
              { type: "text", text: "Say " },
              { type: "text", text: "hi" },
            ],
          },
        ],
        max_tokens: 100,
        max_completion_tokens: 50,
        temperature: null,
        top_p: 0.5,
        stop: "END",
        seed: 3,
        frequency_penalty: null,
        tools: [{ type: "function", function: { name: "read_file" } }],
        tool_choice: { type: "function", function: { name: "read_file" } },
        response_format: { type: "json_object" },
        parallel_tool_calls: false,
        reasoning_effort: "low",
      }),
    ).toEqual({
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Say hi" },
      ],
      tools: [{ type: "function", function: { name: "read_file", parameters: { type: "object", properties: {} } } }],
      // max_completion_tokens is OpenAI's newer name and wins.
      max_tokens: 50,
      top_p: 0.5,
      stop: ["END"],
      seed: 3,
      tool_choice: { name: "read_file" },
      response_format: { type: "json_object" },
      parallel_tool_calls: false,
      reasoning_effort: "low",
    });
    expect(parse({ parallel_tool_calls: null, reasoning_effort: null })).toEqual({
      messages: [{ role: "user", content: "hi" }],
    });
    // A legacy function call, or an audio answer, would be dropped and leave the message empty: named instead.
    const legacy = ChatCompletionRequestSchema.safeParse({
      messages: [
        { role: "user", content: "hi" },
        { role: "assistant", content: null, function_call: { name: "f", arguments: "{}" }, audio: { id: "audio_1" } },
      ],
    });
    expect(legacy.error?.issues.map((issue) => issue.path.join("."))).toEqual([
      "messages.1.function_call",
      "messages.1.audio",
    ]);
    // Every effort the openai SDK's ReasoningEffort names (7.57: none … xhigh, max) is passed on.
    for (const effort of ["none", "minimal", "low", "medium", "high", "xhigh", "max"])
      expect(parse({ reasoning_effort: effort })).toMatchObject({ reasoning_effort: effort });
    // Clients that fill every field send `tools: null` for none, as for any other unset field.
    expect(parse({ tools: null, tool_choice: null })).toEqual({ messages: [{ role: "user", content: "hi" }] });
    expect(parse({ stop: [] })).not.toHaveProperty("stop");
    expect(parse({ tool_choice: "auto" })).toMatchObject({ tool_choice: "auto" });
  });
});

describe("toChatRequest's refusals", () => {
  it("keeps an assistant's refusal, given in its field or as content parts (OpenAI takes either)", () => {
    const turns = (assistant: Record<string, unknown>) =>
      parse({
        messages: [
          { role: "user", content: "Who is she?" },
          { role: "assistant", ...assistant },
          { role: "user", content: "Her name, then." },
        ],
      }).messages[1];
    const refused = { role: "assistant", content: null, refusal: "I can't help with that." };
    expect(turns({ content: null, refusal: "I can't help with that." })).toEqual(refused);
    expect(turns({ content: [{ type: "refusal", refusal: "I can't help with that." }] })).toEqual(refused);
    expect(
      turns({
        content: [
          { type: "text", text: "Partly: " },
          { type: "refusal", refusal: "no names." },
        ],
      }),
    ).toEqual({ role: "assistant", content: "Partly: ", refusal: "no names." });
    // Only an assistant refuses: a user's refusal part is an invalid body, as at OpenAI.
    const userRefusal = ChatCompletionRequestSchema.safeParse({
      messages: [{ role: "user", content: [{ type: "refusal", refusal: "no" }] }],
    });
    expect(userRefusal.error?.issues).toEqual([
      expect.objectContaining({
        path: ["messages", 0, "content"],
        message: "only an assistant's content may hold refusal parts",
      }),
    ]);
  });
});

describe("toChatRequest's tools", () => {
  it("keeps a tool's strict flag, which makes OpenAI hold the arguments to the schema (the SDK's zodFunction sets it)", () => {
    const parameters = { type: "object", properties: { path: { type: "string" } }, required: ["path"] };
    const tools = parse({
      tools: [
        { type: "function", function: { name: "read_file", parameters, strict: true } },
        { type: "function", function: { name: "list_files", strict: null } },
      ],
    }).tools;
    expect(tools).toEqual([
      { type: "function", function: { name: "read_file", parameters, strict: true } },
      { type: "function", function: { name: "list_files", parameters: { type: "object", properties: {} } } },
    ]);
  });
});

/** A router's result for a call, as a stream's end reports it. */
const result = (overrides: Partial<ChatResult> = {}): ChatResult => ({
  message: { role: "assistant", content: "" },
  finish_reason: "stop",
  usage: { prompt_tokens: 5, completion_tokens: 0, total_tokens: 5 },
  usage_estimated: false,
  cost_usd: 0,
  provider: "openai",
  model: "gpt-4o-mini",
  simulated: false,
  attempts: 1,
  ...overrides,
});

/** The chunks of the SSE body completionStream makes of these deltas, after checking it ends in [DONE]. */
async function chunksOf(deltas: StreamEvent[], final: ChatResult): Promise<Record<string, any>[]> {
  async function* events() {
    yield* deltas;
  }
  const body = completionStream("chatcmpl-1", final.model, events(), Promise.resolve(final), false, () => {});
  const frames = (await new Response(body).text()).split("\n\n").filter(Boolean);
  expect(frames.at(-1)).toBe("data: [DONE]");
  return frames.slice(0, -1).map((frame) => JSON.parse(frame.replace(/^data: /, "")) as Record<string, any>);
}

describe("completionStream", () => {
  it("opens with the assistant's role even when the answer has no delta, as OpenAI does", async () => {
    // An empty answer (a reasoning model out of tokens, a refusal to say anything): the openai SDK's stream
    // helper throws "missing role for choice 0" on a stream whose first chunk names no role.
    const chunks = await chunksOf([], result({ finish_reason: "length" }));
    expect(chunks.map((chunk) => chunk.choices[0])).toEqual([
      { index: 0, delta: { role: "assistant", content: "" }, finish_reason: null, logprobs: null },
      { index: 0, delta: {}, finish_reason: "length", logprobs: null },
    ]);
  });

  it("names the role once, in the first delta's chunk", async () => {
    const chunks = await chunksOf(
      [
        { type: "delta", content: "Hel" },
        { type: "delta", content: "lo" },
      ],
      result({ message: { role: "assistant", content: "Hello" } }),
    );
    expect(chunks.map((chunk) => chunk.choices[0].delta)).toEqual([
      { role: "assistant", content: "Hel" },
      { content: "lo" },
      {},
    ]);
  });

  it("stops the call at once when its client leaves while the provider is silent", async () => {
    // The router's generator is awaiting the provider's next event; its return() would wait for that event
    // (up to the attempt's timeout), so cancel() must abort the call itself. Here the provider stays silent
    // until the call is aborted, as a stalled upstream does until its fetch is.
    const call = new AbortController();
    const errors: unknown[] = [];
    async function* events(): AsyncGenerator<StreamEvent> {
      yield { type: "delta", content: "Hel" };
      await new Promise((_, reject) =>
        call.signal.addEventListener("abort", () => reject(call.signal.reason), { once: true }),
      );
    }
    const body = completionStream(
      "chatcmpl-1",
      "gpt-4o-mini",
      events(),
      new Promise<ChatResult>(() => {}),
      false,
      (error) => errors.push(error),
      () => call.abort(new Error("the client went away")),
    );
    const reader = body.getReader();
    expect((await reader.read()).done).toBe(false);
    const cancelled = reader.cancel().then(() => "cancelled");
    const stuck = new Promise((wake) => setTimeout(() => wake("still waiting for the provider"), 1_000));
    expect(await Promise.race([cancelled, stuck])).toBe("cancelled");
    expect(call.signal.aborted).toBe(true);
    // The call stopped for the client is no failure of the stream's.
    expect(errors).toEqual([]);
  });
});

describe("refusals", () => {
  const refused = result({
    message: { role: "assistant", content: null, refusal: "I can't help with that." },
    usage: { prompt_tokens: 9, completion_tokens: 4, total_tokens: 13 },
  });

  it("answers the provider's refusal in the message, whole and streamed, as OpenAI does", async () => {
    expect(toCompletion("chatcmpl-1", refused).choices[0].message).toEqual({
      role: "assistant",
      content: null,
      refusal: "I can't help with that.",
    });
    // An answer's refusal is null, not absent, as OpenAI's is: the SDK's types say `string | null`.
    expect(
      toCompletion("chatcmpl-2", result({ message: { role: "assistant", content: "Hi" } })).choices[0].message,
    ).toEqual({
      role: "assistant",
      content: "Hi",
      refusal: null,
    });
    const chunks = await chunksOf(
      [
        { type: "delta", refusal: "I can't " },
        { type: "delta", refusal: "help with that." },
      ],
      refused,
    );
    expect(chunks.map((chunk) => chunk.choices[0].delta)).toEqual([
      { role: "assistant", refusal: "I can't " },
      { refusal: "help with that." },
      {},
    ]);
  });
});

describe("x_mgx, the router's figures", () => {
  const timedOut = {
    usage: { prompt_tokens: 9, completion_tokens: 0, total_tokens: 9 },
    cost_usd: 0.00000135,
    provider: "openai",
    model: "gpt-4o-mini",
    simulated: false,
    error: { code: "timeout", message: "no answer within 60 s" },
  };
  const retried = result({ attempts: 2, cost_usd: 0.00001, timed_out_attempts: [timedOut] });
  const told = [
    {
      provider: "openai",
      model: "gpt-4o-mini",
      prompt_tokens: 9,
      completion_tokens: 0,
      cost_usd: 0.00000135,
      error: { code: "timeout", message: "no answer within 60 s" },
    },
  ];

  it("tell the attempts that timed out at a provider, charged apart from the answer, whole and streamed", async () => {
    expect(toCompletion("chatcmpl-1", retried).x_mgx).toEqual({
      provider: "openai",
      simulated: false,
      cost_usd: 0.00001,
      attempts: 2,
      usage_estimated: false,
      timed_out_attempts: told,
    });
    async function* none() {}
    const body = completionStream("chatcmpl-1", "gpt-4o-mini", none(), Promise.resolve(retried), true, () => {});
    const frames = (await new Response(body).text()).split("\n\n").filter(Boolean);
    const usageChunk = JSON.parse(frames.at(-2)!.replace(/^data: /, "")) as Record<string, any>;
    expect(usageChunk.x_mgx).toMatchObject({ attempts: 2, timed_out_attempts: told });
  });

  it("leave timed_out_attempts out when none timed out", () => {
    expect(toCompletion("chatcmpl-1", result()).x_mgx).not.toHaveProperty("timed_out_attempts");
  });
});

describe("callerDeadlineMs, from the timeout the client says it waits", () => {
  const nowMs = 1_000_000;
  it("is a second before the client's own timer fires, in seconds as OpenAI's SDKs send it (Python's as floats)", () => {
    expect(callerDeadlineMs("600", nowMs)).toBe(nowMs + 599_000);
    expect(callerDeadlineMs("600.0", nowMs)).toBe(nowMs + 599_000);
    expect(callerDeadlineMs(" 30 ", nowMs)).toBe(nowMs + 29_000);
  });
  it("is half a timeout shorter than two seconds, and at most 15 minutes however long the client waits", () => {
    expect(callerDeadlineMs("1", nowMs)).toBe(nowMs + 500);
    expect(callerDeadlineMs("86400", nowMs)).toBe(nowMs + 899_000);
  });
  it("is the 10 minutes OpenAI's SDKs wait by default, less a second, without a usable header", () => {
    for (const header of [undefined, "", "0", "-5", "soon", "Infinity", "NaN"]) {
      expect(callerDeadlineMs(header, nowMs), String(header)).toBe(nowMs + 599_000);
    }
  });
});
