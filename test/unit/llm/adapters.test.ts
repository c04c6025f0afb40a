import { describe, expect, it } from "vitest";
import { AnthropicAdapter } from "../../../src/llm/adapters/anthropic.ts";
import { toAnthropic } from "../../../src/llm/adapters/anthropic-request.ts";
import { OpenAiCompatibleAdapter } from "../../../src/llm/adapters/openai.ts";
import { SIMULATED_DEFAULTS, SimulatedAdapter, simulatedSettings } from "../../../src/llm/adapters/simulated.ts";
import { ProviderError } from "../../../src/llm/provider.ts";
import type { ResponseFormat } from "../../../src/llm/types.ts";

const signal = new AbortController().signal;

function recordingFetch(answer: () => Response) {
  const seen: { url: string; headers: Headers; body: Record<string, unknown> }[] = [];
  const fetchImpl = (async (input: RequestInfo | URL, init?: RequestInit) => {
    const request = new Request(input, init);
    seen.push({ url: request.url, headers: request.headers, body: (await request.json()) as Record<string, unknown> });
    return answer();
  }) as typeof fetch;
  return { fetchImpl, seen };
}

const completion = () =>
  Response.json({
    choices: [{ message: { role: "assistant", content: "ok" }, finish_reason: "stop" }],
    usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 },
  });

describe("OpenAI-compatible adapter", () => {
  it("calls Azure's deployment URL with api-version and the api-key header, without a model in the body", async () => {
    const { fetchImpl, seen } = recordingFetch(completion);
    const adapter = new OpenAiCompatibleAdapter({
      name: "azure",
      baseUrl: "https://contoso.openai.azure.com/",
      apiKey: "az-key",
      apiVersion: "2024-10-21",
      fetch: fetchImpl,
    });
    const result = await adapter.complete({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "hi" }],
      signal,
    });
    expect(seen[0].url).toBe(
      "https://contoso.openai.azure.com/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
    );
    expect(seen[0].headers.get("api-key")).toBe("az-key");
    expect(seen[0].headers.get("authorization")).toBeNull();
    expect(seen[0].body.model).toBeUndefined();
    expect(result.usage).toEqual({ prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 });
  });

  it("calls Azure's deployment URL from an endpoint given up to /openai, or as a deployment's whole target URI", async () => {
    // The portal shows a deployment's "Target URI" (…/openai/deployments/{name}/chat/completions?api-version=…), and
    // some guides give the endpoint up to /openai: either was called at …/openai/openai/deployments/… (a 404).
    const urlFor = async (baseUrl: string) => {
      const { fetchImpl, seen } = recordingFetch(completion);
      await new OpenAiCompatibleAdapter({ name: "azure", baseUrl, apiKey: "az-key", fetch: fetchImpl }).complete({
        model: "gpt-4o",
        messages: [{ role: "user", content: "hi" }],
        signal,
      });
      return seen[0].url;
    };
    const expected =
      "https://contoso.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";
    expect(await urlFor("https://contoso.openai.azure.com")).toBe(expected);
    expect(await urlFor("https://contoso.openai.azure.com/openai")).toBe(expected);
    expect(await urlFor("https://contoso.openai.azure.com/openai/")).toBe(expected);
    expect(
      await urlFor(
        "https://contoso.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2025-01-01-preview",
      ),
    ).toBe(expected);
    // A gateway's own path prefix (API Management) stays.
    expect(await urlFor("https://gw.azure-api.net/llm/")).toBe(
      "https://gw.azure-api.net/llm/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
    );
  });

  it("asks Azure for a stream's usage only in API versions that take stream_options (2024-08-01-preview on)", async () => {
    // Older versions (2024-06-01 GA, the previews before) refuse every stream that asks: 400 "Unrecognized request
    // argument supplied: stream_options". Their streams are charged an estimate instead.
    const streamOptions = async (apiVersion: string | undefined) => {
      const { fetchImpl, seen } = recordingFetch(
        () =>
          new Response(
            `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: "ok" }, finish_reason: "stop" }] })}\n\ndata: [DONE]\n\n`,
            { headers: { "Content-Type": "text/event-stream" } },
          ),
      );
      const adapter = new OpenAiCompatibleAdapter({
        name: "azure",
        baseUrl: "https://contoso.openai.azure.com",
        apiKey: "az-key",
        apiVersion,
        fetch: fetchImpl,
      });
      for await (const _event of adapter.stream({
        model: "gpt-4o",
        messages: [{ role: "user", content: "hi" }],
        signal,
      })) {
        // Reads to the end.
      }
      expect(seen[0].body.stream).toBe(true);
      return seen[0].body.stream_options;
    };
    expect(await streamOptions("2024-06-01")).toBeUndefined();
    expect(await streamOptions("2024-02-15-preview")).toBeUndefined();
    expect(await streamOptions("2024-07-01-preview")).toBeUndefined();
    expect(await streamOptions("2024-08-01-preview")).toEqual({ include_usage: true });
    expect(await streamOptions("2024-10-21")).toEqual({ include_usage: true });
    expect(await streamOptions("2025-04-01-preview")).toEqual({ include_usage: true });
    expect(await streamOptions("preview")).toEqual({ include_usage: true });
    expect(await streamOptions(undefined)).toEqual({ include_usage: true });
  });

  it("calls a local server by base URL without credentials, and reads the error code and Retry-After of a failure", async () => {
    const { fetchImpl, seen } = recordingFetch(() =>
      Response.json(
        { error: { code: "rate_limit_exceeded", message: "slow down" } },
        { status: 429, headers: { "retry-after-ms": "250" } },
      ),
    );
    const adapter = new OpenAiCompatibleAdapter({
      name: "local",
      baseUrl: "http://127.0.0.1:11434/v1",
      fetch: fetchImpl,
    });
    const error = await adapter
      .complete({ model: "llama3.1", messages: [{ role: "user", content: "hi" }], signal })
      .catch((e) => e);
    expect(seen[0].url).toBe("http://127.0.0.1:11434/v1/chat/completions");
    expect(seen[0].headers.get("authorization")).toBeNull();
    expect(error).toBeInstanceOf(ProviderError);
    expect(error).toMatchObject({ status: 429, code: "rate_limit_exceeded", retryAfterMs: 250 });
  });

  it("calls a local server given by its bare address at /v1, where Ollama, vLLM, LM Studio and llama.cpp serve chat completions", async () => {
    // Ollama's docs give its address as http://localhost:11434; its chat completions are under /v1, and
    // /chat/completions is a 404 there (and on vLLM). A base URL with a path is kept as given.
    const urlFor = async (baseUrl: string) => {
      const { fetchImpl, seen } = recordingFetch(completion);
      await new OpenAiCompatibleAdapter({ name: "local", baseUrl, fetch: fetchImpl }).complete({
        model: "llama3.1",
        messages: [{ role: "user", content: "hi" }],
        signal,
      });
      return seen[0].url;
    };
    expect(await urlFor("http://127.0.0.1:11434")).toBe("http://127.0.0.1:11434/v1/chat/completions");
    expect(await urlFor("http://127.0.0.1:11434/")).toBe("http://127.0.0.1:11434/v1/chat/completions");
    expect(await urlFor("http://127.0.0.1:8000/v1/")).toBe("http://127.0.0.1:8000/v1/chat/completions");
    expect(await urlFor("https://gpu.internal/ollama/v1")).toBe("https://gpu.internal/ollama/v1/chat/completions");
    expect(await urlFor("https://gpu.internal/api")).toBe("https://gpu.internal/api/chat/completions");
  });

  it("reads a server's error sent in a 200 answer or in the stream: its message, and its status when it gives one", async () => {
    const local = (answer: () => Response) =>
      new OpenAiCompatibleAdapter({
        name: "local",
        baseUrl: "http://127.0.0.1:8000/v1",
        fetch: recordingFetch(answer).fetchImpl,
      });
    const call = { model: "llama3.1", messages: [{ role: "user" as const, content: "hi" }], signal };
    const streamed = async (frame: unknown) => {
      const adapter = local(
        () => new Response(`data: ${JSON.stringify(frame)}\n\n`, { headers: { "Content-Type": "text/event-stream" } }),
      );
      try {
        for await (const _event of adapter.stream(call)) {
          // Reads to the end.
        }
      } catch (error) {
        return error;
      }
    };
    // vLLM's error frame: OpenAI's error object with the HTTP status as its code. A 400 is not retried.
    expect(
      await streamed({
        error: {
          object: "error",
          message: "This model's maximum context length is 4096 tokens",
          type: "BadRequestError",
          code: 400,
        },
      }),
    ).toMatchObject({
      failure: "http",
      status: 400,
      code: "BadRequestError",
      message: expect.stringContaining("maximum context length is 4096 tokens"),
    });
    // An error that is only a string.
    expect(await streamed({ error: "model runner has unexpectedly stopped" })).toMatchObject({
      status: 500,
      message: expect.stringContaining("model runner has unexpectedly stopped"),
    });
    // FastAPI's own refusal (llama-cpp-python): pydantic's issues, each where and what, not "Unprocessable Entity".
    const fastApi = await local(() =>
      Response.json(
        {
          detail: [
            { type: "extra_forbidden", loc: ["body", "stream_options"], msg: "Extra inputs are not permitted" },
            { type: "missing", loc: ["body", "model"], msg: "Field required" },
          ],
        },
        { status: 422, statusText: "Unprocessable Entity" },
      ),
    )
      .complete(call)
      .catch((error) => error);
    expect(fastApi).toMatchObject({
      status: 422,
      message: "provider answered 422: body.stream_options: Extra inputs are not permitted; body.model: Field required",
    });
    const plainDetail = await local(() => Response.json({ detail: "Not Found" }, { status: 404 }))
      .complete(call)
      .catch((error) => error);
    expect(plainDetail).toMatchObject({ status: 404, message: "provider answered 404: Not Found" });
    // A whole answer that is an error, with status 200: its message, not "the provider's answer lacks a message".
    const whole = await local(() => Response.json({ error: { message: "model 'llama9' not found", code: 404 } }))
      .complete(call)
      .catch((error) => error);
    expect(whole).toMatchObject({
      failure: "http",
      status: 404,
      message: expect.stringContaining("model 'llama9' not found"),
    });
  });

  describe("a server that reports no usage (some local ones never do, even asked)", () => {
    const local = (answer: () => Response) =>
      new OpenAiCompatibleAdapter({
        name: "local",
        baseUrl: "http://127.0.0.1:1234/v1",
        fetch: recordingFetch(answer).fetchImpl,
      });
    // "Refactor the parser." is 20 characters (5 tokens) plus 4 for the message; 40 answered characters are 10 tokens.
    const call = { model: "llama3.1", messages: [{ role: "user" as const, content: "Refactor the parser." }], signal };
    const estimated = { prompt_tokens: 9, completion_tokens: 10, total_tokens: 19 };
    const sse = (...frames: string[]) =>
      new Response(frames.map((frame) => `data: ${frame}\n\n`).join(""), {
        headers: { "Content-Type": "text/event-stream" },
      });
    const delta = (content: string, finish: string | null = null) =>
      JSON.stringify({ choices: [{ index: 0, delta: { content }, finish_reason: finish }] });

    it("answers a whole answer with its usage estimated and marked, rather than fail (and retry) it", async () => {
      const adapter = local(() =>
        Response.json({
          choices: [{ message: { role: "assistant", content: "x".repeat(40) }, finish_reason: "stop" }],
        }),
      );
      expect(await adapter.complete(call)).toEqual({
        message: { role: "assistant", content: "x".repeat(40) },
        finish_reason: "stop",
        usage: estimated,
        usageEstimated: true,
      });
    });

    it("ends a finished stream the same way (a finish reason, or [DONE] without one), but a stream cut before either is a failure", async () => {
      const finished = local(() => sse(delta("x".repeat(30)), delta("y".repeat(10), "stop"), "[DONE]"));
      const events = [];
      for await (const event of finished.stream(call)) events.push(event);
      expect(events.at(-1)).toEqual({
        type: "done",
        result: {
          message: { role: "assistant", content: "x".repeat(30) + "y".repeat(10) },
          finish_reason: "stop",
          usage: estimated,
          usageEstimated: true,
        },
      });

      // Some servers end with [DONE] and never give a finish reason (null throughout): [DONE] says the answer is whole.
      const unreasoned = local(() => sse(delta("x".repeat(30)), delta("y".repeat(10)), "[DONE]"));
      const unreasonedEvents = [];
      for await (const event of unreasoned.stream(call)) unreasonedEvents.push(event);
      expect(unreasonedEvents.at(-1)).toEqual(events.at(-1));

      const cut = local(() => sse(delta("x".repeat(30))));
      const drained = (async () => {
        for await (const _event of cut.stream(call)) {
          // Reads to the end.
        }
      })();
      await expect(drained).rejects.toMatchObject({
        failure: "protocol",
        message: "the stream ended before its answer did",
      });
    });
  });
});

describe("tool calls as local servers stream them", () => {
  const call = {
    model: "qwen2.5-coder:7b",
    messages: [{ role: "user" as const, content: "Write two files." }],
    signal,
  };
  const local = (...chunks: unknown[]) =>
    new OpenAiCompatibleAdapter({
      name: "local",
      baseUrl: "http://127.0.0.1:11434/v1",
      fetch: recordingFetch(
        () =>
          new Response(
            [...chunks.map((chunk) => JSON.stringify(chunk)), "[DONE]"].map((d) => `data: ${d}\n\n`).join(""),
            {
              headers: { "Content-Type": "text/event-stream" },
            },
          ),
      ).fetchImpl,
    });
  const toolChunk = (toolCalls: unknown[]) => ({
    choices: [{ index: 0, delta: { role: "assistant", content: "", tool_calls: toolCalls }, finish_reason: null }],
  });
  const finished = { choices: [{ index: 0, delta: {}, finish_reason: "tool_calls" }] };
  const whole = (id: string, name: string, args: string) => ({
    id,
    type: "function",
    function: { name, arguments: args },
  });
  const expected = [
    { id: "call_a", type: "function", function: { name: "file_write", arguments: '{"path":"hello.py"}' } },
    { id: "call_b", type: "function", function: { name: "file_write", arguments: '{"path":"world.py"}' } },
  ];

  async function drain(adapter: OpenAiCompatibleAdapter) {
    const events = [];
    for await (const event of adapter.stream(call)) events.push(event);
    const deltas = events.flatMap((event) => (event.type === "delta" ? (event.tool_calls ?? []) : []));
    const done = events.at(-1);
    return { deltas, message: done?.type === "done" ? done.result.message : undefined };
  }

  it("keeps apart the calls Ollama streams whole, each with index 0 (ollama#15457), and tells the caller their own indices", async () => {
    const { deltas, message } = await drain(
      local(
        toolChunk([{ index: 0, ...whole("call_a", "file_write", '{"path":"hello.py"}') }]),
        toolChunk([{ index: 0, ...whole("call_b", "file_write", '{"path":"world.py"}') }]),
        finished,
      ),
    );
    expect(message?.tool_calls).toEqual(expected);
    expect(deltas.map((delta) => [delta.index, delta.id])).toEqual([
      [0, "call_a"],
      [1, "call_b"],
    ]);
  });

  it("reads calls streamed without an index (Ollama before 0.4.7, ollama#7881), several in one delta", async () => {
    const { deltas, message } = await drain(
      local(
        toolChunk([
          whole("call_a", "file_write", '{"path":"hello.py"}'),
          whole("call_b", "file_write", '{"path":"world.py"}'),
        ]),
        finished,
      ),
    );
    expect(message?.tool_calls).toEqual(expected);
    expect(deltas.map((delta) => delta.index)).toEqual([0, 1]);
  });

  it("sends arguments given as an object on as their JSON text, and names a call sent without an id, whole and streamed", async () => {
    // Some servers send the arguments parsed, and no id: the caller JSON.parses the arguments, and must name the
    // call's id in its tool message (our endpoint refuses a tool call without one).
    const { deltas, message } = await drain(
      local(
        toolChunk([
          { index: 0, type: "function", function: { name: "file_write", arguments: { path: "hello.py" } } },
          { index: 1, type: "function", function: { name: "file_write", arguments: { path: "world.py" } } },
        ]),
        finished,
      ),
    );
    const calls = message?.tool_calls ?? [];
    expect(calls.map((toolCall) => toolCall.function.arguments)).toEqual([
      '{"path":"hello.py"}',
      '{"path":"world.py"}',
    ]);
    expect(calls.map((toolCall) => toolCall.id)).toEqual([
      expect.stringMatching(/^call_\w+$/),
      expect.stringMatching(/^call_\w+$/),
    ]);
    expect(calls[0].id).not.toBe(calls[1].id);
    expect(deltas.map((delta) => delta.id)).toEqual(calls.map((toolCall) => toolCall.id));

    const answer = await new OpenAiCompatibleAdapter({
      name: "local",
      baseUrl: "http://127.0.0.1:11434/v1",
      fetch: recordingFetch(() =>
        Response.json({
          choices: [
            {
              message: {
                role: "assistant",
                content: null,
                tool_calls: [{ type: "function", function: { name: "file_write", arguments: { path: "hello.py" } } }],
              },
              finish_reason: "tool_calls",
            },
          ],
        }),
      ).fetchImpl,
    }).complete(call);
    expect(answer.message.tool_calls).toEqual([
      {
        id: expect.stringMatching(/^call_\w+$/),
        type: "function",
        function: { name: "file_write", arguments: '{"path":"hello.py"}' },
      },
    ]);
    expect(Number.isFinite(answer.usage.completion_tokens)).toBe(true);
  });

  it("still joins the fragments of one call, with or without its id repeated", async () => {
    const { message } = await drain(
      local(
        toolChunk([{ index: 0, id: "call_a", type: "function", function: { name: "file_write", arguments: "" } }]),
        toolChunk([{ index: 0, function: { arguments: '{"path":' } }]),
        toolChunk([{ index: 0, id: "call_a", function: { arguments: '"hello.py"}' } }]),
        toolChunk([{ index: 1, id: "call_b", type: "function", function: { name: "file_write", arguments: "" } }]),
        toolChunk([{ index: 1, function: { arguments: '{"path":"world.py"}' } }]),
        finished,
      ),
    );
    expect(message?.tool_calls).toEqual(expected);
  });
});

describe("OpenAI's refusals", () => {
  const usage = { prompt_tokens: 9, completion_tokens: 4, total_tokens: 13 };
  const call = {
    model: "gpt-4o-mini",
    messages: [{ role: "user" as const, content: "How do I pick a lock?" }],
    signal,
  };

  it("passes a refusal on as the message's refusal, whole and streamed, instead of an empty answer", async () => {
    const whole = new OpenAiCompatibleAdapter({
      name: "openai",
      baseUrl: "https://api.test/v1",
      fetch: recordingFetch(() =>
        Response.json({
          choices: [
            {
              message: { role: "assistant", content: null, refusal: "I can't help with that." },
              finish_reason: "stop",
            },
          ],
          usage,
        }),
      ).fetchImpl,
    });
    expect((await whole.complete(call)).message).toEqual({
      role: "assistant",
      content: null,
      refusal: "I can't help with that.",
    });

    const chunk = (delta: Record<string, unknown>, finish: string | null = null) =>
      `data: ${JSON.stringify({ choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
    const body = [
      chunk({ role: "assistant", content: null, refusal: null }),
      chunk({ refusal: "I can't " }),
      chunk({ refusal: "help with that." }),
      chunk({}, "stop"),
      `data: ${JSON.stringify({ choices: [], usage })}\n\n`,
      "data: [DONE]\n\n",
    ].join("");
    const streaming = new OpenAiCompatibleAdapter({
      name: "openai",
      baseUrl: "https://api.test/v1",
      fetch: recordingFetch(() => new Response(body, { headers: { "Content-Type": "text/event-stream" } })).fetchImpl,
    });
    const events = [];
    for await (const event of streaming.stream(call)) events.push(event);
    expect(events).toEqual([
      { type: "delta", refusal: "I can't " },
      { type: "delta", refusal: "help with that." },
      {
        type: "done",
        result: {
          message: { role: "assistant", content: null, refusal: "I can't help with that." },
          finish_reason: "stop",
          usage,
        },
      },
    ]);
  });
});

describe("OpenAI-compatible adapter's settings", () => {
  it("passes OpenAI's generation settings on under their names, and a forced tool in OpenAI's shape", async () => {
    const { fetchImpl, seen } = recordingFetch(completion);
    const adapter = new OpenAiCompatibleAdapter({ name: "openai", baseUrl: "https://api.test/v1", fetch: fetchImpl });
    const tools = [{ type: "function" as const, function: { name: "read_file", parameters: { type: "object" } } }];
    const responseFormat = {
      type: "json_schema" as const,
      json_schema: { name: "answer", schema: { type: "object" }, strict: true },
    };
    const settings = {
      max_tokens: 50,
      top_p: 0.9,
      stop: ["END"],
      seed: 7,
      presence_penalty: 0.5,
      frequency_penalty: -0.5,
      response_format: responseFormat,
      parallel_tool_calls: false,
      // Not a reasoning model: not sent (it would refuse it).
      reasoning_effort: "low" as const,
    };
    const messages = [{ role: "user" as const, content: "hi" }];
    await adapter.complete({
      model: "gpt-4o-mini",
      messages,
      tools,
      tool_choice: { name: "read_file" },
      ...settings,
      signal,
    });
    const { max_tokens, reasoning_effort: _notSent, ...sameNamed } = settings;
    expect(seen[0].body).toEqual({
      model: "gpt-4o-mini",
      messages,
      tools,
      tool_choice: { type: "function", function: { name: "read_file" } },
      // OpenAI's current name for the limit (max_tokens is deprecated there).
      max_completion_tokens: max_tokens,
      ...sameNamed,
      stream: false,
    });
  });

  it("sends a reasoning model what it takes, and Azure and local servers the limit they know", async () => {
    const sampling = { temperature: 0.2, top_p: 0.9, presence_penalty: 0.5, frequency_penalty: 0.5, stop: ["END"] };
    const call = {
      messages: [{ role: "user" as const, content: "hi" }],
      max_tokens: 64,
      seed: 3,
      reasoning_effort: "high" as const,
      ...sampling,
      signal,
    };
    const sent = async (name: "openai" | "azure" | "local", model: string) => {
      const { fetchImpl, seen } = recordingFetch(completion);
      await new OpenAiCompatibleAdapter({ name, baseUrl: "https://api.test/v1", fetch: fetchImpl }).complete({
        ...call,
        model,
      });
      return seen[0].body;
    };
    // o-series and gpt-5 refuse the sampling settings, stop and max_tokens with a 400.
    for (const model of ["o3-mini", "o4-mini", "gpt-5"]) {
      const body = await sent("openai", model);
      expect(body).toMatchObject({ max_completion_tokens: 64, seed: 3, reasoning_effort: "high" });
      for (const refused of ["max_tokens", ...Object.keys(sampling)]) expect(body).not.toHaveProperty(refused);
    }
    expect(await sent("azure", "o3-mini")).toMatchObject({ max_completion_tokens: 64 });
    expect(await sent("openai", "gpt-5-chat-latest")).toMatchObject({ ...sampling, max_completion_tokens: 64 });
    // Older Azure API versions and local servers know only max_tokens.
    expect(await sent("azure", "gpt-4o")).toMatchObject({ ...sampling, max_tokens: 64 });
    const local = await sent("local", "o3-distilled");
    expect(local).toMatchObject({ ...sampling, max_tokens: 64 });
    expect(local).not.toHaveProperty("max_completion_tokens");
  });

  it("does not send the o-series parallel_tool_calls, which they refuse, and keeps a false by passing on one tool call", async () => {
    const tools = [
      { type: "function" as const, function: { name: "read_file", parameters: { type: "object" } } },
      { type: "function" as const, function: { name: "list_dir", parameters: { type: "object" } } },
    ];
    const twoCalls = [
      { id: "call_1", type: "function", function: { name: "read_file", arguments: '{"path":"a"}' } },
      { id: "call_2", type: "function", function: { name: "list_dir", arguments: "{}" } },
    ];
    const call = {
      messages: [{ role: "user" as const, content: "look around" }],
      tools,
      parallel_tool_calls: false,
      signal,
    };
    const whole = () =>
      Response.json({
        choices: [{ message: { role: "assistant", content: null, tool_calls: twoCalls }, finish_reason: "tool_calls" }],
        usage: { prompt_tokens: 9, completion_tokens: 20, total_tokens: 29 },
      });
    const complete = async (model: string) => {
      const { fetchImpl, seen } = recordingFetch(whole);
      const adapter = new OpenAiCompatibleAdapter({ name: "openai", baseUrl: "https://api.test/v1", fetch: fetchImpl });
      const result = await adapter.complete({ ...call, model });
      return { sent: seen[0].body, names: result.message.tool_calls?.map((toolCall) => toolCall.function.name) };
    };
    const o3 = await complete("o3");
    expect(o3.sent).not.toHaveProperty("parallel_tool_calls");
    expect(o3.names).toEqual(["read_file"]);
    // gpt-5 and the others take it, and are trusted to keep it.
    const gpt5 = await complete("gpt-5");
    expect(gpt5.sent).toMatchObject({ parallel_tool_calls: false });
    expect(gpt5.names).toEqual(["read_file", "list_dir"]);

    const frames = twoCalls.map(
      (toolCall, index) =>
        `data: ${JSON.stringify({ choices: [{ index: 0, delta: { tool_calls: [{ index, ...toolCall }] }, finish_reason: null }] })}\n\n`,
    );
    frames.push(`data: ${JSON.stringify({ choices: [{ index: 0, delta: {}, finish_reason: "tool_calls" }] })}\n\n`);
    const { fetchImpl, seen } = recordingFetch(
      () => new Response(`${frames.join("")}data: [DONE]\n\n`, { headers: { "Content-Type": "text/event-stream" } }),
    );
    const adapter = new OpenAiCompatibleAdapter({ name: "openai", baseUrl: "https://api.test/v1", fetch: fetchImpl });
    const events = [];
    for await (const event of adapter.stream({ ...call, model: "o4-mini" })) events.push(event);
    expect(seen[0].body).not.toHaveProperty("parallel_tool_calls");
    const streamedNames = events.flatMap((event) =>
      event.type === "delta" ? (event.tool_calls ?? []).map((piece) => piece.function?.name) : [],
    );
    expect(streamedNames).toEqual(["read_file"]);
    expect(events.at(-1)).toMatchObject({
      type: "done",
      result: { message: { tool_calls: [{ function: { name: "read_file" } }] }, finish_reason: "tool_calls" },
    });
  });

  it("ends a reasoning model's answer at the stop sequence it is not sent, whole and streamed", async () => {
    const answer = "The answer is 42.\nEND\nand then more";
    const adapter = (respond: () => Response) =>
      new OpenAiCompatibleAdapter({
        name: "openai",
        baseUrl: "https://api.test/v1",
        fetch: recordingFetch(respond).fetchImpl,
      });
    const call = { model: "o4-mini", messages: [{ role: "user" as const, content: "hi" }], stop: ["END"], signal };
    const whole = await adapter(() =>
      Response.json({
        choices: [{ message: { role: "assistant", content: answer }, finish_reason: "length" }],
        usage: { prompt_tokens: 3, completion_tokens: 12, total_tokens: 15 },
      }),
    ).complete(call);
    expect(whole).toMatchObject({ message: { content: "The answer is 42.\n" }, finish_reason: "stop" });

    const frames = ["The answer is 42.\nE", "N", "D\nand then", " more"].map(
      (content) => `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`,
    );
    // The model wrote on past the sequence, and bills all it wrote (its hidden reasoning too): the usage chunk.
    const usage = { prompt_tokens: 3, completion_tokens: 700, total_tokens: 703 };
    frames.push(`data: ${JSON.stringify({ choices: [], usage })}\n\n`);
    const events = [];
    const streamed = adapter(
      () => new Response(`${frames.join("")}data: [DONE]\n\n`, { headers: { "Content-Type": "text/event-stream" } }),
    );
    for await (const event of streamed.stream(call)) events.push(event);
    const text = events.map((event) => (event.type === "delta" ? (event.content ?? "") : "")).join("");
    expect(text).toBe("The answer is 42.\n");
    expect(events.at(-1)).toMatchObject({
      type: "done",
      result: { message: { content: "The answer is 42.\n" }, finish_reason: "stop", usage },
    });
    expect(events.at(-1)).not.toHaveProperty("result.usageEstimated");
    // gpt-4o is sent the sequence: its answer is passed on as it came.
    const other = await adapter(() =>
      Response.json({ choices: [{ message: { role: "assistant", content: answer }, finish_reason: "stop" }] }),
    ).complete({ ...call, model: "gpt-4o" });
    expect(other.message.content).toBe(answer);
  });
});

describe("Anthropic adapter", () => {
  /** An extraction call: a system prompt and the text to extract from. */
  const extraction = (text: string) => ({
    model: "claude-3-5-haiku-latest",
    signal,
    messages: [
      { role: "system" as const, content: "You extract data." },
      { role: "user" as const, content: text },
    ],
  });

  it("maps stop, top_p and tool_choice to Anthropic's terms, and asks for JSON in the system prompt", () => {
    const tools = [{ type: "function" as const, function: { name: "read_file", parameters: { type: "object" } } }];
    const call = {
      ...extraction("Alice, 30"),
      tools,
      top_p: 0.8,
      stop: ["END"],
      seed: 7,
      frequency_penalty: 1,
      response_format: {
        type: "json_schema" as const,
        json_schema: { name: "person", schema: { type: "object", required: ["name"] } },
      },
    };
    const body = toAnthropic({ ...call, tool_choice: "required" });
    expect(body).toMatchObject({ top_p: 0.8, stop_sequences: ["END"], tool_choice: { type: "any" } });
    // Anthropic has no seed and no penalties: they are not sent.
    expect(body).not.toHaveProperty("seed");
    expect(body).not.toHaveProperty("frequency_penalty");
    expect(body.system).toBe(
      'You extract data.\n\nAnswer with a single JSON object and nothing else: no prose, no code fences. It must match this JSON Schema (person): {"type":"object","required":["name"]}',
    );
    expect(toAnthropic({ ...call, tool_choice: { name: "read_file" } }).tool_choice).toEqual({
      type: "tool",
      name: "read_file",
    });
    const plain = { ...call, response_format: undefined };
    expect(toAnthropic({ ...plain, tool_choice: "none" }).tool_choice).toEqual({ type: "none" });
    expect(toAnthropic({ ...plain, tool_choice: "auto", tools: undefined })).not.toHaveProperty("tool_choice");
    // parallel_tool_calls: false is Anthropic's disable_parallel_tool_use, on whichever choice applies.
    expect(toAnthropic({ ...plain, tool_choice: "required", parallel_tool_calls: false }).tool_choice).toEqual({
      type: "any",
      disable_parallel_tool_use: true,
    });
    expect(toAnthropic({ ...plain, parallel_tool_calls: false }).tool_choice).toEqual({
      type: "auto",
      disable_parallel_tool_use: true,
    });
    expect(toAnthropic({ ...plain, tool_choice: "none", parallel_tool_calls: false }).tool_choice).toEqual({
      type: "none",
    });
  });

  describe("JSON answers through a forced answer tool", () => {
    const person = { type: "object", properties: { name: { type: "string" } }, required: ["name"] };
    const jsonCall = {
      ...extraction("Alice"),
      response_format: {
        type: "json_schema" as const,
        json_schema: { name: "person", description: "The person named", schema: person },
      },
    };

    it("sends the schema as a tool the model must call, instead of asking in the prompt", () => {
      const body = toAnthropic(jsonCall);
      expect(body.system).toBe("You extract data.");
      expect(body.tools).toEqual([{ name: "person", description: "The person named", input_schema: person }]);
      expect(body.tool_choice).toEqual({ type: "tool", name: "person" });
      // json_object has no schema: any object will do.
      expect(toAnthropic({ ...jsonCall, response_format: { type: "json_object" } })).toMatchObject({
        tools: [{ name: "json_answer", input_schema: { type: "object" } }],
        tool_choice: { type: "tool", name: "json_answer" },
      });
      // A tool's input is an object: an array schema is wrapped as {value}.
      const list = { type: "array", items: { type: "string" } };
      const wrapped = toAnthropic({
        ...jsonCall,
        response_format: { type: "json_schema", json_schema: { name: "names", schema: list } },
      });
      expect(wrapped.tools?.[0].input_schema).toEqual({
        type: "object",
        properties: { value: list },
        required: ["value"],
      });
    });

    it("forces the answer tool past the caller's tools only when they may not be called", () => {
      const tools = [{ type: "function" as const, function: { name: "read_file", parameters: { type: "object" } } }];
      const none = toAnthropic({ ...jsonCall, tools, tool_choice: "none" });
      expect(none.tools?.map((tool) => tool.name)).toEqual(["read_file", "person"]);
      expect(none.tool_choice).toEqual({ type: "tool", name: "person" });
      const auto = toAnthropic({ ...jsonCall, tools, tool_choice: "auto" });
      expect(auto.tools?.map((tool) => tool.name)).toEqual(["read_file"]);
      expect(auto.tool_choice).toEqual({ type: "auto" });
      expect(auto.system).toContain("It must match this JSON Schema (person)");
    });

    it("answers the tool's input as the message's JSON text, whole and streamed", async () => {
      const { fetchImpl } = recordingFetch(() =>
        Response.json({
          content: [{ type: "tool_use", id: "toolu_1", name: "person", input: { name: "Alice" } }],
          stop_reason: "tool_use",
          usage: { input_tokens: 10, output_tokens: 5 },
        }),
      );
      const adapter = new AnthropicAdapter({ apiKey: "ak", baseUrl: "https://anthropic.test", fetch: fetchImpl });
      expect(await adapter.complete(jsonCall)).toEqual({
        message: { role: "assistant", content: '{"name":"Alice"}' },
        finish_reason: "stop",
        usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
      });

      const streamed = async (name: string, pieces: string[], format: ResponseFormat = jsonCall.response_format) => {
        const frames = [
          { type: "message_start", message: { usage: { input_tokens: 10, output_tokens: 1 } } },
          { type: "content_block_start", index: 0, content_block: { type: "tool_use", id: "toolu_1", name } },
          ...pieces.map((partial_json) => ({
            type: "content_block_delta",
            index: 0,
            delta: { type: "input_json_delta", partial_json },
          })),
          { type: "content_block_stop", index: 0 },
          { type: "message_delta", delta: { stop_reason: "tool_use" }, usage: { output_tokens: 5 } },
          { type: "message_stop" },
        ];
        const sse = frames.map((frame) => `event: ${frame.type}\ndata: ${JSON.stringify(frame)}\n\n`).join("");
        const streaming = new AnthropicAdapter({
          apiKey: "ak",
          baseUrl: "https://anthropic.test",
          fetch: recordingFetch(() => new Response(sse, { headers: { "Content-Type": "text/event-stream" } }))
            .fetchImpl,
        });
        const events = [];
        for await (const event of streaming.stream({ ...jsonCall, response_format: format })) events.push(event);
        return events;
      };
      const events = await streamed("person", ['{"na', 'me": "Al', 'ice"}']);
      expect(events.slice(0, 3)).toEqual([
        { type: "delta", content: '{"na', prompt_tokens: 10 },
        { type: "delta", content: 'me": "Al' },
        { type: "delta", content: 'ice"}' },
      ]);
      expect(events[3]).toMatchObject({
        type: "done",
        result: { message: { role: "assistant", content: '{"name": "Alice"}' }, finish_reason: "stop" },
      });
      // A wrapped answer comes unwrapped, in one piece at the block's end.
      const list = { type: "json_schema" as const, json_schema: { name: "names", schema: { type: "array" } } };
      const unwrapped = await streamed("names", ['{"value": ["a",', ' "b"]}'], list);
      expect(unwrapped[0]).toEqual({ type: "delta", content: '["a","b"]', prompt_tokens: 10 });
      expect(unwrapped[1]).toMatchObject({ result: { message: { content: '["a","b"]' }, finish_reason: "stop" } });
      // Cut short, it does not parse: passed on as it came rather than failing the stream.
      expect((await streamed("names", ['{"value": ["a",'], list))[0]).toEqual({
        type: "delta",
        content: '{"value": ["a",',
        prompt_tokens: 10,
      });
    });
  });

  it("fails a stream cut before its message_delta, whose message_start already said output_tokens", async () => {
    // Anthropic's message_start carries usage with output_tokens (1): a stream cut after it is not an answer.
    const frames = [
      { type: "message_start", message: { usage: { input_tokens: 100, output_tokens: 1 } } },
      { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "The answer is" } },
    ];
    const sse = frames.map((frame) => `event: ${frame.type}\ndata: ${JSON.stringify(frame)}\n\n`).join("");
    const adapter = new AnthropicAdapter({
      apiKey: "ak",
      baseUrl: "https://anthropic.test",
      fetch: recordingFetch(() => new Response(sse, { headers: { "Content-Type": "text/event-stream" } })).fetchImpl,
    });
    const events: unknown[] = [];
    const drained = (async () => {
      for await (const event of adapter.stream(extraction("Alice, 30"))) events.push(event);
    })();
    await expect(drained).rejects.toMatchObject({
      failure: "protocol",
      message: "the stream ended before its answer did",
    });
    // The first delta carries message_start's count of the prompt: what the cut stream is charged for it.
    expect(events).toEqual([{ type: "delta", content: "The answer is", prompt_tokens: 100 }]);
  });

  it("maps Anthropic's stop reasons to OpenAI's finish reasons: an answer cut by the context window is cut, as by max_tokens", async () => {
    const finishOf = async (stop_reason: string) => {
      const adapter = new AnthropicAdapter({
        apiKey: "ak",
        baseUrl: "https://anthropic.test",
        fetch: recordingFetch(() =>
          Response.json({
            content: [{ type: "text", text: "The answer is" }],
            stop_reason,
            usage: { input_tokens: 10, output_tokens: 3 },
          }),
        ).fetchImpl,
      });
      return (await adapter.complete(extraction("Alice, 30"))).finish_reason;
    };
    expect(await finishOf("end_turn")).toBe("stop");
    expect(await finishOf("stop_sequence")).toBe("stop");
    expect(await finishOf("max_tokens")).toBe("length");
    expect(await finishOf("model_context_window_exceeded")).toBe("length");
    expect(await finishOf("tool_use")).toBe("tool_calls");
    expect(await finishOf("refusal")).toBe("content_filter");
  });

  it("sends each tool an input_schema of type object, which Anthropic requires and OpenAI does not (parameters: {})", () => {
    const body = toAnthropic({
      ...extraction("Alice, 30"),
      tools: [
        { type: "function", function: { name: "clock", parameters: {} } },
        { type: "function", function: { name: "read_file", parameters: { properties: { path: { type: "string" } } } } },
      ],
    });
    expect(body.tools).toEqual([
      { name: "clock", input_schema: { type: "object" } },
      { name: "read_file", input_schema: { type: "object", properties: { path: { type: "string" } } } },
    ]);
  });

  it("sends a temperature within Anthropic's range (0 to 1; OpenAI's goes to 2, which Anthropic refuses with a 400)", () => {
    expect(toAnthropic({ ...extraction("Alice, 30"), temperature: 1.5 }).temperature).toBe(1);
    expect(toAnthropic({ ...extraction("Alice, 30"), temperature: 0.3 }).temperature).toBe(0.3);
    expect(toAnthropic(extraction("Alice, 30"))).not.toHaveProperty("temperature");
  });

  it("sends instructions alone as the user's turn, which OpenAI answers and Anthropic refuses without one", () => {
    const call = (...messages: { role: "system" | "user"; content: string }[]) =>
      toAnthropic({ model: "claude-3-5-haiku-latest", signal, messages });
    const asked = [{ role: "user", content: [{ type: "text", text: "Write a haiku" }] }];
    const systemOnly = call({ role: "system", content: "Write a haiku" });
    expect(systemOnly.messages).toEqual(asked);
    expect(systemOnly).not.toHaveProperty("system");
    // A user message with nothing in it is no turn: Anthropic refuses an empty or blank text block.
    expect(call({ role: "system", content: "Write a haiku" }, { role: "user", content: "" }).messages).toEqual(asked);
    expect(call({ role: "system", content: "Write a haiku" }, { role: "user", content: " \n" }).messages).toEqual(
      asked,
    );
    const two = call({ role: "system", content: "Write a haiku" }, { role: "system", content: "About the sea" });
    expect(two.messages).toEqual([
      { role: "user", content: [{ type: "text", text: "Write a haiku\n\nAbout the sea" }] },
    ]);
    // JSON mode's instruction (asked in the prompt while the caller's tools may be called) stays a system prompt.
    const json = toAnthropic({
      model: "claude-3-5-haiku-latest",
      signal,
      messages: [{ role: "system", content: "Name a colour" }],
      tools: [{ type: "function", function: { name: "clock", parameters: {} } }],
      response_format: { type: "json_object" },
    });
    expect(json.messages).toEqual([{ role: "user", content: [{ type: "text", text: "Name a colour" }] }]);
    expect(json.system).toMatch(/^Answer with a single JSON object/);
    // With a turn, instructions stay the system prompt.
    expect(call({ role: "system", content: "Be brief." }, { role: "user", content: "Hi" })).toMatchObject({
      system: "Be brief.",
      messages: [{ role: "user", content: [{ type: "text", text: "Hi" }] }],
    });
  });

  it("maps system messages, tool calls and tool results to the Messages API shape", () => {
    const body = toAnthropic({
      model: "claude-3-5-haiku-latest",
      signal,
      messages: [
        { role: "system", content: "You write code." },
        { role: "user", content: "Read a.ts" },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            { id: "call_1", type: "function", function: { name: "read_file", arguments: '{"path":"a.ts"}' } },
          ],
        },
        { role: "tool", tool_call_id: "call_1", content: "export {}" },
      ],
      tools: [
        { type: "function", function: { name: "read_file", description: "Reads", parameters: { type: "object" } } },
      ],
    });
    expect(body).toEqual({
      model: "claude-3-5-haiku-latest",
      max_tokens: 4_096,
      system: "You write code.",
      messages: [
        { role: "user", content: [{ type: "text", text: "Read a.ts" }] },
        {
          role: "assistant",
          content: [{ type: "tool_use", id: "call_1", name: "read_file", input: { path: "a.ts" } }],
        },
        { role: "user", content: [{ type: "tool_result", tool_use_id: "call_1", content: "export {}" }] },
      ],
      tools: [{ name: "read_file", description: "Reads", input_schema: { type: "object" } }],
    });
  });

  it("sends a tool call's arguments that are no JSON object as an empty input, which Anthropic requires", () => {
    const inputs = ["[1]", "42", '"text"', "null", '{"path":', ""].map((text) => {
      const body = toAnthropic({
        model: "claude-3-5-haiku-latest",
        signal,
        messages: [
          { role: "user", content: "Read a.ts" },
          {
            role: "assistant",
            content: null,
            tool_calls: [{ id: "c", type: "function", function: { name: "f", arguments: text } }],
          },
          { role: "tool", tool_call_id: "c", content: "done" },
        ],
      });
      return (body.messages[1].content as { input?: unknown }[])[0].input;
    });
    expect(inputs).toEqual([{}, {}, {}, {}, {}, {}]);
  });

  it("maps tool_use answers back to tool calls and counts cache tokens as prompt", async () => {
    const { fetchImpl, seen } = recordingFetch(() =>
      Response.json({
        content: [{ type: "tool_use", id: "toolu_1", name: "write_file", input: { path: "b.ts" } }],
        stop_reason: "tool_use",
        usage: { input_tokens: 100, cache_read_input_tokens: 50, output_tokens: 20 },
      }),
    );
    const adapter = new AnthropicAdapter({ apiKey: "ak", baseUrl: "https://anthropic.test", fetch: fetchImpl });
    const result = await adapter.complete({
      model: "claude-3-5-haiku-latest",
      messages: [{ role: "user", content: "go" }],
      signal,
    });
    expect(seen[0].url).toBe("https://anthropic.test/v1/messages");
    expect(seen[0].headers.get("x-api-key")).toBe("ak");
    expect(result).toEqual({
      message: {
        role: "assistant",
        content: null,
        tool_calls: [
          { id: "toolu_1", type: "function", function: { name: "write_file", arguments: '{"path":"b.ts"}' } },
        ],
      },
      finish_reason: "tool_calls",
      usage: { prompt_tokens: 150, completion_tokens: 20, total_tokens: 170 },
    });
  });

  it("streams several tool calls as OpenAI's deltas, a call without input with the arguments {} as a whole answer has them", async () => {
    const frames = [
      { type: "message_start", message: { usage: { input_tokens: 10, output_tokens: 1 } } },
      { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Checking." } },
      { type: "content_block_stop", index: 0 },
      { type: "content_block_start", index: 1, content_block: { type: "tool_use", id: "toolu_1", name: "weather" } },
      { type: "content_block_delta", index: 1, delta: { type: "input_json_delta", partial_json: "" } },
      { type: "content_block_delta", index: 1, delta: { type: "input_json_delta", partial_json: '{"city": ' } },
      { type: "content_block_delta", index: 1, delta: { type: "input_json_delta", partial_json: '"Paris"}' } },
      { type: "content_block_stop", index: 1 },
      // Anthropic streams a tool that takes no input as an empty partial_json, never "{}".
      { type: "content_block_start", index: 2, content_block: { type: "tool_use", id: "toolu_2", name: "clock" } },
      { type: "content_block_delta", index: 2, delta: { type: "input_json_delta", partial_json: "" } },
      { type: "content_block_stop", index: 2 },
      { type: "message_delta", delta: { stop_reason: "tool_use" }, usage: { output_tokens: 30 } },
      { type: "message_stop" },
    ];
    const sse = frames.map((frame) => `event: ${frame.type}\ndata: ${JSON.stringify(frame)}\n\n`).join("");
    const adapter = new AnthropicAdapter({
      apiKey: "ak",
      baseUrl: "https://anthropic.test",
      fetch: recordingFetch(() => new Response(sse, { headers: { "Content-Type": "text/event-stream" } })).fetchImpl,
    });
    const events = [];
    for await (const event of adapter.stream({ model: "claude-3-5-haiku-latest", messages: [], signal })) {
      events.push(event);
    }
    const arguments_ = new Map<number, string>();
    for (const event of events) {
      if (event.type !== "delta") continue;
      for (const part of event.tool_calls ?? []) {
        arguments_.set(part.index, (arguments_.get(part.index) ?? "") + (part.function?.arguments ?? ""));
      }
    }
    // What an OpenAI client assembles from the deltas parses, as OpenAI's own streamed arguments do.
    expect([...arguments_.entries()]).toEqual([
      [0, '{"city": "Paris"}'],
      [1, "{}"],
    ]);
    expect(events.at(-1)).toEqual({
      type: "done",
      result: {
        message: {
          role: "assistant",
          content: "Checking.",
          tool_calls: [
            { id: "toolu_1", type: "function", function: { name: "weather", arguments: '{"city": "Paris"}' } },
            { id: "toolu_2", type: "function", function: { name: "clock", arguments: "{}" } },
          ],
        },
        finish_reason: "tool_calls",
        usage: { prompt_tokens: 10, completion_tokens: 30, total_tokens: 40 },
      },
    });
  });
  it("ends the answer at a stop sequence of whitespace alone, which Anthropic is not sent: a tool call after it is dropped", async () => {
    const frames = [
      { type: "message_start", message: { usage: { input_tokens: 10, output_tokens: 1 } } },
      { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Done.\n" } },
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "\nNow the weather." } },
      { type: "content_block_stop", index: 0 },
      { type: "content_block_start", index: 1, content_block: { type: "tool_use", id: "toolu_1", name: "weather" } },
      { type: "content_block_delta", index: 1, delta: { type: "input_json_delta", partial_json: '{"city": "Oslo"}' } },
      { type: "content_block_stop", index: 1 },
      { type: "message_delta", delta: { stop_reason: "tool_use" }, usage: { output_tokens: 30 } },
      { type: "message_stop" },
    ];
    const sse = frames.map((frame) => `event: ${frame.type}\ndata: ${JSON.stringify(frame)}\n\n`).join("");
    const whole = {
      content: [
        { type: "text", text: "Done.\n\nNow the weather." },
        { type: "tool_use", id: "toolu_1", name: "weather", input: { city: "Oslo" } },
      ],
      stop_reason: "tool_use",
      usage: { input_tokens: 10, output_tokens: 30 },
    };
    const { fetchImpl, seen } = recordingFetch(() =>
      seen.at(-1)?.body.stream
        ? new Response(sse, { headers: { "Content-Type": "text/event-stream" } })
        : Response.json(whole),
    );
    const adapter = new AnthropicAdapter({ apiKey: "ak", baseUrl: "https://anthropic.test", fetch: fetchImpl });
    const call = { model: "claude-3-5-haiku-latest", messages: [{ role: "user" as const, content: "go" }], signal };
    const expected = {
      message: { role: "assistant", content: "Done." },
      finish_reason: "stop",
      usage: { prompt_tokens: 10, completion_tokens: 30, total_tokens: 40 },
    };
    expect(await adapter.complete({ ...call, stop: ["\n\n", "STOP"] })).toEqual(expected);
    const events = [];
    for await (const event of adapter.stream({ ...call, stop: ["\n\n", "STOP"] })) events.push(event);
    // Streamed, the answer ends at the sequence: the stream is read no further, so Anthropic's usage never
    // comes and the answer is charged what the model had written, estimated (23 characters).
    expect(events).toEqual([
      { type: "delta", content: "Done.", prompt_tokens: 10 },
      {
        type: "done",
        result: {
          ...expected,
          usage: { prompt_tokens: 10, completion_tokens: 6, total_tokens: 16 },
          usageEstimated: true,
        },
      },
    ]);
    expect(seen.map(({ body }) => body.stop_sequences)).toEqual([["STOP"], ["STOP"]]);
  });
});

describe("simulated adapter", () => {
  it("caps the answer's size a caller's model name asks for: it is built in the isolate every tenant shares", async () => {
    // Any key with tasks:write can name `simulated:sim-1?…` in a completion or a task's agent_config.model.
    const settings = simulatedSettings("sim-1?completion_tokens=1e9&tool_calls=1e9&latency_ms=5", SIMULATED_DEFAULTS);
    expect(settings.completionTokens).toBeLessThanOrEqual(131_072);
    expect(settings.toolCalls).toBeLessThanOrEqual(128);
    // What tests and benches set is kept as asked.
    expect(settings.latencyMs).toBe(5);
    expect(simulatedSettings("sim-1?completion_tokens=40&tool_calls=3", SIMULATED_DEFAULTS)).toMatchObject({
      completionTokens: 40,
      toolCalls: 3,
    });
    const answer = await new SimulatedAdapter().complete({
      model: "sim-1?completion_tokens=50000000",
      messages: [{ role: "user", content: "x" }],
      signal,
    });
    expect(answer.usage.completion_tokens).toBeLessThanOrEqual(131_072);
  });

  it("fails at the configured rate, deterministically for the same sequence of calls", async () => {
    const outcomes = async () => {
      const adapter = new SimulatedAdapter();
      const results: string[] = [];
      for (let index = 0; index < 40; index++) {
        const outcome = await adapter
          .complete({
            model: "sim-1?failure_rate=0.5&failure_status=429",
            messages: [{ role: "user", content: "x" }],
            signal,
          })
          .then(() => "ok")
          .catch((error: ProviderError) => String(error.status));
        results.push(outcome);
      }
      return results;
    };
    const first = await outcomes();
    expect(await outcomes()).toEqual(first);
    const failures = first.filter((outcome) => outcome === "429").length;
    expect(failures).toBeGreaterThan(8);
    expect(failures).toBeLessThan(32);
  });

  it("answers words picked by the last message, the same for the same message, not two words over and over", async () => {
    const answer = async (content: string) =>
      (await new SimulatedAdapter().complete({ model: "sim-1", messages: [{ role: "user", content }], signal })).message
        .content ?? "";
    for (const content of ["hi", "Write a haiku", "x", "Refactor the parser"]) {
      const text = await answer(content);
      expect(text.split(" ")).toHaveLength(24);
      expect(text.startsWith("[simulated] ")).toBe(true);
      expect(new Set(text.split(" ").slice(1)).size, text).toBeGreaterThan(4);
      expect(await answer(content)).toBe(text);
    }
    expect(await answer("hi")).not.toBe(await answer("Write a haiku"));
  });
});
