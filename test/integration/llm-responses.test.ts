import { env } from "cloudflare:workers";
import OpenAI from "openai";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  BASE,
  fakeUpstreams,
  fetcher,
  openAiCompletion,
  sdkAgainstApp,
  usageWhenWritten,
  workspaceWith,
} from "../support/llm.ts";
import type { TestWorkspace } from "../support/workspaces.ts";

/**
 * POST /api/v1/llm/responses (OpenAI's Responses API) through the router, with the openai SDK and raw. What is
 * stored, and continued, is test/integration/llm-responses-stored.test.ts's.
 */

afterEach(() => vi.restoreAllMocks());

function postResponses(headers: Record<string, string>, body: unknown): Promise<Response> {
  return fetcher(`${BASE}/api/v1/llm/responses`, {
    method: "POST",
    headers: { ...headers, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

/** The SSE events of a Responses stream, checking each frame's `event:` line names its data's type. */
async function sseEvents(response: Response): Promise<Record<string, any>[]> {
  const frames = (await response.text()).split("\n\n").filter(Boolean);
  return frames.map((frame) => {
    const [eventLine, dataLine, ...rest] = frame.split("\n");
    expect(rest).toEqual([]);
    expect(eventLine).toMatch(/^event: /);
    expect(dataLine).toMatch(/^data: /);
    const data = JSON.parse(dataLine.slice("data: ".length)) as Record<string, any>;
    expect(eventLine.slice("event: ".length)).toBe(data.type);
    return data;
  });
}

const openAiChain = { strategy: "fallback" as const, chain: [{ provider: "openai", model: "gpt-4o-mini" }] };

/** What the fake OpenAI was sent, as JSON: the chat request the Responses request became. */
async function sent(requests: Request[] | undefined, index = -1): Promise<Record<string, any>> {
  return (await requests!.at(index)!.clone().json()) as Record<string, any>;
}

/** The workspace's usage rows, once written (they land just after the answer). */
async function usageRows(workspace: TestWorkspace) {
  await usageWhenWritten(workspace);
  const { results } = await env.DB.prepare(
    "SELECT charge_key, provider, model, prompt_tokens, completion_tokens, cost_usd, estimated FROM usage_records WHERE workspace_id = ?",
  )
    .bind(workspace.id)
    .all<Record<string, any>>();
  return results;
}

describe("POST /api/v1/llm/responses, whole answers", () => {
  it("answers a response object with output, usage and who served it, charged once as one usage row", async () => {
    const workspace = await workspaceWith(openAiChain);
    const fake = fakeUpstreams({
      "openai.test": () => openAiCompletion("Hello there", { prompt_tokens: 1_000, completion_tokens: 500 }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const client = sdkAgainstApp(workspace.key);
    const { data, response } = await client.responses
      .create({
        model: "gpt-4o-mini",
        instructions: "Be brief.",
        input: [
          { role: "developer", content: "Answer in English." },
          { role: "user", content: [{ type: "input_text", text: "Say hi" }] },
        ],
        max_output_tokens: 50,
        temperature: 0.2,
        store: true,
        metadata: { run: "1" },
      })
      .withResponse();
    expect(response.headers.get("X-LLM-Provider")).toBe("openai");
    expect(response.headers.get("X-LLM-Simulated")).toBe("false");
    expect(data.id).toMatch(/^resp_/);
    expect(data).toMatchObject({
      object: "response",
      status: "completed",
      incomplete_details: null,
      error: null,
      model: "gpt-4o-mini",
      instructions: "Be brief.",
      max_output_tokens: 50,
      temperature: 0.2,
      metadata: { run: "1" },
      store: true,
      output: [
        {
          type: "message",
          role: "assistant",
          status: "completed",
          content: [{ type: "output_text", text: "Hello there", annotations: [] }],
        },
      ],
      usage: {
        input_tokens: 1_000,
        input_tokens_details: { cached_tokens: 0 },
        output_tokens: 500,
        output_tokens_details: { reasoning_tokens: 0 },
        total_tokens: 1_500,
      },
    });
    // Computed by the SDK from `output`, as OpenAI sends none.
    expect(data.output_text).toBe("Hello there");
    expect(data.output[0]).toHaveProperty("id", expect.stringMatching(/^msg_/));

    const upstream = await sent(fake.calls["openai.test"]);
    expect(upstream.messages).toEqual([
      { role: "system", content: "Be brief." },
      { role: "system", content: "Answer in English." },
      { role: "user", content: "Say hi" },
    ]);
    expect(upstream).toMatchObject({ model: "gpt-4o-mini", max_completion_tokens: 50, temperature: 0.2 });
    expect(upstream).not.toHaveProperty("metadata");
    expect(upstream).not.toHaveProperty("store");

    const rows = await usageRows(workspace);
    // gpt-4o-mini: $0.15 in, $0.60 out per million.
    expect(rows).toEqual([
      {
        charge_key: expect.stringMatching(/^api:/),
        provider: "openai",
        model: "gpt-4o-mini",
        prompt_tokens: 1_000,
        completion_tokens: 500,
        cost_usd: 0.00045,
        estimated: 0,
      },
    ]);
    expect((data as unknown as { x_mgx: Record<string, unknown> }).x_mgx).toMatchObject({
      provider: "openai",
      cost_usd: 0.00045,
      attempts: 1,
    });
  });

  it("round-trips a function tool: a function_call item, then its function_call_output sent back", async () => {
    const workspace = await workspaceWith(openAiChain);
    const fake = fakeUpstreams({
      "openai.test": (_request, call) =>
        call === 1
          ? Response.json({
              id: "chatcmpl-up",
              object: "chat.completion",
              choices: [
                {
                  index: 0,
                  message: {
                    role: "assistant",
                    content: null,
                    tool_calls: [
                      {
                        id: "call_up1",
                        type: "function",
                        function: { name: "read_file", arguments: '{"path":"a.txt"}' },
                      },
                    ],
                  },
                  finish_reason: "tool_calls",
                },
              ],
              usage: { prompt_tokens: 30, completion_tokens: 8, total_tokens: 38 },
            })
          : openAiCompletion("a.txt says hello"),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const client = sdkAgainstApp(workspace.key);
    const parameters = { type: "object", properties: { path: { type: "string" } }, required: ["path"] };
    const tools: OpenAI.Responses.FunctionTool[] = [
      { type: "function", name: "read_file", description: "Reads a file", parameters, strict: false },
    ];
    const input: OpenAI.Responses.ResponseInput = [{ role: "user", content: "Read a.txt" }];
    const first = await client.responses.create({ model: "gpt-4o-mini", input, tools, tool_choice: "auto" });
    expect(first.status).toBe("completed");
    expect(first.output).toEqual([
      {
        type: "function_call",
        id: expect.stringMatching(/^fc_/),
        call_id: "call_up1",
        name: "read_file",
        arguments: '{"path":"a.txt"}',
        status: "completed",
      },
    ]);
    expect(first.output_text).toBe("");
    expect(await sent(fake.calls["openai.test"], 0)).toMatchObject({
      tools: [
        {
          type: "function",
          function: { name: "read_file", description: "Reads a file", parameters, strict: false },
        },
      ],
      tool_choice: "auto",
    });

    const second = await client.responses.create({
      model: "gpt-4o-mini",
      input: [
        ...input,
        ...(first.output as OpenAI.Responses.ResponseInputItem[]),
        { type: "function_call_output", call_id: "call_up1", output: "hello" },
      ],
      tools,
    });
    expect(second.output_text).toBe("a.txt says hello");
    expect((await sent(fake.calls["openai.test"], 1)).messages).toEqual([
      { role: "user", content: "Read a.txt" },
      {
        role: "assistant",
        content: null,
        tool_calls: [
          { id: "call_up1", type: "function", function: { name: "read_file", arguments: '{"path":"a.txt"}' } },
        ],
      },
      { role: "tool", tool_call_id: "call_up1", content: "hello" },
    ]);
  });

  it("asks for JSON by text.format json_schema, as chat completions' response_format", async () => {
    const workspace = await workspaceWith(openAiChain);
    const fake = fakeUpstreams({ "openai.test": () => openAiCompletion('{"city":"Paris"}') });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const schema = { type: "object", properties: { city: { type: "string" } }, required: ["city"] };
    const response = await sdkAgainstApp(workspace.key).responses.create({
      model: "gpt-4o-mini",
      input: "Capital of France, as JSON",
      text: { format: { type: "json_schema", name: "capital", schema, strict: true } },
    });
    expect(JSON.parse(response.output_text)).toEqual({ city: "Paris" });
    expect(response.text?.format).toMatchObject({ type: "json_schema", name: "capital" });
    expect((await sent(fake.calls["openai.test"])).response_format).toEqual({
      type: "json_schema",
      json_schema: { name: "capital", schema, strict: true },
    });
  });

  it("is incomplete, reason max_output_tokens, when the answer was cut at its length", async () => {
    const workspace = await workspaceWith(null);
    const response = await postResponses(workspace.headers, { input: "Tell a long story", max_output_tokens: 5 });
    expect(response.status).toBe(200);
    expect(response.headers.get("X-LLM-Simulated")).toBe("true");
    const body = (await response.json()) as Record<string, any>;
    expect(body).toMatchObject({
      status: "incomplete",
      incomplete_details: { reason: "max_output_tokens" },
      output: [{ type: "message", status: "incomplete" }],
      usage: { output_tokens: 5 },
    });
    expect(body.output[0].content[0].text.split(" ")).toHaveLength(5);
  });

  it("tells a spent budget as OpenAI's insufficient_quota, which the SDK does not retry", async () => {
    // The first call spends the 1-token day (its prompt alone goes over); the next is refused.
    const spent = await workspaceWith(null, {
      daily_tokens: 1,
      monthly_tokens: null,
      daily_cost_usd: null,
      monthly_cost_usd: null,
    });
    expect((await postResponses(spent.headers, { input: "x" })).status).toBe(200);
    const refused = await postResponses(spent.headers, { input: "x" });
    expect(refused.status).toBe(429);
    expect(refused.headers.get("Content-Type")).toBe("application/problem+json");
    expect(refused.headers.get("X-Should-Retry")).toBe("false");
    const problem = (await refused.json()) as Record<string, any>;
    expect(problem).toMatchObject({
      reason: "budget_exhausted",
      error: { type: "insufficient_quota", code: "insufficient_quota" },
    });
    const error = await sdkAgainstApp(spent.key)
      .responses.create({ input: "x" })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.RateLimitError);
    expect((error as Error).message).toMatch(/^429 The daily token budget is exhausted/);
  });
});

describe("POST /api/v1/llm/responses, what it refuses", () => {
  it("refuses conversation objects, stored prompts, hosted tools or images with 422 naming the param", async () => {
    const workspace = await workspaceWith(null);
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ conversation: "conv_1" }, "conversation", /previous_response_id/],
      [{ background: true }, "background", /background/],
      [{ prompt: { id: "pmpt_1" } }, "prompt", /stored prompts/],
      [{ tools: [{ type: "web_search" }] }, "tools.0.type", /only function tools/],
      [
        { tools: [{ type: "function", name: "a", parameters: {} }, { type: "code_interpreter" }] },
        "tools.1.type",
        /hosted tools/,
      ],
      [{ tools: [{ type: "function", name: "no spaces" }] }, "tools.0.name", /letters, digits/],
      [
        { input: [{ role: "user", content: [{ type: "input_image", image_url: "https://x.test/a.png" }] }] },
        "input.0.content",
        /images/,
      ],
      [{ input: [{ type: "item_reference" }] }, "input.0.id", /string/],
      [{ previous_response_id: 42 }, "previous_response_id", /string/],
      [{ input: [{ type: "web_search_call", id: "ws_1" }] }, "input.0.type", /hosted tools/],
      [{ top_logprobs: 5 }, "top_logprobs", /log probabilities/],
      [{ tool_choice: { type: "web_search_preview" } }, "tool_choice", /hosted tools/],
      [{ tool_choice: "required" }, "tool_choice", /needs tools/],
      [{ input: undefined }, "input", /is required: the user's text, or the conversation/],
      [{ input: 42 }, "input", /must be a string or a list of input items/],
    ];
    for (const [extra, param, message] of cases) {
      const response = await postResponses(workspace.headers, { input: "hi", ...extra });
      expect(response.status, JSON.stringify(extra)).toBe(422);
      expect(response.headers.get("Content-Type")).toBe("application/problem+json");
      const problem = (await response.json()) as Record<string, any>;
      expect(problem.error, JSON.stringify(extra)).toMatchObject({ type: "invalid_request_error", param });
      expect(problem.error.message).toMatch(message);
    }
    // Said as the SDK reports it.
    const error = await sdkAgainstApp(workspace.key)
      .responses.create({ input: "hi", conversation: "conv_1" })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.UnprocessableEntityError);
    expect(error).toMatchObject({ param: "conversation" });
  });

  it("refuses an input item whose type names a property every object has with 422, not a 500", async () => {
    const workspace = await workspaceWith(null);
    for (const type of ["constructor", "toString", "__proto__", "hasOwnProperty"]) {
      const response = await postResponses(workspace.headers, { input: [{ type, role: "user", content: "hi" }] });
      expect(response.status, type).toBe(422);
      const problem = (await response.json()) as Record<string, any>;
      expect(problem.error, type).toMatchObject({ type: "invalid_request_error", param: "input.0.type" });
      expect(problem.error.message, type).toMatch(/must be a message/);
    }
  });

  it("refuses a field it keeps nested deeper than the answer can be written or stored with 422, before any call: not a 500 after a charged one", async () => {
    const workspace = await workspaceWith(null);
    // Written as text: JSON.stringify of so deep a value overflows the stack here too.
    const nested = (levels: number) =>
      `${'{"type":"object","properties":{"a":'.repeat(levels)}{}${"}}".repeat(levels)}`;
    const deep = nested(20_000);
    const cases: [string, string][] = [
      [`"tools":[{"type":"function","name":"a","parameters":${deep}}]`, "tools"],
      [`"tools":[{"type":"function","name":"a","x-origin":${deep}}]`, "tools"],
      [
        `"tools":[{"type":"function","name":"a"}],"tool_choice":{"type":"function","name":"a","x":${deep}}`,
        "tool_choice",
      ],
      [`"text":{"format":{"type":"json_schema","name":"a","schema":${deep}}}`, "text"],
      // Written, but too deep for D1's JSON functions (1,000 levels): answered unstored, an error logged.
      [`"input":[{"role":"user","content":"hi","x-trace":${nested(2_500)}}]`, "input"],
    ];
    for (const [fields, param] of cases) {
      for (const stream of [false, true]) {
        const response = await fetcher(`${BASE}/api/v1/llm/responses`, {
          method: "POST",
          headers: { ...workspace.headers, "Content-Type": "application/json" },
          body: `{"model":"auto",${fields.startsWith('"input"') ? "" : '"input":"hi",'}"stream":${stream},${fields}}`,
        });
        expect(response.status, `${fields.slice(0, 60)}, stream ${stream}`).toBe(422);
        expect(response.headers.get("Content-Type")).toBe("application/problem+json");
        const problem = (await response.json()) as Record<string, any>;
        expect(problem.errors).toEqual([
          { path: param, message: expect.stringMatching(/nested more than 100 levels deep/) },
        ]);
        expect(problem.error).toMatchObject({ type: "invalid_request_error", param });
      }
    }
    // As deep as real schemas go is answered, echoed and stored.
    const answered = await fetcher(`${BASE}/api/v1/llm/responses`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: `{"model":"auto","input":"hi","tools":[{"type":"function","name":"a","parameters":${nested(40)}}]}`,
    });
    expect(answered.status).toBe(200);
    const response = (await answered.json()) as Record<string, any>;
    expect(response.store).toBe(true);
    expect(response.tools[0].parameters.properties.a.type).toBe("object");
    // Refused before any call: the one answered call is the only one charged.
    expect(await usageRows(workspace)).toHaveLength(1);
  });

  it("refuses an input item id with a lone surrogate with 422: stored so, input_items listed it and item_reference never found it", async () => {
    const workspace = await workspaceWith(null);
    for (const item of [
      { role: "user", content: "hi", id: "item_\ud800" },
      { type: "item_reference", id: "msg_\udfff" },
    ]) {
      const response = await postResponses(workspace.headers, { input: [item] });
      expect(response.status, JSON.stringify(item)).toBe(422);
      const problem = (await response.json()) as Record<string, any>;
      expect(problem.errors).toEqual([{ path: "input.0.id", message: expect.stringContaining("well-formed Unicode") }]);
      expect(problem.error).toMatchObject({ type: "invalid_request_error", param: "input.0.id" });
    }
    // A character outside the BMP is a whole surrogate pair: stored, listed and referred to as sent.
    const kept = (await (
      await postResponses(workspace.headers, { input: [{ role: "user", content: "hi", id: "item_\u{1F600}" }] })
    ).json()) as Record<string, any>;
    const items = (await (
      await fetcher(`${BASE}/api/v1/llm/responses/${kept.id}/input_items`, { headers: workspace.headers })
    ).json()) as Record<string, any>;
    expect(items.data.map((item: { id: string }) => item.id)).toEqual(["item_\u{1F600}"]);
    const referred = await postResponses(workspace.headers, {
      input: [{ type: "item_reference", id: "item_\u{1F600}" }],
    });
    expect(referred.status).toBe(200);
  });

  it("refuses an input item id longer than 256 characters with 422: stored so, neither input_items' after nor an item_reference could name it", async () => {
    const workspace = await workspaceWith(null);
    const long = `msg_${"a".repeat(253)}`;
    for (const item of [
      { role: "user", content: "hi", id: long },
      { type: "function_call_output", call_id: "call_1", output: "{}", id: long },
    ]) {
      const response = await postResponses(workspace.headers, { input: [{ role: "user", content: "go" }, item] });
      expect(response.status, JSON.stringify(item).slice(0, 60)).toBe(422);
      const problem = (await response.json()) as Record<string, any>;
      expect(problem.errors).toEqual([
        { path: "input.1.id", message: expect.stringContaining("at most 256 characters") },
      ]);
      expect(problem.error).toMatchObject({ type: "invalid_request_error", param: "input.1.id" });
    }
    // One of 256 is stored, listed after, and referred to, as sent.
    const id = long.slice(0, 256);
    const kept = (await (
      await postResponses(workspace.headers, {
        input: [
          { role: "user", content: "hi", id },
          { role: "user", content: "again", id: "msg_2" },
        ],
      })
    ).json()) as Record<string, any>;
    const after = await fetcher(
      `${BASE}/api/v1/llm/responses/${kept.id}/input_items?order=asc&after=${encodeURIComponent(id)}`,
      { headers: workspace.headers },
    );
    expect(after.status).toBe(200);
    expect(((await after.json()) as Record<string, any>).data.map((item: { id: string }) => item.id)).toEqual([
      "msg_2",
    ]);
    const referred = await postResponses(workspace.headers, { input: [{ type: "item_reference", id }] });
    expect(referred.status).toBe(200);
  });

  it("accepts store, background: false and the fields it ignores", async () => {
    const workspace = await workspaceWith(null);
    for (const extra of [
      { store: false },
      { store: true, background: false, previous_response_id: null },
      { truncation: "auto", include: ["reasoning.encrypted_content"], reasoning: { effort: "low", summary: "auto" } },
    ]) {
      const response = await postResponses(workspace.headers, { input: "hi", ...extra });
      expect(response.status, JSON.stringify(extra)).toBe(200);
      expect(((await response.json()) as { status: string }).status).toBe("completed");
    }
  });

  it("answers GET, DELETE and input_items of a response never stored 404 as OpenAI words it", async () => {
    const workspace = await workspaceWith(null);
    for (const [method, path] of [
      ["GET", "resp_123"],
      ["DELETE", "resp_123"],
      ["GET", "resp_123/input_items"],
    ]) {
      const response = await fetcher(`${BASE}/api/v1/llm/responses/${path}`, { method, headers: workspace.headers });
      expect(response.status, method).toBe(404);
      const problem = (await response.json()) as { error: { message: string; type: string } };
      expect(problem.error.type).toBe("invalid_request_error");
      expect(problem.error.message).toBe("Response with id 'resp_123' not found.");
    }
    const error = await sdkAgainstApp(workspace.key)
      .responses.retrieve("resp_123")
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.NotFoundError);
    // Only background responses can be cancelled, and none is offered.
    const cancelled = await sdkAgainstApp(workspace.key)
      .responses.cancel("resp_123")
      .catch((caught: unknown) => caught);
    expect(cancelled).toBeInstanceOf(OpenAI.BadRequestError);
    expect((cancelled as Error).message).toMatch(/^400 Only background responses can be cancelled/);
  });

  it("answers the SDK's token count and compaction 404 saying they are not offered, not that nothing is stored", async () => {
    const workspace = await workspaceWith(null);
    const sdk = sdkAgainstApp(workspace.key);
    const counted = await sdk.responses.inputTokens.count({ input: "hi" }).catch((caught: unknown) => caught);
    expect(counted).toBeInstanceOf(OpenAI.NotFoundError);
    expect((counted as Error).message).toMatch(/^404 Counting input tokens is not offered here/);
    const compacted = await sdk.responses.compact({ model: "auto", input: "hi" }).catch((caught: unknown) => caught);
    expect(compacted).toBeInstanceOf(OpenAI.NotFoundError);
    expect((compacted as Error).message).toMatch(/^404 Compacting a conversation is not offered here/);
  });

  it("asks for the caller's credentials, and the tasks:write scope", async () => {
    const response = await fetcher(`${BASE}/api/v1/llm/responses`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ input: "hi" }),
    });
    expect(response.status).toBe(401);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe("invalid_api_key");
  });
});

describe("POST /api/v1/llm/responses, streamed", () => {
  it("streams OpenAI's semantic events in order, numbered from 0, the text in deltas", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "simulated", model: "sim-1?stream_chunks=4" }],
    });
    const response = await postResponses(workspace.headers, { input: "Stream please", stream: true });
    expect(response.status).toBe(200);
    expect(response.headers.get("Content-Type")).toContain("text/event-stream");
    expect(response.headers.get("X-LLM-Provider")).toBe("simulated");
    const events = await sseEvents(response);
    expect(events.map((event) => event.sequence_number)).toEqual(events.map((_, index) => index));
    expect(events.map((event) => event.type)).toEqual([
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.content_part.added",
      ...Array(4).fill("response.output_text.delta"),
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.completed",
    ]);
    const [created] = events;
    expect(created.response).toMatchObject({ object: "response", status: "in_progress", output: [], usage: null });
    const text = events
      .filter((event) => event.type === "response.output_text.delta")
      .map((event) => event.delta)
      .join("");
    expect(text.split(" ")).toHaveLength(24);
    const itemId = events[2].item.id;
    expect(events.slice(2, -1).every((event) => (event.item_id ?? event.item.id) === itemId)).toBe(true);
    expect(events.at(-4)).toMatchObject({ type: "response.output_text.done", text });
    const completed = events.at(-1)!.response;
    expect(completed).toMatchObject({
      id: created.response.id,
      status: "completed",
      output: [{ type: "message", id: itemId, status: "completed", content: [{ type: "output_text", text }] }],
      usage: { output_tokens: 24 },
    });
    expect(completed.usage.total_tokens).toBe(completed.usage.input_tokens + 24);
  });

  it("streams function calls, which the SDK's responses.stream() rebuilds in finalResponse()", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "simulated", model: "sim-1?tool_calls=2" }],
    });
    const tools = [
      {
        type: "function" as const,
        name: "read_file",
        parameters: { type: "object", properties: { path: { type: "string" } }, required: ["path"] },
        strict: false,
      },
    ];
    const raw = await sseEvents(await postResponses(workspace.headers, { input: "Read", tools, stream: true }));
    // Each call done before the next is added, as OpenAI streams its items.
    expect(raw.map((event) => event.type)).toEqual([
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.function_call_arguments.delta",
      "response.function_call_arguments.done",
      "response.output_item.done",
      "response.output_item.added",
      "response.function_call_arguments.delta",
      "response.function_call_arguments.done",
      "response.output_item.done",
      "response.completed",
    ]);

    const stream = sdkAgainstApp(workspace.key).responses.stream({ input: "Read", tools });
    let argumentDeltas = "";
    stream.on("response.function_call_arguments.delta", (event) => {
      argumentDeltas += event.delta;
    });
    const final = await stream.finalResponse();
    expect(final.status).toBe("completed");
    expect(final.output).toHaveLength(2);
    for (const item of final.output) {
      expect(item).toMatchObject({ type: "function_call", name: "read_file", status: "completed" });
      expect(JSON.parse((item as OpenAI.Responses.ResponseFunctionToolCall).arguments)).toEqual({
        path: "[simulated]",
      });
    }
    expect(argumentDeltas).toBe(final.output.map((item) => (item as { arguments: string }).arguments).join(""));
  });

  it("closes each item before the next, as OpenAI does: Claude's sentence, then each call when its input ends", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "anthropic", model: "claude-3-5-haiku-latest" }],
    });
    const block = (index: number, content_block: object, deltas: object[]) => [
      { type: "content_block_start", index, content_block },
      ...deltas.map((delta) => ({ type: "content_block_delta", index, delta })),
      { type: "content_block_stop", index },
    ];
    const call = (index: number, id: string, pieces: string[]) =>
      block(
        index,
        { type: "tool_use", id, name: "read_file", input: {} },
        pieces.map((partial_json) => ({ type: "input_json_delta", partial_json })),
      );
    const answer = (stop_reason: string) =>
      [
        { type: "message_start", message: { usage: { input_tokens: 10, output_tokens: 1 } } },
        ...block(0, { type: "text", text: "" }, [{ type: "text_delta", text: "Reading both." }]),
        ...call(1, "toolu_a", ["", '{"path":', '"a.txt"}']),
        ...call(2, "toolu_b", ['{"path":"b']),
        { type: "message_delta", delta: { stop_reason }, usage: { output_tokens: 30 } },
        { type: "message_stop" },
      ]
        .map((data) => `event: ${data.type}\ndata: ${JSON.stringify(data)}\n\n`)
        .join("");
    const fake = fakeUpstreams({
      "anthropic.test": (_request, call) =>
        new Response(answer(call === 1 ? "tool_use" : "max_tokens"), {
          headers: { "Content-Type": "text/event-stream" },
        }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const tools: OpenAI.Responses.FunctionTool[] = [
      { type: "function", name: "read_file", parameters: { type: "object" }, strict: false },
    ];
    // Anthropic is configured for the SDK's app (not for postResponses'); its events as they came.
    const sdk = sdkAgainstApp(workspace.key);
    const eventsOf = async () => {
      const events: Record<string, any>[] = [];
      for await (const event of await sdk.responses.create({ input: "Read", tools, stream: true })) events.push(event);
      return events;
    };
    const events = await eventsOf();
    expect(events.slice(2).map((event) => `${event.type} ${event.output_index}`)).toEqual([
      "response.output_item.added 0",
      "response.content_part.added 0",
      "response.output_text.delta 0",
      "response.output_text.done 0",
      "response.content_part.done 0",
      "response.output_item.done 0",
      "response.output_item.added 1",
      "response.function_call_arguments.delta 1",
      "response.function_call_arguments.delta 1",
      "response.function_call_arguments.done 1",
      "response.output_item.done 1",
      "response.output_item.added 2",
      "response.function_call_arguments.delta 2",
      "response.function_call_arguments.done 2",
      "response.output_item.done 2",
      "response.completed undefined",
    ]);
    expect(events.at(-1)!.response.output).toMatchObject([
      { type: "message", status: "completed", content: [{ text: "Reading both." }] },
      { type: "function_call", call_id: "toolu_a", arguments: '{"path":"a.txt"}', status: "completed" },
      { type: "function_call", call_id: "toolu_b", arguments: '{"path":"b', status: "completed" },
    ]);

    // Cut at its length, the answer's last item is the one cut; those before it were done, whole or streamed.
    const cut = await eventsOf();
    const statuses = (output: { status: string }[]) => output.map((item) => item.status);
    expect(cut.filter((event) => event.type === "response.output_item.done").map((event) => event.item.status)).toEqual(
      ["completed", "completed", "incomplete"],
    );
    expect(statuses(cut.at(-1)!.response.output)).toEqual(["completed", "completed", "incomplete"]);
  });

  it("is read by the SDK's responses.stream(): text deltas, then finalResponse() with output_text and usage", async () => {
    const workspace = await workspaceWith(null);
    const stream = sdkAgainstApp(workspace.key).responses.stream({ input: "Stream please", max_output_tokens: 100 });
    let deltas = "";
    stream.on("response.output_text.delta", (event) => {
      deltas += event.delta;
    });
    const final = await stream.finalResponse();
    expect(final.status).toBe("completed");
    expect(final.output_text).toBe(deltas);
    expect(deltas.split(" ")).toHaveLength(24);
    expect(final.usage).toMatchObject({ output_tokens: 24 });
  });

  it("ends response.incomplete when the answer was cut at max_output_tokens", async () => {
    const workspace = await workspaceWith(null);
    const events = await sseEvents(
      await postResponses(workspace.headers, { input: "long", max_output_tokens: 3, stream: true }),
    );
    expect(events.at(-1)).toMatchObject({
      type: "response.incomplete",
      response: {
        status: "incomplete",
        incomplete_details: { reason: "max_output_tokens" },
        usage: { output_tokens: 3 },
      },
    });
    expect(events.at(-2)).toMatchObject({ type: "response.output_item.done", item: { status: "incomplete" } });
  });

  it("stops the provider's stream when the client leaves mid-answer, charged once, estimated", async () => {
    const workspace = await workspaceWith(openAiChain);
    let upstreamAborted = false;
    const chunk = {
      id: "chatcmpl-up",
      object: "chat.completion.chunk",
      created: 1,
      model: "gpt-4o-mini",
      choices: [{ index: 0, delta: { role: "assistant", content: "Hello there friend" }, finish_reason: null }],
    };
    const fake = fakeUpstreams({
      // One delta, then nothing until the request is aborted.
      "openai.test": (request) => {
        request.signal.addEventListener("abort", () => {
          upstreamAborted = true;
        });
        const body = new ReadableStream<Uint8Array>({
          start(controller) {
            controller.enqueue(new TextEncoder().encode(`data: ${JSON.stringify(chunk)}\n\n`));
          },
        });
        return new Response(body, { headers: { "Content-Type": "text/event-stream" } });
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const stream = await sdkAgainstApp(workspace.key).responses.create({ input: "Say hello", stream: true });
    for await (const event of stream) {
      if (event.type === "response.output_text.delta") break; // The client goes away.
    }
    await vi.waitFor(() => expect(upstreamAborted).toBe(true), { timeout: 5_000, interval: 20 });
    const rows = await usageRows(workspace);
    expect(rows).toEqual([expect.objectContaining({ provider: "openai", completion_tokens: 5, estimated: 1 })]);
  });

  it("ends response.failed with the error when the stream is cut mid-answer, charged once, estimated", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "simulated", model: "sim-1?stream_chunks=8&cut_after_chunks=3" }],
    });
    const response = await postResponses(workspace.headers, { input: "Stream please", stream: true });
    expect(response.status).toBe(200);
    const events = await sseEvents(response);
    expect(events.map((event) => event.sequence_number)).toEqual(events.map((_, index) => index));
    expect(events.map((event) => event.type)).toEqual([
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.content_part.added",
      ...Array(3).fill("response.output_text.delta"),
      "response.failed",
    ]);
    const failed = events.at(-1)!.response;
    expect(failed).toMatchObject({
      status: "failed",
      error: { code: "server_error", message: expect.any(String) },
      output: [{ type: "message", status: "incomplete" }],
    });
    expect(failed.error.message.length).toBeGreaterThan(0);
    // No usage in the failed response, as the document says; the charge is in the usage rows.
    expect(failed.usage).toBeNull();
    const doc = (await (await fetcher(`${BASE}/openapi.json`)).json()) as Record<string, any>;
    expect(doc.components.schemas.Response.properties.usage.description).toContain("`response.failed`");
    const rows = await usageRows(workspace);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ provider: "simulated", estimated: 1 });

    // The SDK's finalResponse() resolves with the failure and the text delivered before it.
    const stream = sdkAgainstApp(workspace.key).responses.stream({ input: "Stream please" });
    const delivered: string[] = [];
    stream.on("response.output_text.delta", (event) => {
      delivered.push(event.delta);
    });
    const final = await stream.finalResponse();
    expect(final).toMatchObject({ status: "failed", error: { code: "server_error" } });
    expect(delivered).toHaveLength(3);
    expect(final.output_text).toBe(delivered.join(""));
  });
});
