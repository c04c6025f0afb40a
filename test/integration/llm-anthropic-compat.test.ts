import type OpenAI from "openai";
import { afterEach, describe, expect, it, vi } from "vitest";
import { BASE, fakeUpstreams, fetcher, sdkAgainstApp, workspaceWith } from "../support/llm.ts";

/**
 * OpenAI requests that Anthropic's Messages API takes only in other terms, sent with the openai SDK through
 * POST /api/v1/llm/chat/completions to a chain of Claude: the fake refuses with a 400 what Anthropic refuses.
 */

afterEach(() => {
  vi.restoreAllMocks();
  sent = [];
  answer = { pieces: ["ok"], stopReason: "end_turn" };
});

const ANTHROPIC = "anthropic.test";

const sdk = sdkAgainstApp;

const claudeChain = (model: string) =>
  workspaceWith({ strategy: "fallback", chain: [{ provider: "anthropic", model }] });

const refusal = (message: string) =>
  Response.json({ type: "error", error: { type: "invalid_request_error", message } }, { status: 400 });

/** The bodies Anthropic was sent, in order. */
let sent: Record<string, unknown>[] = [];

/** What the fake answers: the text's pieces, streamed one delta each (whole: joined), and why it stopped. */
let answer = { pieces: ["ok"], stopReason: "end_turn" };

/** Anthropic's pattern for a tool_use block's id, and so a tool_result's tool_use_id. */
const ANTHROPIC_TOOL_ID = /^[a-zA-Z0-9_-]+$/;

/**
 * Answers `answer`, refusing what Anthropic refuses: a call without a turn, a text block of whitespace alone,
 * tools sharing a name; newer models (Sonnet 4.5, Haiku 4.5, Opus 4.1) take
 * temperature or top_p, not both, no model a stop sequence of whitespace alone, none a max_tokens above
 * its longest answer (Claude 3.5 Haiku's is 8,192), and none a tool call id but of letters, digits, `_` and `-`.
 */
async function anthropicLike(request: Request): Promise<Response> {
  const body = (await request.json()) as Record<string, unknown>;
  sent.push(body);
  for (const [index, message] of (body.messages as { content: Record<string, string>[] }[]).entries()) {
    for (const [part, block] of message.content.entries()) {
      const id = block.type === "tool_use" ? block.id : block.type === "tool_result" ? block.tool_use_id : undefined;
      if (id !== undefined && !ANTHROPIC_TOOL_ID.test(id)) {
        const field = block.type === "tool_use" ? "tool_use.id" : "tool_result.tool_use_id";
        return refusal(`messages.${index}.content.${part}.${field}: String should match pattern '^[a-zA-Z0-9_-]+$'`);
      }
    }
  }
  const messages = body.messages as { content: { type: string; text?: string }[] }[];
  if (messages.length === 0) return refusal("messages: at least one message is required");
  for (const [index, message] of messages.entries()) {
    for (const [part, block] of message.content.entries()) {
      if (block.type === "text" && !block.text?.trim()) {
        return refusal(`messages.${index}.content.${part}.text: text content blocks must contain non-whitespace text`);
      }
    }
  }
  const toolNames = ((body.tools ?? []) as { name: string }[]).map((tool) => tool.name);
  if (new Set(toolNames).size < toolNames.length) return refusal("tools: Tool names must be unique.");
  if (body.temperature !== undefined && body.top_p !== undefined) {
    return refusal("`temperature` and `top_p` cannot both be specified for this model. Please use only one.");
  }
  if ((body.max_tokens as number) > 8_192 && body.model === "claude-3-5-haiku-latest") {
    return refusal(
      `max_tokens: ${body.max_tokens} > 8192, which is the maximum allowed number of output tokens for claude-3-5-haiku-20241022`,
    );
  }
  if ((body.stop_sequences as string[] | undefined)?.some((sequence) => sequence.trim() === "")) {
    return refusal("stop_sequences: each stop sequence must contain non-whitespace");
  }
  const usage = { input_tokens: 10, output_tokens: answer.pieces.length };
  if (!body.stream) {
    return Response.json({
      id: "msg",
      type: "message",
      role: "assistant",
      content: [{ type: "text", text: answer.pieces.join("") }],
      stop_reason: answer.stopReason,
      usage,
    });
  }
  const events = [
    { type: "message_start", message: { id: "msg", usage: { ...usage, output_tokens: 1 } } },
    { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
    ...answer.pieces.map((text) => ({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text } })),
    { type: "content_block_stop", index: 0 },
    { type: "message_delta", delta: { stop_reason: answer.stopReason }, usage: { output_tokens: usage.output_tokens } },
    { type: "message_stop" },
  ];
  return new Response(events.map((event) => `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`).join(""), {
    headers: { "Content-Type": "text/event-stream" },
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

describe("OpenAI's stop sequences on Claude", () => {
  /** The answer's text and finish reason, whole and streamed (the SDK's own assembly of the chunks). */
  async function asked(client: OpenAI, stop: string | string[]) {
    const messages = [{ role: "user" as const, content: "Is this review positive? One word, then why." }];
    const whole = await client.chat.completions.create({ model: "auto", messages, stop });
    const streamed = await client.chat.completions.stream({ model: "auto", messages, stop }).finalChatCompletion();
    return [whole, streamed].map((completion) => ({
      content: completion.choices[0].message.content,
      finish_reason: completion.choices[0].finish_reason,
    }));
  }

  it("stops at a sequence of whitespace alone, which Anthropic refuses, as OpenAI does: the text up to it, finish_reason stop", async () => {
    const workspace = await claudeChain("claude-3-5-haiku-latest");
    vi.spyOn(globalThis, "fetch").mockImplementation(fakeUpstreams({ [ANTHROPIC]: anthropicLike }).impl);
    const client = sdk(workspace.key);
    // The model writes on past the line's end (here to its token limit); the sequence comes across two deltas.
    answer = { pieces: ["Posi", "tive.\r", "\nThe review", " praises it."], stopReason: "max_tokens" };
    expect(await asked(client, "\r\n")).toEqual([
      { content: "Positive.", finish_reason: "stop" },
      { content: "Positive.", finish_reason: "stop" },
    ]);
    // Anthropic is sent the sequences it takes (and stops at them itself, leaving them out); a text that only
    // begins a sequence it was not sent is passed on whole.
    answer = { pieces: ["Positive.\n", "The review praises it. "], stopReason: "stop_sequence" };
    expect(await asked(client, ["\n\n", "END"])).toEqual([
      { content: "Positive.\nThe review praises it. ", finish_reason: "stop" },
      { content: "Positive.\nThe review praises it. ", finish_reason: "stop" },
    ]);
    expect(sent.map((body) => body.stop_sequences)).toEqual([undefined, undefined, ["END"], ["END"]]);
  });
});

describe("OpenAI's tool calls on Claude", () => {
  it("continues a conversation whose tool call ids Anthropic would refuse (another model's, Kimi's functions.name:0), each result still naming its call", async () => {
    const workspace = await claudeChain("claude-sonnet-4-5");
    vi.spyOn(globalThis, "fetch").mockImplementation(fakeUpstreams({ [ANTHROPIC]: anthropicLike }).impl);
    const tools = [{ type: "function" as const, function: { name: "read_file", parameters: { type: "object" } } }];
    // An earlier turn answered by a model that names its calls so (served by a local server, before a fallback to
    // Claude), sent back as OpenAI's SDKs send a conversation: ids as they came.
    const calls = ["functions.read_file:0", "call 1/2", "call_ok-3"].map((id) => ({
      id,
      type: "function" as const,
      function: { name: "read_file", arguments: '{"path":"a"}' },
    }));
    const messages = [
      { role: "user" as const, content: "Read a, three times." },
      { role: "assistant" as const, content: null, tool_calls: calls },
      ...calls.map((call, index) => ({ role: "tool" as const, tool_call_id: call.id, content: `text ${index}` })),
    ];
    const client = sdk(workspace.key);
    const whole = await client.chat.completions.create({ model: "auto", messages, tools });
    expect(whole.choices[0].message.content).toBe("ok");
    const streamed = await client.chat.completions.stream({ model: "auto", messages, tools }).finalChatCompletion();
    expect(streamed.choices[0].message.content).toBe("ok");
    // Each id Anthropic takes, the same for a call and its result; one it took already is sent as it was.
    for (const body of sent) {
      const [asked, answered] = (body.messages as { content: Record<string, string>[] }[]).slice(1);
      const useIds = asked.content.map((block) => block.id);
      expect(useIds.every((id) => ANTHROPIC_TOOL_ID.test(id))).toBe(true);
      expect(new Set(useIds).size).toBe(3);
      expect(useIds[2]).toBe("call_ok-3");
      expect(answered.content.map((block) => block.tool_use_id)).toEqual(useIds);
    }
  });
});

describe("Tools sharing a name, for Claude", () => {
  it("refuses them with 422 naming the repeat, before Claude is called: it refuses them with a 400 after the call was routed", async () => {
    const workspace = await claudeChain("claude-sonnet-4-5");
    vi.spyOn(globalThis, "fetch").mockImplementation(fakeUpstreams({ [ANTHROPIC]: anthropicLike }).impl);
    const post = (path: string, body: unknown) =>
      fetcher(`${BASE}/api/v1/llm/${path}`, {
        method: "POST",
        headers: { ...workspace.headers, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    const chatTool = (name: string) => ({ type: "function", function: { name, parameters: { type: "object" } } });
    const responsesTool = (name: string) => ({ type: "function", name, parameters: { type: "object" } });
    const cases: [string, Record<string, unknown>, string][] = [
      [
        "chat/completions",
        {
          messages: [{ role: "user", content: "Read a." }],
          tools: [chatTool("read_file"), chatTool("write_file"), chatTool("read_file")],
        },
        "tools.2.function.name",
      ],
      [
        "responses",
        { input: "Read a.", tools: [responsesTool("read_file"), responsesTool("read_file")] },
        "tools.1.name",
      ],
    ];
    for (const [path, body, param] of cases) {
      for (const stream of [false, true]) {
        const response = await post(path, { model: "auto", stream, ...body });
        expect(response.status, `${path}, stream ${stream}`).toBe(422);
        const problem = (await response.json()) as Record<string, any>;
        expect(problem.errors).toEqual([{ path: param, message: expect.stringContaining('("read_file")') }]);
        expect(problem.error).toMatchObject({ type: "invalid_request_error", param });
        expect(problem.error.message).toMatch(/tool names must be unique/);
      }
    }
    expect(sent).toEqual([]);
    // The same name in another case is another name, to Anthropic as to OpenAI.
    const completion = await sdk(workspace.key).chat.completions.create({
      model: "auto",
      messages: [{ role: "user", content: "Read a." }],
      tools: [
        { type: "function", function: { name: "read_file", parameters: { type: "object" } } },
        { type: "function", function: { name: "Read_File", parameters: { type: "object" } } },
      ],
    });
    expect(completion.choices[0].message.content).toBe("ok");
    expect(sent.map((body) => (body.tools as { name: string }[]).map((tool) => tool.name))).toEqual([
      ["read_file", "Read_File"],
    ]);
  });
});

describe("A conversation of blank messages, on Claude", () => {
  it("answers it as OpenAI does, sending Anthropic one minimal user turn, not `messages: []` (a 400 no fallback follows)", async () => {
    const workspace = await claudeChain("claude-sonnet-4-5");
    vi.spyOn(globalThis, "fetch").mockImplementation(fakeUpstreams({ [ANTHROPIC]: anthropicLike }).impl);
    const client = sdk(workspace.key);
    const conversations: OpenAI.ChatCompletionMessageParam[][] = [
      [{ role: "user", content: "" }],
      [
        { role: "system", content: "  " },
        { role: "user", content: "\n" },
        { role: "assistant", content: "" },
      ],
    ];
    for (const messages of conversations) {
      const whole = await client.chat.completions.create({ model: "auto", messages });
      expect(whole.choices[0].message.content).toBe("ok");
      const streamed = await client.chat.completions.stream({ model: "auto", messages }).finalChatCompletion();
      expect(streamed.choices[0].message.content).toBe("ok");
    }
    // As the Responses API sends it too.
    const response = await client.responses.create({ model: "auto", input: "" });
    expect(response.output_text).toBe("ok");
    expect(sent).toHaveLength(5);
    for (const body of sent) {
      expect(body.messages).toEqual([{ role: "user", content: [{ type: "text", text: "." }] }]);
      expect(body.system).toBeUndefined();
    }
  });
});

describe("OpenAI's max_tokens on Claude", () => {
  it("serves a limit above the model's longest answer up to that answer, as the fallback of a model that takes it", async () => {
    // GPT-4.1 answers up to 32,768 tokens, Claude 3.5 Haiku 8,192: while OpenAI is down, Claude serves the call.
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [
        { provider: "openai", model: "gpt-4.1" },
        { provider: "anthropic", model: "claude-3-5-haiku-latest" },
      ],
    });
    const openAiDown = () =>
      Response.json(
        { error: { message: "down", type: "server_error" } },
        { status: 500, headers: { "Retry-After": "0" } },
      );
    vi.spyOn(globalThis, "fetch").mockImplementation(
      fakeUpstreams({ [ANTHROPIC]: anthropicLike, "openai.test": openAiDown }).impl,
    );
    const completion = await sdk(workspace.key).chat.completions.create({
      model: "auto",
      messages: [{ role: "user", content: "Write a long story." }],
      max_completion_tokens: 20_000,
    });
    expect(completion.choices[0].message.content).toBe("ok");
    expect(sent.map((body) => body.max_tokens)).toEqual([8_192]);
  });
});
