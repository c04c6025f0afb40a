import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app.ts";
import { ANTHROPIC_URL, BASE, fakeUpstreams, fetcher, OPENAI_URL, workspaceWith } from "../support/llm.ts";

/**
 * Requests of the other popular JavaScript clients of OpenAI (the Vercel AI SDK's `@ai-sdk/openai`,
 * LangChain's `@langchain/openai`) as they send them, replayed with plain fetch: LangChain is not a
 * dependency of this repository, so what it sends and reads is reproduced here (the AI SDK itself drives
 * the Responses API in llm-responses-ai-sdk.test.ts).
 */

/** What `createOpenAI({ baseURL, apiKey })(model)` (the AI SDK's default model, not `.chat(model)`) sends for generateText. */
const AI_SDK_RESPONSES_REQUEST = {
  model: "auto",
  input: [{ role: "user", content: [{ type: "input_text", text: "Say hi" }] }],
};

describe("OpenAI's Responses API, which the AI SDK's default model and LangChain's useResponsesApi call", () => {
  it("answers the AI SDK's request whole and streamed, each stored (its default): GET reads it back", async () => {
    const workspace = await workspaceWith(null);
    const post = (body: unknown) =>
      fetcher(`${BASE}/api/v1/llm/responses`, {
        method: "POST",
        headers: { ...workspace.headers, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    const whole = await post(AI_SDK_RESPONSES_REQUEST);
    expect(whole.status).toBe(200);
    const answered = (await whole.json()) as Record<string, any>;
    // What the AI SDK reads of a response: its output message's output_text parts, and the usage.
    expect(answered).toMatchObject({
      object: "response",
      store: true,
      output: [{ type: "message", role: "assistant", content: [{ type: "output_text", text: expect.any(String) }] }],
      usage: { input_tokens: expect.any(Number), output_tokens: 24 },
    });
    const streamed = await post({ ...AI_SDK_RESPONSES_REQUEST, stream: true });
    expect(streamed.status).toBe(200);
    const text = await streamed.text();
    expect(text).toContain("event: response.completed\n");
    const streamedId = (JSON.parse(text.split("\n")[1].slice("data: ".length)) as { response: { id: string } }).response
      .id;

    for (const id of [answered.id, streamedId]) {
      const retrieved = await fetcher(`${BASE}/api/v1/llm/responses/${id}`, { headers: workspace.headers });
      expect(retrieved.status).toBe(200);
      expect(((await retrieved.json()) as { id: string }).id).toBe(id);
    }
  });

  it("still asks for the caller's credentials first", async () => {
    const response = await fetcher(`${BASE}/api/v1/llm/responses`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(AI_SDK_RESPONSES_REQUEST),
    });
    expect(response.status).toBe(401);
  });
});

afterEach(() => vi.restoreAllMocks());

/** The app with OpenAI and Anthropic configured at the fake upstreams (fakeUpstreams answers for them). */
async function appFetch(path: string, key: string, body: unknown): Promise<Response> {
  const providers = {
    OPENAI_API_KEY: "sk-test",
    OPENAI_BASE_URL: OPENAI_URL,
    ANTHROPIC_API_KEY: "ak-test",
    ANTHROPIC_BASE_URL: ANTHROPIC_URL,
  };
  const request = new Request(`${BASE}${path}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return createApp().fetch(request, { ...env, ...providers }, createExecutionContext());
}

/** The last `data:` object of an SSE body that has a `usage`. */
function usageChunk(text: string): { usage: Record<string, unknown> } {
  const chunks = text
    .split("\n\n")
    .filter((frame) => frame.startsWith("data: {"))
    .map((frame) => JSON.parse(frame.slice("data: ".length)));
  return chunks.filter((chunk) => chunk.usage).at(-1);
}

describe("a reasoning model's usage", () => {
  // OpenAI's usage of an o-series or gpt-5 answer, whose completion_tokens include the hidden reasoning.
  const upstreamUsage = {
    prompt_tokens: 20,
    completion_tokens: 90,
    total_tokens: 110,
    prompt_tokens_details: { cached_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 64, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
  };
  const base = { id: "chatcmpl-up", created: 1, model: "o3-mini" };

  it("tells the reasoning tokens as OpenAI does (completion_tokens_details), whole and streamed, which the AI SDK and LangChain report", async () => {
    const workspace = await workspaceWith({ strategy: "fallback", chain: [{ provider: "openai", model: "o3-mini" }] });
    const fake = fakeUpstreams({
      "openai.test": async (request) => {
        const body = (await request.json()) as { stream?: boolean };
        if (!body.stream) {
          return Response.json({
            ...base,
            object: "chat.completion",
            choices: [{ index: 0, message: { role: "assistant", content: "42" }, finish_reason: "stop" }],
            usage: upstreamUsage,
          });
        }
        const frames = [
          {
            ...base,
            object: "chat.completion.chunk",
            choices: [{ index: 0, delta: { role: "assistant", content: "42" } }],
          },
          { ...base, object: "chat.completion.chunk", choices: [{ index: 0, delta: {}, finish_reason: "stop" }] },
          { ...base, object: "chat.completion.chunk", choices: [], usage: upstreamUsage },
        ];
        return new Response(`${frames.map((frame) => `data: ${JSON.stringify(frame)}\n\n`).join("")}data: [DONE]\n\n`, {
          headers: { "Content-Type": "text/event-stream" },
        });
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    // As the AI SDK's `.chat("o3-mini")` sends it: max_completion_tokens, a developer message.
    const request = {
      model: "o3-mini",
      messages: [
        { role: "developer", content: "Answer briefly." },
        { role: "user", content: "6 times 7?" },
      ],
      max_completion_tokens: 500,
    };
    const whole = await appFetch("/api/v1/llm/chat/completions", workspace.key, request);
    expect(whole.status).toBe(200);
    const completion = (await whole.json()) as { usage: Record<string, unknown> };
    expect(completion.usage).toMatchObject({
      completion_tokens: 90,
      completion_tokens_details: { reasoning_tokens: 64 },
    });

    const streamed = await appFetch("/api/v1/llm/chat/completions", workspace.key, {
      ...request,
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(streamed.status).toBe(200);
    expect(usageChunk(await streamed.text()).usage).toMatchObject({
      completion_tokens: 90,
      completion_tokens_details: { reasoning_tokens: 64 },
    });
  });
});
