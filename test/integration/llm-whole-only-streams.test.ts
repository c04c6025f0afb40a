import { afterEach, describe, expect, it, vi } from "vitest";
import { OpenAiCompatibleAdapter } from "../../src/llm/adapters/openai.ts";
import type { StreamEvent } from "../../src/llm/provider.ts";
import { fakeUpstreams, OPENAI_URL, sdkAgainstApp, workspaceWith } from "../support/llm.ts";

/**
 * OpenAI lets an unverified organization call its newest reasoning models (o3, gpt-5) but not stream them:
 * a stream is refused with a 400 naming `stream`, while the same call whole is answered.
 */

afterEach(() => vi.restoreAllMocks());

const OPENAI = "openai.test";

const verifyToStream = () =>
  Response.json(
    {
      error: {
        message:
          "Your organization must be verified to stream this model. Please go to: https://platform.openai.com/settings/organization/general and click on Verify Organization.",
        type: "invalid_request_error",
        param: "stream",
        code: "unsupported_value",
      },
    },
    { status: 400 },
  );

const wholeAnswer = (message: Record<string, unknown> = { content: "Parsed." }, finishReason = "stop") =>
  Response.json({
    id: "chatcmpl-whole",
    object: "chat.completion",
    choices: [{ index: 0, message: { role: "assistant", ...message }, finish_reason: finishReason }],
    usage: { prompt_tokens: 20, completion_tokens: 300, total_tokens: 320 },
  });

describe("a model the deployment's organization may call but not stream", () => {
  it("is asked whole and streamed to the caller in one piece, with its usage, not refused with a 400", async () => {
    const workspace = await workspaceWith({ strategy: "fallback", chain: [{ provider: "openai", model: "gpt-5" }] });
    const sent: { stream: unknown }[] = [];
    const fake = fakeUpstreams({
      [OPENAI]: async (request) => {
        const body = (await request.json()) as { stream?: unknown };
        sent.push({ stream: body.stream });
        return body.stream ? verifyToStream() : wholeAnswer();
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const sdk = sdkAgainstApp(workspace.key);
    for (const round of [1, 2]) {
      const stream = await sdk.chat.completions.create({
        model: "openai:gpt-5",
        messages: [{ role: "user", content: `Parse it (${round}).` }],
        stream: true,
        stream_options: { include_usage: true },
      });
      let text = "";
      let finish: string | null = null;
      let usage: unknown;
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta?.content ?? "";
        finish = chunk.choices[0]?.finish_reason ?? finish;
        if (chunk.usage) usage = chunk.usage;
      }
      expect(text).toBe("Parsed.");
      expect(finish).toBe("stop");
      expect(usage).toMatchObject({ prompt_tokens: 20, completion_tokens: 300, total_tokens: 320 });
    }
    // Each refused stream was asked again whole (an isolate that served one asks the next whole at once).
    const asked = sent.map((request) => (request.stream ? "stream" : "whole")).join(",");
    expect(["stream,whole,stream,whole", "stream,whole,whole"]).toContain(asked);
  });

  it("tells a tool call in the one piece too, and asks the model's later streams whole at once", async () => {
    const sent: unknown[] = [];
    const toolCall = { id: "call_1", type: "function", function: { name: "read_file", arguments: '{"path":"a.ts"}' } };
    const adapter = new OpenAiCompatibleAdapter({
      name: "openai",
      baseUrl: OPENAI_URL,
      apiKey: "sk-test",
      fetch: async (_url, init) => {
        const body = JSON.parse(String(init?.body)) as { stream?: boolean };
        sent.push(Boolean(body.stream));
        return body.stream ? verifyToStream() : wholeAnswer({ content: null, tool_calls: [toolCall] }, "tool_calls");
      },
    });
    const call = {
      model: "o3",
      messages: [{ role: "user" as const, content: "Read a.ts" }],
      signal: AbortSignal.timeout(5_000),
    };
    for (let round = 0; round < 2; round++) {
      const events: StreamEvent[] = [];
      for await (const event of adapter.stream(call)) events.push(event);
      expect(events[0]).toEqual({ type: "delta", tool_calls: [{ index: 0, ...toolCall }] });
      expect(events[1]).toMatchObject({ type: "done", result: { finish_reason: "tool_calls" } });
    }
    expect(sent).toEqual([true, false, false]);
  });

  it("reads a whole JSON answer to a stream it asked for (a server that ignores `stream`) as that answer, in one piece", async () => {
    const adapter = new OpenAiCompatibleAdapter({
      name: "local",
      baseUrl: "http://127.0.0.1:9/v1",
      fetch: async () => wholeAnswer(),
    });
    const call = {
      model: "qwen3",
      messages: [{ role: "user" as const, content: "Parse it." }],
      signal: AbortSignal.timeout(5_000),
    };
    const events: StreamEvent[] = [];
    for await (const event of adapter.stream(call)) events.push(event);
    expect(events).toEqual([
      { type: "delta", content: "Parsed." },
      {
        type: "done",
        result: expect.objectContaining({
          finish_reason: "stop",
          usage: expect.objectContaining({ completion_tokens: 300 }),
        }),
      },
    ]);
  });
});
