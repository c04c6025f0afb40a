import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app.ts";
import { BASE, eventsOf, fakeUpstreams, usageWhenWritten, workspaceWith } from "../support/llm.ts";

/**
 * POST /api/v1/llm/chat/completions on a `local` server (vLLM, Ollama, LM Studio) as those servers answer,
 * which is not always as OpenAI does: their error bodies, the request fields they refuse, their usage figures.
 */

afterEach(() => vi.restoreAllMocks());

const LOCAL = "local.test";
const providers = { LOCAL_LLM_BASE_URL: `http://${LOCAL}/v1` };
const localChain = () => workspaceWith({ strategy: "fallback", chain: [{ provider: "local", model: "qwen2.5" }] });

async function chat(key: string, body: Record<string, unknown>): Promise<Response> {
  const request = new Request(`${BASE}/api/v1/llm/chat/completions`, {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ model: "auto", messages: [{ role: "user", content: "Say hello" }], ...body }),
  });
  return createApp().fetch(request, { ...env, ...providers }, createExecutionContext());
}

const sse = (events: unknown[]) =>
  new Response(`${events.map((event) => `data: ${JSON.stringify(event)}\n\n`).join("")}data: [DONE]\n\n`, {
    headers: { "Content-Type": "text/event-stream" },
  });

const chunk = (delta: Record<string, unknown>, finish_reason: string | null = null) => ({
  id: "chatcmpl-local",
  object: "chat.completion.chunk",
  choices: [{ index: 0, delta, finish_reason }],
});

/** The stream's text, and its last chunk's usage and x_mgx figures. */
async function readStream(response: Response) {
  const events = (await response.text())
    .split("\n\n")
    .map((event) => event.replace(/^data: /, ""))
    .filter((data) => data !== "" && data !== "[DONE]")
    .map((data) => JSON.parse(data) as Record<string, any>);
  const content = events.map((event) => event.choices?.[0]?.delta?.content ?? "").join("");
  return { content, last: events.at(-1) };
}

describe("a local server that asks for a key", () => {
  it("is sent LOCAL_LLM_API_KEY as a bearer token, as vLLM's --api-key and LM Studio's keys take it", async () => {
    const workspace = await localChain();
    const fake = fakeUpstreams({
      [LOCAL]: (request) =>
        request.headers.get("Authorization") === "Bearer local-secret"
          ? Response.json({
              choices: [{ index: 0, message: { role: "assistant", content: "Hello" }, finish_reason: "stop" }],
              usage: { prompt_tokens: 9, completion_tokens: 1, total_tokens: 10 },
            })
          : Response.json({ error: "Unauthorized" }, { status: 401 }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const request = new Request(`${BASE}/api/v1/llm/chat/completions`, {
      method: "POST",
      headers: { Authorization: `Bearer ${workspace.key}`, "Content-Type": "application/json" },
      body: JSON.stringify({ model: "auto", messages: [{ role: "user", content: "Say hello" }] }),
    });
    const withKey = { ...env, ...providers, LOCAL_LLM_API_KEY: "local-secret" };
    const response = await createApp().fetch(request, withKey, createExecutionContext());
    expect(response.status).toBe(200);
    expect(((await response.json()) as Record<string, any>).choices[0].message.content).toBe("Hello");
    // Without a key configured, none is sent (Ollama's server takes none).
    expect((await chat(workspace.key, {})).status).toBe(503);
    expect(fake.calls[LOCAL].at(-1)?.headers.get("Authorization")).toBeNull();
  });
});

describe("a local server's errors", () => {
  it("tells the caller the message of vLLM's error object and of a bare error string, not 'Bad Request'", async () => {
    const workspace = await localChain();
    const vllm = {
      object: "error",
      message: "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
      type: "BadRequestError",
      param: null,
      code: 400,
    };
    const fake = fakeUpstreams({
      [LOCAL]: (_request, call) =>
        call === 1
          ? Response.json(vllm, { status: 400, statusText: "Bad Request" })
          : Response.json({ error: "Model does not support images" }, { status: 400, statusText: "Bad Request" }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);

    const refused = await chat(workspace.key, {});
    expect(refused.status).toBe(400);
    const body = (await refused.json()) as { detail: string; failures: { status: number; message: string }[] };
    expect(body.failures).toEqual([
      expect.objectContaining({ status: 400, message: `provider answered 400: ${vllm.message}` }),
    ]);
    expect(body.detail).toContain("maximum context length is 4096 tokens");

    const lmStudio = (await (await chat(workspace.key, {})).json()) as { failures: { message: string }[] };
    expect(lmStudio.failures[0].message).toBe("provider answered 400: Model does not support images");
  });
});

describe("a gateway's error in the stream, its status as a string (LiteLLM)", () => {
  // LiteLLM's proxy calls some providers (Anthropic among them) only as its stream starts, and tells their refusal
  // in the stream: `{"error": {…, "code": "429"}}`, the status as a string, the provider's words in the message.
  const orgLimit =
    'litellm.RateLimitError: AnthropicException - {"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization (0f1e2d3c-aaaa-bbbb-cccc-1234567890ab) of 50,000 input tokens per minute."}}';
  const inStream = (message: string, code: string) =>
    new Response(`data: ${JSON.stringify({ error: { message, type: "None", param: "None", code } })}\n\n`, {
      headers: { "Content-Type": "text/event-stream" },
    });

  it("is told by status, as the same refusal answered over HTTP: a rate limit's words about the account are not passed on", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "local", model: `claude-via-litellm-${crypto.randomUUID().slice(0, 6)}` }],
    });
    const fake = fakeUpstreams({ [LOCAL]: () => inStream(orgLimit, "429") });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const response = await chat(workspace.key, { stream: true });
    const text = await response.text();
    // Before: taken for a 500, its message (the organization's id) passed on in the 503's failures and detail.
    expect(text).not.toContain("0f1e2d3c-aaaa");
    expect(response.status).toBe(503);
    const body = JSON.parse(text) as { failures: { status: number; message: string }[] };
    expect(body.failures).toEqual([
      expect.objectContaining({ status: 429, message: expect.stringMatching(/rate limited/) }),
    ]);
    const [reported] = await eventsOf(workspace, "llm.provider.error", 1);
    expect(reported?.data).toMatchObject({ error_type: "rate_limit", http_status: 429 });
  });

  it("a refusal of the gateway's credentials is told as one, not in the words that name the key", async () => {
    const workspace = await localChain();
    const keyRefused = "litellm.AuthenticationError: AnthropicException - invalid x-api-key sk-ant-api03-abcd...wxyz";
    const fake = fakeUpstreams({ [LOCAL]: () => inStream(keyRefused, "401") });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const response = await chat(workspace.key, { stream: true });
    const text = await response.text();
    expect(text).not.toContain("sk-ant-api03");
    // Credentials every provider refuses: no retry mends them.
    expect(response.status).toBe(503);
    expect(response.headers.get("X-Should-Retry")).toBe("false");
    expect(fake.count(LOCAL)).toBe(1);
  });
});

describe("a local server that refuses stream_options", () => {
  it("streams the answer, asked again without stream_options, charged an estimate marked as such", async () => {
    // vLLM before 0.4.3 (and servers like it) forbids request fields it does not know: every stream failed.
    const workspace = await localChain();
    const refusal = {
      object: "error",
      message:
        "[{'type': 'extra_forbidden', 'loc': ('body', 'stream_options'), 'msg': 'Extra inputs are not permitted', 'input': {'include_usage': True}}]",
      type: "BadRequestError",
      param: null,
      code: 400,
    };
    const sent: Record<string, unknown>[] = [];
    const fake = fakeUpstreams({
      [LOCAL]: async (request) => {
        const body = (await request.json()) as Record<string, unknown>;
        sent.push(body);
        if (body.stream_options) return Response.json(refusal, { status: 400 });
        return sse([chunk({ role: "assistant", content: "Hel" }), chunk({ content: "lo" }), chunk({}, "stop")]);
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);

    const response = await chat(workspace.key, { stream: true, stream_options: { include_usage: true } });
    expect(response.status).toBe(200);
    const { content, last } = await readStream(response);
    expect(content).toBe("Hello");
    expect(last?.usage.completion_tokens).toBeGreaterThan(0);
    expect(last?.x_mgx).toMatchObject({ provider: "local", usage_estimated: true });
    expect(sent.map((body) => body.stream_options)).toEqual([{ include_usage: true }, undefined]);
  });

  it("still fails a stream the server refuses for another reason, asking once", async () => {
    const workspace = await localChain();
    const fake = fakeUpstreams({
      [LOCAL]: () =>
        Response.json({ object: "error", message: "model 'qwen2.5' not found", code: 404 }, { status: 404 }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const response = await chat(workspace.key, { stream: true });
    // The chain's model, missing on the server: the chain's to mend, not the caller's (a 503 no retry mends).
    expect(response.status).toBe(503);
    expect(response.headers.get("X-Should-Retry")).toBe("false");
    expect(fake.count(LOCAL)).toBe(1);
  });
});

describe("a local server's usage figures of 0", () => {
  it("charges a prompt Ollama reports as 0 tokens (read from its cache) at an estimate, marked, whole and streamed", async () => {
    // ollama#5370: prompt_tokens is 0 when the whole prompt came from Ollama's cache; the call was charged no input.
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [
        {
          provider: "local",
          model: "llama3.1",
          price: { input_per_million_usd: 1_000, output_per_million_usd: 2_000 },
        },
      ],
    });
    const cachedPrompt = { prompt_tokens: 0, completion_tokens: 2, total_tokens: 2 };
    const fake = fakeUpstreams({
      [LOCAL]: async (request) => {
        const body = (await request.json()) as { stream?: boolean };
        if (body.stream)
          return sse([chunk({ content: "Hello" }, "stop"), { ...chunk({}), choices: [], usage: cachedPrompt }]);
        return Response.json({
          id: "chatcmpl-local",
          object: "chat.completion",
          choices: [{ index: 0, message: { role: "assistant", content: "Hello" }, finish_reason: "stop" }],
          usage: cachedPrompt,
        });
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);

    const whole = (await (await chat(workspace.key, {})).json()) as Record<string, any>;
    expect(whole.usage.prompt_tokens).toBeGreaterThan(0);
    expect(whole.usage.completion_tokens).toBe(2);
    expect(whole.x_mgx).toMatchObject({ usage_estimated: true });
    // 2 answer tokens alone at $2,000 a million would be $0.004: the prompt is charged too.
    expect(whole.x_mgx.cost_usd).toBeGreaterThan(0.004);

    const { last } = await readStream(
      await chat(workspace.key, { stream: true, stream_options: { include_usage: true } }),
    );
    expect(last?.usage.prompt_tokens).toBeGreaterThan(0);
    expect(last?.x_mgx).toMatchObject({ usage_estimated: true });
  });

  it("charges usage of zeros throughout at an estimate, and takes a prompt that was counted as reported", async () => {
    const workspace = await localChain();
    const answers = [
      { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 },
      { prompt_tokens: 12, completion_tokens: 3, total_tokens: 15 },
      { prompt_tokens: 12, completion_tokens: 0, total_tokens: 12 },
    ];
    const fake = fakeUpstreams({
      [LOCAL]: (_request, call) =>
        Response.json({
          choices: [{ index: 0, message: { role: "assistant", content: "Hello there" }, finish_reason: "stop" }],
          usage: answers[call - 1],
        }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const zeros = (await (await chat(workspace.key, {})).json()) as Record<string, any>;
    expect(zeros.usage.prompt_tokens).toBeGreaterThan(0);
    expect(zeros.usage.completion_tokens).toBeGreaterThan(0);
    expect(zeros.x_mgx.usage_estimated).toBe(true);
    const counted = (await (await chat(workspace.key, {})).json()) as Record<string, any>;
    expect(counted.usage).toMatchObject({ prompt_tokens: 12, completion_tokens: 3, total_tokens: 15 });
    expect(counted.x_mgx.usage_estimated).toBe(false);
    // An answer of 0 tokens beside a prompt that was counted is taken as reported too.
    const noAnswer = (await (await chat(workspace.key, {})).json()) as Record<string, any>;
    expect(noAnswer.usage).toMatchObject({ prompt_tokens: 12, completion_tokens: 0 });
    expect(noAnswer.x_mgx.usage_estimated).toBe(false);
  });
});

describe("a local server's stream cut mid-answer", () => {
  it("is told to the caller as cut, not whole, when the server puts usage on every chunk (vLLM's continuous_usage_stats)", async () => {
    const workspace = await localChain();
    const usageSoFar = (completion: number) => ({
      usage: { prompt_tokens: 9, completion_tokens: completion, total_tokens: 9 + completion },
    });
    const fake = fakeUpstreams({
      // The connection drops after two chunks: no finish reason, no usage chunk, no [DONE].
      [LOCAL]: () =>
        new Response(
          [
            { ...chunk({ content: "The answer " }), ...usageSoFar(2) },
            { ...chunk({ content: "is" }), ...usageSoFar(3) },
          ]
            .map((event) => `data: ${JSON.stringify(event)}\n\n`)
            .join(""),
          { headers: { "Content-Type": "text/event-stream" } },
        ),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const text = await (await chat(workspace.key, { stream: true })).text();
    expect(text).toContain('"content":"is"');
    expect(text).not.toContain('"finish_reason":"stop"');
    expect(text).not.toContain("[DONE]");
    expect(text).toContain('"error":{"message":"the stream ended before its answer did"');
  });
});

describe("a local reasoning model's stream", () => {
  it("is not cut as stalled while the model thinks longer than the attempt timeout, sending its reasoning", async () => {
    // Ollama, vLLM and LM Studio stream a reasoning model's thinking as reasoning / reasoning_content deltas,
    // which are not passed on: each used to leave the attempt's clock running, as if nothing came.
    const workspace = await localChain();
    const thinking = Array.from({ length: 8 }, (_, index) =>
      chunk(index % 2 === 0 ? { reasoning_content: `step ${index} ` } : { reasoning: `step ${index} ` }),
    );
    const events = [
      chunk({ role: "assistant", content: "" }),
      ...thinking,
      chunk({ content: "42" }),
      chunk({}, "stop"),
    ];
    const encoder = new TextEncoder();
    const fake = fakeUpstreams({
      [LOCAL]: (request) =>
        new Response(
          new ReadableStream({
            async start(controller) {
              // As fetch does: the attempt's abort (its timeout) ends the body being read.
              request.signal.addEventListener("abort", () => controller.error(request.signal.reason), { once: true });
              for (const event of events) {
                if (request.signal.aborted) return;
                controller.enqueue(encoder.encode(`data: ${JSON.stringify(event)}\n\n`));
                await new Promise((wake) => setTimeout(wake, 60));
              }
              controller.enqueue(encoder.encode("data: [DONE]\n\n"));
              controller.close();
            },
          }),
          { headers: { "Content-Type": "text/event-stream" } },
        ),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    // 600 ms of thinking against an attempt timeout of 200 ms, each chunk 60 ms after the last.
    const request = new Request(`${BASE}/api/v1/llm/chat/completions`, {
      method: "POST",
      headers: { Authorization: `Bearer ${workspace.key}`, "Content-Type": "application/json" },
      body: JSON.stringify({
        model: "auto",
        stream: true,
        messages: [{ role: "user", content: "Think, then answer" }],
      }),
    });
    const response = await createApp().fetch(
      request,
      { ...env, ...providers, LLM_ATTEMPT_TIMEOUT_MS: "200" },
      createExecutionContext(),
    );
    expect(response.status).toBe(200);
    const { content, last } = await readStream(response);
    expect(content).toBe("42");
    expect(last?.choices[0].finish_reason).toBe("stop");
    expect(fake.count(LOCAL)).toBe(1);
  });
});

describe("a local reasoning model's answer without usage", () => {
  it("is charged an estimate that counts the thinking it wrote, not only its answer, whole and streamed", async () => {
    const workspace = await localChain();
    // About 250 tokens of thinking (four characters a token), then a 1-token answer; the server reports no usage.
    const thinking = "Let me weigh each option. ".repeat(40);
    const fake = fakeUpstreams({
      [LOCAL]: async (request) => {
        const body = (await request.json()) as { stream?: boolean };
        if (!body.stream) {
          return Response.json({
            choices: [
              {
                index: 0,
                message: { role: "assistant", content: "42", reasoning_content: thinking },
                finish_reason: "stop",
              },
            ],
          });
        }
        return sse([
          chunk({ reasoning: thinking.slice(0, 500) }),
          chunk({ reasoning: thinking.slice(500) }),
          chunk({ content: "42" }, "stop"),
        ]);
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);

    const whole = (await (await chat(workspace.key, {})).json()) as Record<string, any>;
    expect(whole.x_mgx.usage_estimated).toBe(true);
    expect(whole.usage.completion_tokens).toBeGreaterThanOrEqual(250);

    const { last } = await readStream(
      await chat(workspace.key, { stream: true, stream_options: { include_usage: true } }),
    );
    expect(last?.x_mgx.usage_estimated).toBe(true);
    expect(last?.usage.completion_tokens).toBeGreaterThanOrEqual(250);
  });
});

describe("a local reasoning model's stream cut while it thinks", () => {
  it("is charged the thinking it wrote since its last delta, as well as what it sent", async () => {
    const workspace = await localChain();
    // About 250 tokens of thinking (four characters a token) after the first delta, then the connection drops.
    const thinking = "Let me weigh each option. ".repeat(40);
    const fake = fakeUpstreams({
      [LOCAL]: () =>
        new Response(
          [chunk({ role: "assistant", content: "Well" }), chunk({ reasoning_content: thinking })]
            .map((event) => `data: ${JSON.stringify(event)}\n\n`)
            .join(""),
          { headers: { "Content-Type": "text/event-stream" } },
        ),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const text = await (await chat(workspace.key, { stream: true })).text();
    expect(text).toContain('"error":{"message":"the stream ended before its answer did"');
    const usage = await usageWhenWritten(workspace);
    expect(usage.data).toEqual([expect.objectContaining({ provider: "local", calls: 1, estimated_calls: 1 })]);
    expect(usage.totals.completion_tokens).toBeGreaterThanOrEqual(250);
  });
});

describe("a local server that streams unless told not to", () => {
  it("is told stream: false, and an answer it streams anyway is read as a whole one", async () => {
    // mini-sglang and KAITO's transformers runtime stream every answer, whatever the request says.
    const workspace = await localChain();
    const sent: Record<string, unknown>[] = [];
    const fake = fakeUpstreams({
      [LOCAL]: async (request) => {
        sent.push((await request.json()) as Record<string, unknown>);
        return sse([
          chunk({ role: "assistant", content: "Hel" }),
          chunk({ content: "lo" }, "stop"),
          { ...chunk({}), choices: [], usage: { prompt_tokens: 9, completion_tokens: 2, total_tokens: 11 } },
        ]);
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    // A short answer is asked whole (a long one is asked as a stream, see llm-timed-out-attempts.test.ts).
    const response = await chat(workspace.key, { max_tokens: 64 });
    expect(response.status).toBe(200);
    const body = (await response.json()) as Record<string, any>;
    expect(body.choices[0]).toMatchObject({ message: { content: "Hello" }, finish_reason: "stop" });
    expect(body.usage).toMatchObject({ prompt_tokens: 9, completion_tokens: 2 });
    expect(body.x_mgx.usage_estimated).toBe(false);
    expect(sent).toHaveLength(1);
    expect(sent[0].stream).toBe(false);
  });
});

describe("a local server that gives up on an answer", () => {
  const aborted = (content: string) =>
    Response.json({
      id: "chatcmpl-local",
      object: "chat.completion",
      choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "abort" }],
      usage: { prompt_tokens: 9, completion_tokens: 2, total_tokens: 11 },
    });

  it("has the answer vLLM aborted asked again, not passed on as a whole one", async () => {
    const workspace = await localChain();
    const fake = fakeUpstreams({
      [LOCAL]: (_request, call) =>
        call === 1
          ? aborted("The ans")
          : Response.json({
              choices: [
                { index: 0, message: { role: "assistant", content: "The answer is 42." }, finish_reason: "stop" },
              ],
              usage: { prompt_tokens: 9, completion_tokens: 6, total_tokens: 15 },
            }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const response = await chat(workspace.key, {});
    expect(response.status).toBe(200);
    const body = (await response.json()) as Record<string, any>;
    expect(body.choices[0]).toMatchObject({ message: { content: "The answer is 42." }, finish_reason: "stop" });
    expect(fake.count(LOCAL)).toBe(2);
  });

  it("tells a streamed answer that ends in finish_reason abort as cut, not as a stop", async () => {
    const workspace = await localChain();
    const fake = fakeUpstreams({ [LOCAL]: () => sse([chunk({ content: "The ans" }), chunk({}, "abort")]) });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const text = await (await chat(workspace.key, { stream: true })).text();
    expect(text).toContain('"content":"The ans"');
    expect(text).not.toContain('"finish_reason":"stop"');
    expect(text).toContain('the provider gave up on the answer (finish_reason \\"abort\\")');
  });
});
