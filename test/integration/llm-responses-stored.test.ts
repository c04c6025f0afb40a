import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import OpenAI from "openai";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app.ts";
import { handleScheduled } from "../../src/scheduled.ts";
import {
  BASE,
  fakeUpstreams,
  fetcher,
  OPENAI_URL,
  openAiCompletion,
  openAiToolCallCompletion,
  problem,
  sdkAgainstApp,
  usageWhenWritten,
  workspaceWith,
} from "../support/llm.ts";
import { createTestKey, type TestWorkspace } from "../support/workspaces.ts";

/**
 * Stored responses of POST /api/v1/llm/responses (`store`, true by default as OpenAI's): continued with
 * `previous_response_id` and `item_reference`, read, listed and deleted, per workspace, purged after 30 days.
 */

afterEach(() => vi.restoreAllMocks());

const openAiChain = { strategy: "fallback" as const, chain: [{ provider: "openai", model: "gpt-4o-mini" }] };

/** The app in this isolate with OpenAI configured at the fake upstream, as sdkAgainstApp calls it. */
async function appFetch(path: string, init: RequestInit): Promise<Response> {
  const providers = { OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: OPENAI_URL };
  return createApp().fetch(new Request(`${BASE}${path}`, init), { ...env, ...providers }, createExecutionContext());
}

function postResponses(workspace: TestWorkspace, body: unknown): Promise<Response> {
  return appFetch("/api/v1/llm/responses", {
    method: "POST",
    headers: { ...workspace.headers, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

function responsePath(workspace: TestWorkspace, path: string, method = "GET"): Promise<Response> {
  return appFetch(`/api/v1/llm/responses/${path}`, { method, headers: workspace.headers });
}

/** A fake OpenAI answering each call from `answers` in turn; what it was sent. */
function fakeOpenAi(...answers: (() => Response)[]) {
  const fake = fakeUpstreams({ "openai.test": (_request, call) => answers[Math.min(call, answers.length) - 1]() });
  vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
  return {
    count: () => fake.count("openai.test"),
    messages: async (index: number) =>
      ((await fake.calls["openai.test"][index].clone().json()) as { messages: unknown[] }).messages,
  };
}

async function storedRows(workspace: TestWorkspace) {
  const responses = await env.DB.prepare("SELECT id FROM llm_responses WHERE workspace_id = ?")
    .bind(workspace.id)
    .all<{ id: string }>();
  const items = await env.DB.prepare("SELECT item_id FROM llm_response_items WHERE workspace_id = ?")
    .bind(workspace.id)
    .all<{ item_id: string }>();
  return { responses: responses.results.map((row) => row.id), items: items.results.map((row) => row.item_id) };
}

describe("previous_response_id", () => {
  it("sends the upstream the whole conversation, earlier turns first, with this request's instructions only", async () => {
    const workspace = await workspaceWith(openAiChain);
    const upstream = fakeOpenAi(
      () => openAiCompletion("4", { prompt_tokens: 30, completion_tokens: 1 }),
      () => openAiCompletion("6", { prompt_tokens: 50, completion_tokens: 1 }),
      () => openAiCompletion("8", { prompt_tokens: 70, completion_tokens: 1 }),
    );
    const sdk = sdkAgainstApp(workspace.key);
    const first = await sdk.responses.create({ model: "gpt-4o-mini", instructions: "Be brief.", input: "2+2?" });
    expect(first).toMatchObject({ store: true, previous_response_id: null, output_text: "4" });
    const second = await sdk.responses.create({
      model: "gpt-4o-mini",
      instructions: "Answer in French.",
      previous_response_id: first.id,
      input: "3+3?",
    });
    expect(second).toMatchObject({ store: true, previous_response_id: first.id, output_text: "6" });
    const third = await sdk.responses.create({
      model: "gpt-4o-mini",
      previous_response_id: second.id,
      input: [{ role: "user", content: [{ type: "input_text", text: "4+4?" }] }],
    });
    expect(third.output_text).toBe("8");

    expect(await upstream.messages(1)).toEqual([
      { role: "system", content: "Answer in French." },
      { role: "user", content: "2+2?" },
      { role: "assistant", content: "4" },
      { role: "user", content: "3+3?" },
    ]);
    // Walked back through both earlier responses; no instructions sent this time, none carried over.
    expect(await upstream.messages(2)).toEqual([
      { role: "user", content: "2+2?" },
      { role: "assistant", content: "4" },
      { role: "user", content: "3+3?" },
      { role: "assistant", content: "6" },
      { role: "user", content: "4+4?" },
    ]);
    // One usage row per call, charged what the provider counted of the whole conversation.
    await usageWhenWritten(workspace);
    await vi.waitFor(
      async () => {
        const { results } = await env.DB.prepare(
          "SELECT prompt_tokens FROM usage_records WHERE workspace_id = ? ORDER BY prompt_tokens",
        )
          .bind(workspace.id)
          .all<{ prompt_tokens: number }>();
        expect(results.map((row) => row.prompt_tokens)).toEqual([30, 50, 70]);
      },
      { timeout: 5_000, interval: 20 },
    );
  });

  it("continues a tool loop: the earlier function call goes back as the assistant's tool call", async () => {
    const workspace = await workspaceWith(openAiChain);
    const upstream = fakeOpenAi(
      () => openAiToolCallCompletion([["call_w", "weather", '{"city":"Oslo"}']], "Let me look."),
      () => openAiCompletion("Sunny."),
    );
    const sdk = sdkAgainstApp(workspace.key);
    const tools: OpenAI.Responses.FunctionTool[] = [
      { type: "function", name: "weather", parameters: { type: "object", properties: {} }, strict: false },
    ];
    const first = await sdk.responses.create({ input: "Weather in Oslo?", tools });
    const second = await sdk.responses.create({
      previous_response_id: first.id,
      input: [{ type: "function_call_output", call_id: "call_w", output: "sunny" }],
      tools,
    });
    expect(second.output_text).toBe("Sunny.");
    expect(await upstream.messages(1)).toEqual([
      { role: "user", content: "Weather in Oslo?" },
      {
        role: "assistant",
        content: "Let me look.",
        tool_calls: [{ id: "call_w", type: "function", function: { name: "weather", arguments: '{"city":"Oslo"}' } }],
      },
      { role: "tool", tool_call_id: "call_w", content: "sunny" },
    ]);
  });

  it("answers 400 previous_response_not_found, as OpenAI, for an unknown id, without calling the provider", async () => {
    const workspace = await workspaceWith(openAiChain);
    const upstream = fakeOpenAi(() => openAiCompletion("never"));
    const response = await postResponses(workspace, { input: "hi", previous_response_id: "resp_nope" });
    expect(response.status).toBe(400);
    expect(response.headers.get("Content-Type")).toBe("application/problem+json");
    const body = (await response.json()) as Record<string, any>;
    expect(body.error).toEqual({
      message: "Previous response with id 'resp_nope' not found.",
      type: "invalid_request_error",
      code: "previous_response_not_found",
      param: "previous_response_id",
    });
    const error = await sdkAgainstApp(workspace.key)
      .responses.create({ input: "hi", previous_response_id: "resp_nope" })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect(error).toMatchObject({ code: "previous_response_not_found", param: "previous_response_id" });
    expect(upstream.count()).toBe(0);
  });
});

describe("previous_response_id, bounded", () => {
  /** A chain of `length` stored responses written straight to D1 (as the route stores them), newest last. */
  async function storedChain(workspace: TestWorkspace, length: number): Promise<string> {
    const expiresAt = new Date(Date.now() + 86_400_000).toISOString();
    const insert = env.DB.prepare(
      "INSERT INTO llm_responses (workspace_id, id, previous_response_id, response, input_items, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
    );
    const ids = Array.from({ length }, (_, index) => `resp_chain_${workspace.id}_${index}`);
    await env.DB.batch(
      ids.map((id, index) =>
        insert.bind(
          workspace.id,
          id,
          index === 0 ? null : ids[index - 1],
          JSON.stringify({
            id,
            output: [
              {
                type: "message",
                id: `msg_${id}`,
                role: "assistant",
                content: [{ type: "output_text", text: `a${index}` }],
              },
            ],
          }),
          JSON.stringify([{ type: "message", id: `msg_${id}_in0`, role: "user", content: `q${index}` }]),
          expiresAt,
        ),
      ),
    );
    return ids.at(-1)!;
  }

  it("walks back 100 responses, and refuses a longer conversation with 400 conversation_too_long", async () => {
    const workspace = await workspaceWith(openAiChain);
    const upstream = fakeOpenAi(() => openAiCompletion("ok"));
    const longest = await postResponses(workspace, {
      input: "next",
      previous_response_id: await storedChain(workspace, 100),
    });
    expect(longest.status).toBe(200);
    const messages = await upstream.messages(0);
    expect(messages).toHaveLength(201);
    expect(messages.slice(0, 2)).toEqual([
      { role: "user", content: "q0" },
      { role: "assistant", content: "a0" },
    ]);

    const other = await workspaceWith(openAiChain);
    const tooLong = await postResponses(other, { input: "next", previous_response_id: await storedChain(other, 101) });
    expect(tooLong.status).toBe(400);
    const error = ((await tooLong.json()) as { error: Record<string, string> }).error;
    expect(error).toMatchObject({ code: "conversation_too_long", param: "previous_response_id" });
    expect(error.message).toContain("more than 100 responses");
    expect(upstream.count()).toBe(1);
  });

  it("answers a response too large for a D1 row, not stored (store: false), so it cannot be continued", async () => {
    const workspace = await workspaceWith(openAiChain);
    fakeOpenAi(() => openAiCompletion("x".repeat(2_000_000)));
    const response = await postResponses(workspace, { input: "Write a lot" });
    expect(response.status).toBe(200);
    const answered = (await response.json()) as Record<string, any>;
    expect(answered.store).toBe(false);
    expect(answered.output[0].content[0].text).toHaveLength(2_000_000);
    expect((await responsePath(workspace, answered.id)).status).toBe(404);
    const continued = await postResponses(workspace, { input: "more", previous_response_id: answered.id });
    expect(continued.status).toBe(400);
    expect(await storedRows(workspace)).toEqual({ responses: [], items: [] });
  });
});

describe("GET, input_items and DELETE of a stored response", () => {
  it("reads the response as it was answered, and lists its own input items as OpenAI does", async () => {
    const workspace = await workspaceWith(openAiChain);
    fakeOpenAi(
      () => openAiCompletion("Hello there"),
      () => openAiCompletion("Again"),
    );
    const created = await postResponses(workspace, {
      model: "gpt-4o-mini",
      instructions: "Be brief.",
      metadata: { run: "7" },
      input: [
        { role: "developer", content: "Rules" },
        { role: "user", content: [{ type: "input_text", text: "Say hi" }] },
        { type: "message", id: "msg_mine", role: "user", content: "Now" },
      ],
    });
    expect(created.status).toBe(200);
    const answered = (await created.json()) as Record<string, any>;

    const read = await responsePath(workspace, answered.id);
    expect(read.status).toBe(200);
    expect(await read.json()).toEqual(answered);
    const sdk = sdkAgainstApp(workspace.key);
    const retrieved = await sdk.responses.retrieve(answered.id);
    expect(retrieved).toMatchObject({
      id: answered.id,
      store: true,
      output_text: "Hello there",
      metadata: { run: "7" },
    });

    const listed = (await (await responsePath(workspace, `${answered.id}/input_items`)).json()) as Record<string, any>;
    // Newest first by default; each with an id (the one the client gave, else one of its own).
    expect(listed).toEqual({
      object: "list",
      data: [
        { type: "message", id: "msg_mine", role: "user", content: "Now" },
        {
          type: "message",
          id: expect.stringMatching(/^msg_/),
          role: "user",
          content: [{ type: "input_text", text: "Say hi" }],
        },
        { type: "message", id: expect.stringMatching(/^msg_/), role: "developer", content: "Rules" },
      ],
      first_id: "msg_mine",
      last_id: listed.data[2].id,
      has_more: false,
    });
    const page = await sdk.responses.inputItems.list(answered.id, { order: "asc", limit: 2 });
    expect(page.data.map((item) => (item as { content: unknown }).content)).toEqual([
      "Rules",
      [{ type: "input_text", text: "Say hi" }],
    ]);
    expect(page.has_more).toBe(true);
    const all: string[] = [];
    for await (const item of sdk.responses.inputItems.list(answered.id, { order: "asc", limit: 1 })) {
      all.push(item.id);
    }
    expect(all).toEqual([listed.data[2].id, listed.data[1].id, "msg_mine"]);
  });

  it("takes the query parameters the openai SDK sends (include, stream: false) and refuses any other with 422 naming it", async () => {
    const workspace = await workspaceWith(openAiChain);
    fakeOpenAi(() => openAiCompletion("Hello there"));
    const answered = (await (await postResponses(workspace, { input: "Say hi" })).json()) as Record<string, any>;
    const sdk = sdkAgainstApp(workspace.key);
    const include: OpenAI.Responses.ResponseIncludable[] = ["message.output_text.logprobs"];
    // `include` comes as `include[]=…`; accepted and ignored, as in a request's body.
    expect(await sdk.responses.retrieve(answered.id, { include })).toMatchObject({ id: answered.id });
    expect(await sdk.responses.retrieve(answered.id, { stream: false })).toMatchObject({ id: answered.id });
    const items = await sdk.responses.inputItems.list(answered.id, { include });
    expect(items.data).toHaveLength(1);
    // A stored response as a stream of events is not offered: refused, not answered as JSON the SDK reads no event from.
    const streamed = await responsePath(workspace, `${answered.id}?stream=true`);
    expect(streamed.status).toBe(422);
    const problem = (await streamed.json()) as Record<string, any>;
    expect(problem.errors).toEqual([
      { path: "stream", message: expect.stringMatching(/^streaming a stored response is not offered/) },
    ]);
    expect(problem.error).toMatchObject({ type: "invalid_request_error", param: "stream" });
    const error = await sdk.responses
      .retrieve(answered.id, { stream: true })
      .then(async (stream) => {
        for await (const _ of stream) {
          // Read it whole: a JSON answer is a stream of no events.
        }
        return stream;
      })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.UnprocessableEntityError);
    expect(error).toMatchObject({ param: "stream" });
    // Any other parameter is refused with 422 naming it, on each route of a stored response.
    for (const [path, method] of [
      [`${answered.id}?starting_after=3`, "GET"],
      [`${answered.id}/input_items?limit=5&cursor=x`, "GET"],
      [`${answered.id}?force=true`, "DELETE"],
    ]) {
      const response = await responsePath(workspace, path, method);
      expect(response.status, `${method} ${path}`).toBe(422);
      const refused = (await response.json()) as Record<string, any>;
      const param = path.endsWith("cursor=x") ? "cursor" : path.split("?")[1].split("=")[0];
      expect(refused.errors).toEqual([
        { path: param, message: "is not a parameter of this route; remove it or check its spelling" },
      ]);
      expect(refused.error).toMatchObject({ param });
    }
    // Refused, the DELETE deleted nothing.
    expect((await responsePath(workspace, answered.id)).status).toBe(200);
  });

  it("deletes a response: then GET is 404, and neither it nor its items can be continued (400)", async () => {
    const workspace = await workspaceWith(openAiChain);
    const upstream = fakeOpenAi(
      () => openAiCompletion("First"),
      () => openAiCompletion("Second"),
    );
    const sdk = sdkAgainstApp(workspace.key);
    const first = await sdk.responses.create({ input: "One" });
    const second = await sdk.responses.create({ input: "Two", previous_response_id: first.id });

    const deleted = await responsePath(workspace, first.id, "DELETE");
    expect(deleted.status).toBe(200);
    expect(await deleted.json()).toEqual({ id: first.id, object: "response", deleted: true });
    expect(await sdk.responses.delete(first.id).catch((caught: unknown) => caught)).toBeInstanceOf(
      OpenAI.NotFoundError,
    );

    const read = await responsePath(workspace, first.id);
    expect(read.status).toBe(404);
    expect(((await read.json()) as { error: { message: string } }).error.message).toBe(
      `Response with id '${first.id}' not found.`,
    );
    expect((await responsePath(workspace, `${first.id}/input_items`)).status).toBe(404);

    const continued = await postResponses(workspace, { input: "Three", previous_response_id: first.id });
    expect(continued.status).toBe(400);
    expect(((await continued.json()) as { error: { code: string } }).error.code).toBe("previous_response_not_found");
    // The response that continued it is still stored, but its conversation lost its beginning: refused, naming it.
    expect((await responsePath(workspace, second.id)).status).toBe(200);
    const broken = await postResponses(workspace, { input: "Three", previous_response_id: second.id });
    expect(broken.status).toBe(400);
    const brokenError = ((await broken.json()) as { error: Record<string, string> }).error;
    expect(brokenError).toMatchObject({ code: "previous_response_not_found", param: "previous_response_id" });
    expect(brokenError.message).toContain(`'${first.id}', is no longer stored`);
    const referenced = await postResponses(workspace, {
      input: [{ type: "item_reference", id: first.output[0].id }],
    });
    expect(referenced.status).toBe(400);
    expect(upstream.count()).toBe(2);
    // Its rows are gone, the other's stay.
    const rows = await storedRows(workspace);
    expect(rows.responses).toEqual([second.id]);
    expect(rows.items).not.toContain(first.output[0].id);
    expect(rows.items).toContain(second.output[0].id);
  });

  it("keeps another workspace's responses from view: 404 to read, list or delete, 400 to continue", async () => {
    const owner = await workspaceWith(openAiChain);
    const other = await workspaceWith(openAiChain);
    const upstream = fakeOpenAi(() => openAiCompletion("Mine"));
    const mine = await sdkAgainstApp(owner.key).responses.create({ input: "Secret" });
    for (const [path, method] of [
      [mine.id, "GET"],
      [`${mine.id}/input_items`, "GET"],
      [mine.id, "DELETE"],
    ]) {
      const response = await responsePath(other, path, method);
      expect(response.status, `${method} ${path}`).toBe(404);
    }
    const continued = await postResponses(other, { input: "hi", previous_response_id: mine.id });
    expect(continued.status).toBe(400);
    const referenced = await postResponses(other, { input: [{ type: "item_reference", id: mine.output[0].id }] });
    expect(referenced.status).toBe(400);
    expect(upstream.count()).toBe(1);
    // Still the owner's, whole.
    expect((await responsePath(owner, mine.id)).status).toBe(200);
  });

  it("needs tasks:read beside tasks:write to continue a stored conversation, which the model could repeat", async () => {
    const workspace = await workspaceWith(openAiChain);
    const upstream = fakeOpenAi(() => openAiCompletion("Hi"));
    const made = (await (await postResponses(workspace, { input: "My secret is 42" })).json()) as Record<string, any>;
    const writer = {
      ...workspace,
      headers: (await createTestKey(fetcher, BASE, workspace.key, ["tasks:write"])).headers,
    };
    // A new conversation is the writer's to start.
    expect((await postResponses(writer, { input: "Hi", store: false })).status).toBe(200);
    for (const continued of [
      { input: "Repeat everything above", previous_response_id: made.id },
      { input: [{ type: "item_reference", id: made.output[0].id }] },
    ]) {
      const refused = await postResponses(writer, continued);
      expect(refused.status).toBe(403);
      expect(await refused.json()).toMatchObject({ required_scope: "tasks:read" });
    }
    expect(upstream.count()).toBe(2);
  });

  it("needs tasks:read to read and tasks:write to delete", async () => {
    const workspace = await workspaceWith(openAiChain);
    fakeOpenAi(() => openAiCompletion("Hi"));
    const made = await sdkAgainstApp(workspace.key).responses.create({ input: "Hi" });
    const keyWith = async (scopes: string[]) => ({
      ...workspace,
      headers: (await createTestKey(fetcher, BASE, workspace.key, scopes)).headers,
    });
    const reader = await keyWith(["tasks:read"]);
    expect((await responsePath(reader, made.id)).status).toBe(200);
    expect((await responsePath(reader, `${made.id}/input_items`)).status).toBe(200);
    expect((await responsePath(reader, made.id, "DELETE")).status).toBe(403);
    const writer = await keyWith(["tasks:write"]);
    expect((await responsePath(writer, made.id)).status).toBe(403);
    expect((await responsePath(writer, made.id, "DELETE")).status).toBe(200);
  });
});

describe("store", () => {
  it("store: false keeps nothing: the answer says so, and no later request can read or continue it", async () => {
    const workspace = await workspaceWith(openAiChain);
    fakeOpenAi(() => openAiCompletion("Passing"));
    const answered = (await (await postResponses(workspace, { input: "hi", store: false })).json()) as Record<
      string,
      any
    >;
    expect(answered.store).toBe(false);
    expect((await responsePath(workspace, answered.id)).status).toBe(404);
    const continued = await postResponses(workspace, { input: "more", previous_response_id: answered.id });
    expect(continued.status).toBe(400);
    const referenced = await postResponses(workspace, {
      input: [{ type: "item_reference", id: answered.output[0].id }],
    });
    expect(referenced.status).toBe(400);
    expect(await storedRows(workspace)).toEqual({ responses: [], items: [] });
  });

  it("a failed call (every provider failing) stores nothing", async () => {
    const workspace = await workspaceWith(openAiChain);
    fakeOpenAi(() => problem(400));
    const response = await postResponses(workspace, { input: "hi" });
    expect(response.status).toBe(400);
    expect(await storedRows(workspace)).toEqual({ responses: [], items: [] });
  });
});

describe("item_reference", () => {
  it("stands for the stored item: an earlier answer's message and function call, as the AI SDK sends them", async () => {
    const workspace = await workspaceWith(openAiChain);
    const upstream = fakeOpenAi(
      () => openAiToolCallCompletion([["call_r", "lookup", '{"q":"x"}']], "Let me look."),
      () => openAiCompletion("Found it."),
    );
    const first = (await (
      await postResponses(workspace, {
        input: "Look it up",
        tools: [{ type: "function", name: "lookup", parameters: { type: "object", properties: {} } }],
      })
    ).json()) as Record<string, any>;
    const [message, call] = first.output;
    expect([message.type, call.type]).toEqual(["message", "function_call"]);
    const second = await postResponses(workspace, {
      input: [
        { role: "user", content: "Look it up" },
        { type: "item_reference", id: message.id },
        { type: "item_reference", id: call.id },
        { type: "function_call_output", call_id: "call_r", output: "x is 1" },
      ],
      tools: [{ type: "function", name: "lookup", parameters: { type: "object", properties: {} } }],
    });
    expect(second.status).toBe(200);
    expect(await upstream.messages(1)).toEqual([
      { role: "user", content: "Look it up" },
      {
        role: "assistant",
        content: "Let me look.",
        tool_calls: [{ id: "call_r", type: "function", function: { name: "lookup", arguments: '{"q":"x"}' } }],
      },
      { role: "tool", tool_call_id: "call_r", content: "x is 1" },
    ]);
    // Its input items are stored resolved: what was referred to, under its own id.
    const listed = (await (
      await responsePath(workspace, `${((await second.json()) as { id: string }).id}/input_items?order=asc`)
    ).json()) as { data: Record<string, unknown>[] };
    expect(listed.data[1]).toEqual(message);
    expect(listed.data[2]).toEqual(call);
    // An input item's own id is referable too.
    const third = await postResponses(workspace, {
      input: [{ type: "item_reference", id: listed.data[0].id }],
    });
    expect(third.status).toBe(200);
  });

  it("answers 400 naming `input` for an id not stored, as OpenAI, without calling the provider", async () => {
    const workspace = await workspaceWith(openAiChain);
    const upstream = fakeOpenAi(() => openAiCompletion("never"));
    const response = await postResponses(workspace, {
      input: [
        { role: "user", content: "hi" },
        { type: "item_reference", id: "msg_unknown" },
      ],
    });
    expect(response.status).toBe(400);
    const body = (await response.json()) as Record<string, any>;
    expect(body.error).toEqual({
      message: "Item with id 'msg_unknown' not found.",
      type: "invalid_request_error",
      code: "item_not_found",
      param: "input",
    });
    expect(upstream.count()).toBe(0);
  });
});

describe("streamed responses", () => {
  it("are stored before response.completed is sent, so the next turn can refer to them at once", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "simulated", model: "sim-1?stream_chunks=3" }],
    });
    const response = await postResponses(workspace, { input: "Stream please", stream: true });
    expect(response.status).toBe(200);
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    let completed: Record<string, any> | undefined;
    while (!completed) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
      const frame = text.split("\n\n").find((part) => part.startsWith("event: response.completed\n"));
      if (frame) completed = JSON.parse(frame.split("\n")[1].slice("data: ".length)).response;
    }
    // Read as soon as the event came, before the stream is read to its end.
    const read = await responsePath(workspace, completed!.id);
    expect(read.status).toBe(200);
    const stored = (await read.json()) as Record<string, any>;
    expect(completed).toMatchObject({ store: true, status: "completed" });
    expect(stored).toEqual(completed);
    await reader.cancel();

    const next = await postResponses(workspace, { input: "Go on", previous_response_id: completed!.id });
    expect(next.status).toBe(200);
  });

  it("a stream that fails mid-answer stores nothing", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "simulated", model: "sim-1?stream_chunks=8&cut_after_chunks=3" }],
    });
    const text = await (await postResponses(workspace, { input: "Stream please", stream: true })).text();
    const failed = text.split("\n\n").find((frame) => frame.startsWith("event: response.failed\n"));
    expect(JSON.parse(failed!.split("\n")[1].slice("data: ".length)).response.store).toBe(false);
    expect(await storedRows(workspace)).toEqual({ responses: [], items: [] });
  });
});

describe("retention", () => {
  it("keeps a response 30 days; past them it is gone at once, and the scheduled purge deletes its rows", async () => {
    const workspace = await workspaceWith(openAiChain);
    fakeOpenAi(
      () => openAiCompletion("Old"),
      () => openAiCompletion("New"),
    );
    const sdk = sdkAgainstApp(workspace.key);
    const old = await sdk.responses.create({ input: "Old" });
    const fresh = await sdk.responses.create({ input: "New" });
    const row = await env.DB.prepare(
      "SELECT created_at, expires_at FROM llm_responses WHERE workspace_id = ? AND id = ?",
    )
      .bind(workspace.id, old.id)
      .first<{ created_at: string; expires_at: string }>();
    expect(Date.parse(row!.expires_at) - Date.parse(row!.created_at)).toBe(30 * 24 * 60 * 60 * 1000);

    // Thirty days on, for the old one.
    await env.DB.prepare("UPDATE llm_responses SET expires_at = ? WHERE workspace_id = ? AND id = ?")
      .bind(new Date(Date.now() - 1_000).toISOString(), workspace.id, old.id)
      .run();
    expect((await responsePath(workspace, old.id)).status).toBe(404);
    expect((await postResponses(workspace, { input: "hi", previous_response_id: old.id })).status).toBe(400);

    const waits: Promise<unknown>[] = [];
    const ctx = { waitUntil: (work: Promise<unknown>) => waits.push(work), passThroughOnException() {} };
    await handleScheduled(
      { cron: "*/5 * * * *", scheduledTime: Date.now(), noRetry() {} } as ScheduledController,
      env,
      ctx as unknown as ExecutionContext,
    );
    await Promise.all(waits);
    const rows = await storedRows(workspace);
    expect(rows.responses).toEqual([fresh.id]);
    expect(rows.items.sort()).toEqual([fresh.output[0].id, ...(await inputIds(workspace, fresh.id))].sort());
    expect((await responsePath(workspace, fresh.id)).status).toBe(200);
  });
});

async function inputIds(workspace: TestWorkspace, id: string): Promise<string[]> {
  const listed = (await (await responsePath(workspace, `${id}/input_items`)).json()) as { data: { id: string }[] };
  return listed.data.map((item) => item.id);
}
