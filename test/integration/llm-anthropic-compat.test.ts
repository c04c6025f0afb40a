import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import OpenAI from "openai";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app.ts";
import { ANTHROPIC_URL, BASE, fakeUpstreams, workspaceWith } from "../support/llm.ts";

/**
 * OpenAI requests that Anthropic's Messages API takes only in other terms, sent with the openai SDK through
 * POST /api/v1/llm/chat/completions to a chain of Claude: the fake refuses with a 400 what Anthropic refuses.
 */

afterEach(() => {
  vi.restoreAllMocks();
  sent = [];
});

const ANTHROPIC = "anthropic.test";

const sdk = (apiKey: string) =>
  new OpenAI({
    apiKey,
    baseURL: `${BASE}/api/v1/llm`,
    maxRetries: 0,
    fetch: async (url, init) =>
      createApp().fetch(
        new Request(String(url), init),
        { ...env, ANTHROPIC_API_KEY: "ak-test", ANTHROPIC_BASE_URL: ANTHROPIC_URL },
        createExecutionContext(),
      ),
  });

const claudeChain = (model: string) =>
  workspaceWith({ strategy: "fallback", chain: [{ provider: "anthropic", model }] });

const refusal = (message: string) =>
  Response.json({ type: "error", error: { type: "invalid_request_error", message } }, { status: 400 });

/** The bodies Anthropic was sent, in order. */
let sent: Record<string, unknown>[] = [];

/** Answers "ok", refusing what Anthropic refuses: newer models (Sonnet 4.5, Haiku 4.5, Opus 4.1) take temperature or top_p, not both. */
async function anthropicLike(request: Request): Promise<Response> {
  const body = (await request.json()) as Record<string, unknown>;
  sent.push(body);
  if (body.temperature !== undefined && body.top_p !== undefined) {
    return refusal("`temperature` and `top_p` cannot both be specified for this model. Please use only one.");
  }
  return Response.json({
    id: "msg",
    type: "message",
    role: "assistant",
    content: [{ type: "text", text: "ok" }],
    stop_reason: "end_turn",
    usage: { input_tokens: 10, output_tokens: 1 },
  });
}

describe("OpenAI's sampling settings on Claude", () => {
  it("answers a request that sets both temperature and top_p, as OpenAI does, sending Anthropic the one that changes sampling", async () => {
    const workspace = await claudeChain("claude-sonnet-4-5");
    const fake = fakeUpstreams({ [ANTHROPIC]: anthropicLike });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const messages = [{ role: "user" as const, content: "hi" }];
    const client = sdk(workspace.key);
    const both = await client.chat.completions.create({ model: "auto", messages, temperature: 0.2, top_p: 0.9 });
    expect(both.choices[0].message.content).toBe("ok");
    // top_p 1 restricts nothing, nor does temperature 1 (Anthropic's default): the other one is what was asked.
    await client.chat.completions.create({ model: "auto", messages, temperature: 0.2, top_p: 1 });
    await client.chat.completions.create({ model: "auto", messages, temperature: 1, top_p: 0.5 });
    expect(sent.map(({ temperature, top_p }) => ({ temperature, top_p }))).toEqual([
      { temperature: 0.2, top_p: undefined },
      { temperature: 0.2, top_p: undefined },
      { temperature: undefined, top_p: 0.5 },
    ]);
  });
});
