import { describe, expect, it } from "vitest";
import { WorkersAiAdapter } from "../../../src/llm/adapters/workers-ai.ts";
import { classifyFailure } from "../../../src/llm/errors.ts";
import type { AdapterCall, StreamEvent } from "../../../src/llm/provider.ts";
import { ProviderError } from "../../../src/llm/provider.ts";

/**
 * The Workers AI adapter at the `AI` binding's interface, `run(model, inputs,
 * options)`. The binding itself only runs remotely (a Cloudflare account and
 * login), so these tests stand in for it with a runner that records what it was
 * given and answers in the shapes Workers AI's models answer.
 */

const signal = new AbortController().signal;

function recordingRunner(answer: (inputs: Record<string, unknown>) => unknown) {
  const runs: { model: string; inputs: Record<string, unknown>; options?: Record<string, unknown> }[] = [];
  return {
    runs,
    runner: {
      async run(model: string, inputs: Record<string, unknown>, options?: Record<string, unknown>) {
        runs.push({ model, inputs, options });
        return answer(inputs);
      },
    },
  };
}

function sse(chunks: unknown[]): ReadableStream<Uint8Array> {
  const text = [...chunks.map((chunk) => `data: ${JSON.stringify(chunk)}\n\n`), "data: [DONE]\n\n"].join("");
  return new Response(text).body!;
}

async function collect(events: AsyncIterable<StreamEvent>) {
  const seen: StreamEvent[] = [];
  for await (const event of events) seen.push(event);
  return seen;
}

const call: AdapterCall = {
  model: "@cf/meta/llama-3.1-8b-instruct",
  signal,
  messages: [
    { role: "user", content: "Read a.ts" },
    {
      role: "assistant",
      content: null,
      tool_calls: [{ id: "call_1", type: "function", function: { name: "read_file", arguments: '{"path":"a.ts"}' } }],
    },
    { role: "tool", tool_call_id: "call_1", content: "export {}" },
  ],
};

describe("Workers AI adapter", () => {
  it("passes the settings Workers AI takes, JSON mode with the schema itself, and the caller's signal", async () => {
    const { runs, runner } = recordingRunner(() => ({
      response: { name: "Alice" },
      usage: { prompt_tokens: 12, completion_tokens: 4 },
    }));
    const schema = { type: "object", properties: { name: { type: "string" } } };
    // Passed on under the same names.
    const taken = {
      max_tokens: 64,
      temperature: 0.2,
      top_p: 0.9,
      seed: 7,
      presence_penalty: 0.5,
      frequency_penalty: 0.25,
    };
    const result = await new WorkersAiAdapter(runner).complete({
      ...call,
      ...taken,
      stop: ["END"],
      response_format: { type: "json_schema", json_schema: { name: "person", schema } },
    });
    expect(runs[0].model).toBe("@cf/meta/llama-3.1-8b-instruct");
    expect(runs[0].inputs).toEqual({
      // The binding refuses content: null.
      messages: [call.messages[0], { ...call.messages[1], content: "" }, call.messages[2]],
      ...taken,
      response_format: { type: "json_schema", json_schema: schema },
    });
    expect(runs[0].options).toEqual({ signal });
    // An OpenAI refusal sent back (content null) is the turn's text, with no refusal field the binding does not know.
    await new WorkersAiAdapter(runner).complete({
      ...call,
      messages: [
        { role: "user", content: "Who is she?" },
        { role: "assistant", content: null, refusal: "I can't help with that." },
        { role: "user", content: "Her name, then." },
      ],
    });
    expect((runs[1].inputs.messages as unknown[])[1]).toEqual({
      role: "assistant",
      content: "I can't help with that.",
    });
    // JSON mode answers an object: the chat format carries it as JSON text.
    expect(result).toEqual({
      message: { role: "assistant", content: '{"name":"Alice"}' },
      finish_reason: "stop",
      usage: { prompt_tokens: 12, completion_tokens: 4, total_tokens: 16 },
    });
  });

  it("offers tools with the tool choice; a named tool is the only one offered, and required", async () => {
    const tools = ["read_file", "write_file"].map((name) => ({
      type: "function" as const,
      function: { name, parameters: { type: "object" } },
    }));
    const { runs, runner } = recordingRunner(() => ({ response: "ok" }));
    const adapter = new WorkersAiAdapter(runner);
    await adapter.complete({ ...call, tools, tool_choice: "none" });
    await adapter.complete({ ...call, tools, tool_choice: { name: "write_file" } });
    await adapter.complete({ ...call, tools });
    expect(runs.map((run) => [run.inputs.tool_choice, (run.inputs.tools as typeof tools).length])).toEqual([
      ["none", 2],
      ["required", 1],
      [undefined, 2],
    ]);
    expect((runs[1].inputs.tools as typeof tools)[0].function.name).toBe("write_file");
  });

  it("reads tool calls in Workers AI's flat shape and in OpenAI's, and estimates usage a model did not report", async () => {
    const flat = await new WorkersAiAdapter(
      recordingRunner(() => ({ response: null, tool_calls: [{ name: "read_file", arguments: { path: "b.ts" } }] }))
        .runner,
    ).complete(call);
    expect(flat.message).toEqual({
      role: "assistant",
      content: null,
      tool_calls: [
        {
          id: expect.stringMatching(/^call_[0-9a-f]{32}$/),
          type: "function",
          function: { name: "read_file", arguments: '{"path":"b.ts"}' },
        },
      ],
    });
    // Each call its own id, never the same from one turn to the next: Anthropic refuses a conversation with
    // repeated tool_use ids, so a fallover there would fail.
    const again = await new WorkersAiAdapter(
      recordingRunner(() => ({ response: null, tool_calls: [{ name: "read_file", arguments: { path: "b.ts" } }] }))
        .runner,
    ).complete(call);
    expect(again.message.tool_calls?.[0].id).not.toBe(flat.message.tool_calls?.[0].id);
    expect(flat.finish_reason).toBe("tool_calls");
    expect(flat.usage.prompt_tokens).toBeGreaterThan(0);
    expect(flat.usage.total_tokens).toBe(flat.usage.prompt_tokens + flat.usage.completion_tokens);
    // So the charge is marked estimated (usage_records.estimated), not taken for the provider's figures.
    expect(flat.usageEstimated).toBe(true);

    const openAiShaped = await new WorkersAiAdapter(
      recordingRunner(() => ({
        choices: [
          {
            message: {
              content: null,
              tool_calls: [
                { id: "chatcmpl-tool-1", type: "function", function: { name: "grep", arguments: '{"q":"x"}' } },
              ],
            },
          },
        ],
        usage: { prompt_tokens: 30, completion_tokens: 9 },
      })).runner,
    ).complete(call);
    expect(openAiShaped).toEqual({
      message: {
        role: "assistant",
        content: null,
        tool_calls: [{ id: "chatcmpl-tool-1", type: "function", function: { name: "grep", arguments: '{"q":"x"}' } }],
      },
      finish_reason: "tool_calls",
      usage: { prompt_tokens: 30, completion_tokens: 9, total_tokens: 39 },
    });
    const numeric = await new WorkersAiAdapter(recordingRunner(() => ({ response: 42 })).runner).complete(call);
    expect(numeric.message.content).toBe("42");
  });

  it("streams text in either shape, assembles streamed tool calls, and keeps the usage chunk", async () => {
    const { runs, runner } = recordingRunner(() =>
      sse([
        { response: "Hel" },
        { choices: [{ delta: { content: "lo" } }] },
        { tool_calls: [{ index: 0, id: "tc1", function: { name: "read_file", arguments: '{"pa' } }] },
        { tool_calls: [{ index: 0, function: { name: "read_file", arguments: 'th":"c.ts"}' } }] },
        { response: "", usage: { prompt_tokens: 20, completion_tokens: 6, total_tokens: 26 } },
      ]),
    );
    const events = await collect(new WorkersAiAdapter(runner).stream(call));
    expect(runs[0].inputs.stream).toBe(true);
    expect(events.slice(0, 4)).toEqual([
      { type: "delta", content: "Hel" },
      { type: "delta", content: "lo" },
      {
        type: "delta",
        tool_calls: [{ index: 0, id: "tc1", type: "function", function: { name: "read_file", arguments: '{"pa' } }],
      },
      // The name is not sent again: a client appending names would read "read_fileread_file".
      { type: "delta", tool_calls: [{ index: 0, function: { arguments: 'th":"c.ts"}' } }] },
    ]);
    expect(events[4]).toEqual({
      type: "done",
      result: {
        message: {
          role: "assistant",
          content: "Hello",
          tool_calls: [{ id: "tc1", type: "function", function: { name: "read_file", arguments: '{"path":"c.ts"}' } }],
        },
        finish_reason: "tool_calls",
        usage: { prompt_tokens: 20, completion_tokens: 6, total_tokens: 26 },
      },
    });
  });

  it("fails a stream that ends before its [DONE], which Workers AI ends every stream with, rather than pass it for whole", async () => {
    const text = `data: ${JSON.stringify({ response: "The answer is" })}\n\n`;
    const { runner } = recordingRunner(() => new Response(text).body!);
    await expect(
      collect(new WorkersAiAdapter(runner).stream({ ...call, messages: call.messages.slice(0, 1) })),
    ).rejects.toMatchObject({
      failure: "protocol",
      message: "the stream ended before its answer did",
    });
  });

  it("answers a streamed call in JSON mode whole, in one piece, since JSON mode does not stream", async () => {
    const { runs, runner } = recordingRunner(() => ({
      response: { ok: true },
      usage: { prompt_tokens: 5, completion_tokens: 3 },
    }));
    const events = await collect(
      new WorkersAiAdapter(runner).stream({ ...call, response_format: { type: "json_object" } }),
    );
    expect(runs[0].inputs).not.toHaveProperty("stream");
    expect(events).toEqual([
      { type: "delta", content: '{"ok":true}' },
      {
        type: "done",
        result: {
          message: { role: "assistant", content: '{"ok":true}' },
          finish_reason: "stop",
          usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 },
        },
      },
    ]);
  });

  it("tells an answer cut at its max_tokens as finish_reason length, whole and streamed, not as a whole answer", async () => {
    // OpenAI's shape says so itself.
    const openAiShaped = await new WorkersAiAdapter(
      recordingRunner(() => ({
        choices: [{ message: { content: "The first three steps are" }, finish_reason: "length" }],
        usage: { prompt_tokens: 30, completion_tokens: 6 },
      })).runner,
    ).complete({ ...call, max_tokens: 6 });
    expect(openAiShaped.finish_reason).toBe("length");
    // Workers AI's own shape has no finish reason: an answer that used every token it was allowed was cut there,
    // the binding's own 256 when no max_tokens was sent.
    const native = (completionTokens: number) =>
      new WorkersAiAdapter(
        recordingRunner(() => ({
          response: "The first three steps are",
          usage: { prompt_tokens: 30, completion_tokens: completionTokens },
        })).runner,
      );
    expect((await native(64).complete({ ...call, max_tokens: 64 })).finish_reason).toBe("length");
    expect((await native(256).complete(call)).finish_reason).toBe("length");
    expect((await native(63).complete({ ...call, max_tokens: 64 })).finish_reason).toBe("stop");
    expect((await native(200).complete(call)).finish_reason).toBe("stop");
    // A model whose own default is longer than 256 answered past it: not cut there.
    expect((await native(300).complete(call)).finish_reason).toBe("stop");
    const streamed = async (chunks: unknown[], max_tokens?: number) => {
      const events = await collect(
        new WorkersAiAdapter(recordingRunner(() => sse(chunks)).runner).stream({
          ...call,
          ...(max_tokens ? { max_tokens } : {}),
        }),
      );
      return (events.at(-1) as Extract<StreamEvent, { type: "done" }>).result.finish_reason;
    };
    expect(
      await streamed([
        { choices: [{ delta: { content: "The first" }, finish_reason: null }] },
        { choices: [{ delta: { content: " three" }, finish_reason: "length" }] },
        { choices: [], usage: { prompt_tokens: 30, completion_tokens: 2 } },
      ]),
    ).toBe("length");
    expect(
      await streamed(
        [{ response: "The first" }, { response: "", usage: { prompt_tokens: 30, completion_tokens: 2 } }],
        2,
      ),
    ).toBe("length");
    expect(
      await streamed(
        [{ response: "The first" }, { response: "", usage: { prompt_tokens: 30, completion_tokens: 2 } }],
        8,
      ),
    ).toBe("stop");
  });

  it("ends the answer at a stop sequence, which Workers AI's models are not sent, whole and streamed", async () => {
    const whole = await new WorkersAiAdapter(
      recordingRunner(() => ({
        response: "Step one.\nStep two.\nStep three.",
        usage: { prompt_tokens: 30, completion_tokens: 9 },
      })).runner,
    ).complete({ ...call, stop: ["\n"] });
    expect(whole.message.content).toBe("Step one.");
    expect(whole.finish_reason).toBe("stop");
    // A sequence split between chunks is found all the same; nothing after it is passed on, nor read.
    const { runner } = recordingRunner(() =>
      sse([{ response: "Answer: 42 EN" }, { response: "D and more" }, { response: " text" }]),
    );
    const events = await collect(new WorkersAiAdapter(runner).stream({ ...call, stop: ["END"] }));
    const deltas = events.flatMap((event) => (event.type === "delta" ? [event.content] : []));
    expect(deltas.join("")).toBe("Answer: 42 ");
    expect(events.at(-1)).toMatchObject({
      type: "done",
      result: { message: { role: "assistant", content: "Answer: 42 " }, finish_reason: "stop" },
    });
  });

  it("tells the router its stream is alive on chunks that carry nothing for the caller, such as a model's thinking", async () => {
    // The router cuts a stream that sends nothing for the attempt's timeout as stalled; a chunk of thinking
    // (Qwen3's reasoning_content, not passed on) restarts that clock, as it does for OpenAI-compatible servers.
    const { runner } = recordingRunner(() =>
      sse([
        { choices: [{ delta: { reasoning_content: "The user asks" } }] },
        { choices: [{ delta: { reasoning_content: " for a number." } }] },
        { response: "" },
        { choices: [{ delta: { content: "42" } }] },
      ]),
    );
    let progress = 0;
    const events = await collect(new WorkersAiAdapter(runner).stream({ ...call, onProgress: () => progress++ }));
    expect(events[0]).toEqual({ type: "delta", content: "42" });
    expect(progress).toBe(3);
  });

  it("counts a model's thinking in the usage it estimates, and tells the router of each piece as it comes", async () => {
    // 400 characters of thinking, about 100 tokens, beside an answer of one; the model reports no usage.
    const thinking = "Weigh the options. ".repeat(22).slice(0, 400);
    const { runner } = recordingRunner((inputs) =>
      inputs.stream
        ? sse([
            { choices: [{ delta: { reasoning_content: thinking.slice(0, 200) } }] },
            { choices: [{ delta: { reasoning_content: thinking.slice(200) } }] },
            { choices: [{ delta: { content: "42" } }] },
          ])
        : { choices: [{ message: { content: "42", reasoning_content: thinking }, finish_reason: "stop" }] },
    );
    const adapter = new WorkersAiAdapter(runner);
    const told: (number | undefined)[] = [];
    const events = await collect(adapter.stream({ ...call, onProgress: (tokens) => told.push(tokens) }));
    expect(told).toEqual([50, 50]);
    const done = events.at(-1);
    if (done?.type !== "done") throw new Error("the stream did not end");
    const whole = await adapter.complete(call);
    for (const result of [done.result, whole]) {
      expect(result.usageEstimated).toBe(true);
      expect(result.usage.completion_tokens).toBe(101);
      expect(result.usage.total_tokens).toBe(result.usage.prompt_tokens + 101);
    }
  });

  it("tells an account's spent daily allocation as a spent quota, which no retry mends", async () => {
    const failing = (message: string) =>
      new WorkersAiAdapter({
        run: async () => {
          throw new Error(message);
        },
      });
    // Documented as 3036; the binding has been seen to answer the same with 4006, which read as no code at all
    // (a connection failure: retried three times, and charged to the provider's breaker).
    const spent = "you have used up your daily free allocation of 10,000 neurons, please upgrade to Workers Paid";
    for (const code of ["3036", "4006"]) {
      const error = await failing(`${code}: ${spent}`)
        .complete(call)
        .catch((caught: unknown) => caught);
      expect(error).toMatchObject({ failure: "http", status: 429, code: "insufficient_quota" });
      expect(classifyFailure(error as ProviderError)).toMatchObject({ retryable: false, eventType: "quota_exceeded" });
    }
  });

  it("turns the binding's errors into provider errors the router can judge", async () => {
    const failing = (error: unknown) =>
      new WorkersAiAdapter({
        run: async () => {
          throw error;
        },
      });
    const busy = Object.assign(new Error("capacity"), { status: 429 });
    await expect(failing(busy).complete(call)).rejects.toMatchObject({ failure: "http", status: 429 });
    // Mostly the binding names its documented error code in the message, without a status.
    const outOfCapacity = new Error("InferenceUpstreamError: 3040: Capacity temporarily exceeded, please try again.");
    await expect(failing(outOfCapacity).complete(call)).rejects.toMatchObject({
      failure: "http",
      status: 429,
      code: "workers_ai_3040",
    });
    // Documented as a 400, but it says the model is missing: the 404 the router reads so (a chain's to mend).
    await expect(failing(new Error("5007: No such model @cf/x or task")).complete(call)).rejects.toMatchObject({
      status: 404,
      code: "workers_ai_5007",
    });
    await expect(failing(new TypeError("network lost")).complete(call)).rejects.toBeInstanceOf(ProviderError);
    const garbled = new WorkersAiAdapter(recordingRunner(() => new Response("data: {oops\n\n").body).runner);
    await expect(collect(garbled.stream(call))).rejects.toMatchObject({ failure: "protocol" });
    const notAStream = new WorkersAiAdapter(recordingRunner(() => ({ response: "whole" })).runner);
    await expect(collect(notAStream.stream(call))).rejects.toMatchObject({ failure: "protocol" });
  });
});
