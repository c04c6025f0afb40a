import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app.ts";
import { createLlmRouter, type LlmError } from "../../src/llm/index.ts";
import { BASE, fakeUpstreams, hang, llmConfig, quietLogger, workspaceWith } from "../support/llm.ts";

/**
 * A long whole answer is asked as a stream by the router's choice (see Router.chat): a local server or gateway
 * that refuses `stream: true` had answered such a call asked whole, and must still. Through
 * POST /api/v1/llm/chat/completions, with a fake `local` server inside workerd.
 */

afterEach(() => vi.restoreAllMocks());

const LOCAL = "local.test";
const providers = { LOCAL_LLM_BASE_URL: `http://${LOCAL}/v1` };

/** Each test its own model: the targets that refuse to stream are remembered for the isolate. */
const localChain = (model: string) => workspaceWith({ strategy: "fallback", chain: [{ provider: "local", model }] });

/** One request to the app, its background work (the breaker's sync, the usage row) awaited. */
async function app(key: string, path: string, body?: Record<string, unknown>): Promise<Response> {
  const request = new Request(`${BASE}${path}`, {
    method: body ? "POST" : "GET",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const context = createExecutionContext();
  const response = await createApp().fetch(request, { ...env, ...providers }, context);
  const text = await response.text();
  await waitOnExecutionContext(context);
  return new Response(text, { status: response.status, headers: response.headers });
}

// Without max_tokens, a model the price table does not know may write a long answer: asked as a stream.
const chat = (key: string, body: Record<string, unknown> = {}) =>
  app(key, "/api/v1/llm/chat/completions", {
    model: "auto",
    messages: [{ role: "user", content: "Write the report" }],
    ...body,
  });

const wholeAnswer = () =>
  Response.json({
    id: "chatcmpl-local",
    object: "chat.completion",
    choices: [{ index: 0, message: { role: "assistant", content: "The report." }, finish_reason: "stop" }],
    usage: { prompt_tokens: 11, completion_tokens: 3, total_tokens: 14 },
  });

/** A server that answers calls asked whole, and refuses every stream with this 400 (or 422). */
function refusesStreams(refusal: () => Response) {
  const asked: string[] = [];
  const fake = fakeUpstreams({
    [LOCAL]: async (request) => {
      const body = (await request.clone().json()) as { stream?: boolean };
      asked.push(body.stream ? "stream" : "whole");
      return body.stream ? refusal() : wholeAnswer();
    },
  });
  vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
  return asked;
}

const streamingRefused = () =>
  Response.json(
    { error: { message: "Streaming is not supported for this model", type: "invalid_request_error", code: 400 } },
    { status: 400 },
  );

describe("a local server that refuses to stream, asked a long whole answer", () => {
  it("is asked whole at once, then asked whole from the start; nothing counted against it, one usage row a call", async () => {
    const model = "qwen-no-stream";
    const workspace = await localChain(model);
    const asked = refusesStreams(streamingRefused);

    const first = await chat(workspace.key);
    expect(first.status).toBe(200);
    const body = (await first.json()) as Record<string, any>;
    expect(body.choices[0].message.content).toBe("The report.");
    // The refusal was no attempt of its own, charged nothing: the answer's usage is the provider's.
    expect(body.x_mgx).toMatchObject({ provider: "local", attempts: 1 });
    expect(body.x_mgx.usage_estimated).toBeFalsy();
    expect(body.x_mgx.timed_out_attempts).toBeUndefined();
    expect(asked).toEqual(["stream", "whole"]);

    // The isolate remembers: the next long answer is asked whole at once.
    const second = await chat(workspace.key);
    expect(second.status).toBe(200);
    expect(((await second.json()) as Record<string, any>).choices[0].message.content).toBe("The report.");
    expect(asked).toEqual(["stream", "whole", "whole"]);

    const listed = (await (await app(workspace.key, "/api/v1/providers")).json()) as {
      data: { provider: string; models: Record<string, unknown>[] }[];
    };
    const breaker = listed.data.find((entry) => entry.provider === "local")?.models.find((m) => m.model === model);
    expect(breaker).toMatchObject({ state: "closed", consecutive_failures: 0, error_rate: 0, last_error: null });

    // One usage row a call, the provider's figures, no timed-out attempt.
    let usage: Record<string, any> = {};
    for (let tries = 0; tries < 100 && usage.totals?.calls !== 2; tries++) {
      await new Promise((wake) => setTimeout(wake, 20));
      usage = (await (await app(workspace.key, "/api/v1/usage")).json()) as Record<string, any>;
    }
    expect(usage.data).toEqual([
      expect.objectContaining({
        provider: "local",
        model,
        calls: 2,
        estimated_calls: 0,
        timed_out_attempts: 0,
        prompt_tokens: 22,
        completion_tokens: 6,
      }),
    ]);
  });

  it("is asked whole when it refuses stream_options, then the stream itself (a 422, as servers built on pydantic do)", async () => {
    const workspace = await localChain("qwen-no-stream-422");
    const forbidden = (field: string) =>
      Response.json(
        {
          object: "error",
          message: `[{'type': 'extra_forbidden', 'loc': ('body', '${field}'), 'msg': 'Extra inputs are not permitted'}]`,
          code: 422,
        },
        { status: 422 },
      );
    const asked: string[] = [];
    const fake = fakeUpstreams({
      [LOCAL]: async (request) => {
        const body = (await request.clone().json()) as { stream?: boolean; stream_options?: unknown };
        asked.push(body.stream_options ? "stream_options" : body.stream ? "stream" : "whole");
        if (body.stream_options) return forbidden("stream_options");
        return body.stream ? forbidden("stream") : wholeAnswer();
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const response = await chat(workspace.key);
    expect(response.status).toBe(200);
    expect(((await response.json()) as Record<string, any>).choices[0].message.content).toBe("The report.");
    // Asked without stream_options first (the adapter's own mend), then whole.
    expect(asked).toEqual(["stream_options", "stream", "whole"]);
  });

  it("still fails on a 400 that is not about streaming, asking once, and is not taken for a server that will not stream", async () => {
    const model = "qwen-short-context";
    const workspace = await localChain(model);
    const tooLong = () =>
      Response.json(
        {
          object: "error",
          message: "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
          type: "BadRequestError",
          code: 400,
        },
        { status: 400 },
      );
    const asked = refusesStreams(tooLong);
    const refused = await chat(workspace.key);
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as { detail: string }).detail).toContain("maximum context length");
    expect(asked).toEqual(["stream"]);
    // Its next long answer is asked as a stream still.
    expect((await chat(workspace.key)).status).toBe(400);
    expect(asked).toEqual(["stream", "stream"]);
  });

  it("a 400 that names 'stream' but refuses the request itself, refused whole too, leaves the target streamed for every workspace", async () => {
    // One caller's bad request (here a tool named "stream" the server rejects) must not make another
    // workspace's long answers to the same target asked whole, cut at the attempt timeout, for the isolate's life.
    const model = "qwen-bad-tool";
    const first = await localChain(model);
    const other = await localChain(model);
    const asked: string[] = [];
    const fake = fakeUpstreams({
      [LOCAL]: async (request) => {
        const body = (await request.clone().json()) as { stream?: boolean; tools?: unknown[] };
        asked.push(body.stream ? "stream" : "whole");
        if (body.tools) {
          return Response.json(
            { error: { message: "Invalid schema for function 'stream': 'type' is required", code: 400 } },
            { status: 400 },
          );
        }
        return body.stream
          ? new Response(
              'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"Streamed."},"finish_reason":"stop"}]}\n\n' +
                'data: {"id":"c","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":2,"total_tokens":13}}\n\n' +
                "data: [DONE]\n\n",
              { headers: { "Content-Type": "text/event-stream" } },
            )
          : wholeAnswer();
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);

    const refused = await chat(first.key, {
      tools: [{ type: "function", function: { name: "stream", parameters: {} } }],
    });
    expect(refused.status).toBe(400);
    expect(asked).toEqual(["stream", "whole"]);

    const answered = await chat(other.key);
    expect(answered.status).toBe(200);
    expect(((await answered.json()) as Record<string, any>).choices[0].message.content).toBe("Streamed.");
    expect(asked).toEqual(["stream", "whole", "stream"]);
  });

  it("a caller's own stream refused stays refused: the caller asked for a stream", async () => {
    const workspace = await localChain("qwen-caller-stream");
    const asked = refusesStreams(streamingRefused);
    const refused = await chat(workspace.key, { stream: true });
    expect(refused.status).toBe(400);
    expect(asked).toEqual(["stream"]);
  });

  it("the agent runtime's calls, which ask every whole answer as a stream (wholeFromStream), are asked whole too", async () => {
    // The runtime streams its turns for the same reason the router streams long answers (a file written in one
    // tool call takes minutes): against a server that will not stream, every turn of every task failed with a 400.
    const workspace = await localChain("qwen-agent-turn");
    const asked = refusesStreams(streamingRefused);
    const router = createLlmRouter(llmConfig(providers), { logger: quietLogger });
    const turn = (chargeKey: string) =>
      router.chat(
        { messages: [{ role: "user", content: "Write the file" }] },
        { workspaceId: workspace.id, chargeKey, wholeFromStream: true },
      );
    expect((await turn("agent-turn-1")).message.content).toBe("The report.");
    expect((await turn("agent-turn-2")).message.content).toBe("The report.");
    expect(asked).toEqual(["stream", "whole", "whole"]);
  });
});

describe("a long whole answer of a server that will not stream, asked whole", () => {
  // Asked whole, the answer shows no progress until it is all written: cut at the attempt timeout, every long answer
  // of such a server was asked again, three times, each cut, then failed.
  const ATTEMPT_TIMEOUT_MS = 150;
  const WRITING_MS = 500;
  const slowRouter = () =>
    createLlmRouter(llmConfig(providers), {
      logger: quietLogger,
      overrides: { attemptTimeoutMs: ATTEMPT_TIMEOUT_MS, sleep: async () => {} },
    });

  it("is waited for as long as it may take to write, not the attempt timeout, on the refusal's attempt and after", async () => {
    const workspace = await localChain("qwen-slow-whole");
    const asked: string[] = [];
    const fake = fakeUpstreams({
      [LOCAL]: async (request) => {
        const body = (await request.clone().json()) as { stream?: boolean };
        asked.push(body.stream ? "stream" : "whole");
        if (body.stream) return streamingRefused();
        // Written in WRITING_MS, unless the router gives up first (a mocked fetch is not aborted by itself).
        return Promise.race([
          new Promise<Response>((answer) => setTimeout(() => answer(wholeAnswer()), WRITING_MS)),
          hang(request),
        ]);
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = slowRouter();
    const call = (chargeKey: string) =>
      router.chat(
        { messages: [{ role: "user", content: "Write the report" }] },
        { workspaceId: workspace.id, chargeKey },
      );

    const first = await call("slow-whole-1");
    expect(first).toMatchObject({ attempts: 1, message: { content: "The report." } });
    expect(first.timed_out_attempts).toBeUndefined();
    const second = await call("slow-whole-2");
    expect(second).toMatchObject({ attempts: 1, message: { content: "The report." } });
    expect(second.timed_out_attempts).toBeUndefined();
    expect(asked).toEqual(["stream", "whole", "whole"]);
  });

  it("that hangs is still given up by the call's deadline, one attempt, charged its prompt", async () => {
    const workspace = await localChain("qwen-hung-whole");
    const asked: string[] = [];
    const fake = fakeUpstreams({
      [LOCAL]: async (request) => {
        const body = (await request.clone().json()) as { stream?: boolean };
        asked.push(body.stream ? "stream" : "whole");
        return body.stream ? streamingRefused() : hang(request);
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const startedMs = Date.now();
    const failure = await slowRouter()
      .chat(
        { messages: [{ role: "user", content: "Write the report" }] },
        { workspaceId: workspace.id, chargeKey: "hung-whole", deadlineMs: startedMs + 800 },
      )
      .catch((error: unknown) => error);
    expect(failure).toMatchObject({ kind: "timeout" });
    expect(Date.now() - startedMs).toBeGreaterThanOrEqual(700);
    expect(asked).toEqual(["stream", "whole"]);
    expect((failure as LlmError).charged).toEqual([
      expect.objectContaining({ unfinished: "timed_out", usage: expect.objectContaining({ completion_tokens: 0 }) }),
    ]);
  });
});
