import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import OpenAI from "openai";
import { afterEach, describe, expect, it, vi } from "vitest";
import { BreakerBook } from "../../src/llm/breaker-book.ts";
import { createLlmRouter } from "../../src/llm/index.ts";
import { BASE, fetcher, llmConfig, postChat, quietLogger, usageWhenWritten, workspaceWith } from "../support/llm.ts";
import { createTestKey } from "../support/workspaces.ts";

/** POST /api/v1/llm/chat/completions, GET /api/v1/providers and GET /api/v1/usage over HTTP, on the simulated provider. */

afterEach(() => vi.restoreAllMocks());

const chat = postChat;

describe("OpenAI-compatible chat completions", () => {
  it("answers a chat.completion with usage, the router's figures, and a usage row (metered, not audited)", async () => {
    const workspace = await workspaceWith(null);
    const response = await chat(workspace.headers, {
      model: "gpt-4o-mini",
      messages: [
        { role: "developer", content: "Be brief." },
        { role: "user", content: [{ type: "text", text: "Say hi" }] },
      ],
      max_tokens: 10,
      temperature: 0.2,
      user: "someone",
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("X-LLM-Provider")).toBe("simulated");
    expect(response.headers.get("X-LLM-Simulated")).toBe("true");
    const body = (await response.json()) as Record<string, any>;
    expect(body).toMatchObject({
      object: "chat.completion",
      model: "sim-1",
      choices: [{ index: 0, message: { role: "assistant" }, finish_reason: "length" }],
      x_mgx: { provider: "simulated", simulated: true, cost_usd: 0, attempts: 1 },
    });
    expect(body.id).toMatch(/^chatcmpl-/);
    expect(body.usage.completion_tokens).toBe(10);
    // As OpenAI's: cached input under prompt_tokens_details (none here).
    expect(body.usage.prompt_tokens_details).toEqual({ cached_tokens: 0 });

    const usage = await usageWhenWritten(workspace);
    expect(usage.data).toEqual([
      expect.objectContaining({ provider: "simulated", model: "sim-1", simulated: true, calls: 1 }),
    ]);
    expect(usage.totals.total_tokens).toBe(body.usage.total_tokens);
    const audit = (await (
      await fetcher(`${BASE}/api/v1/audit-logs?action=llm.completion`, { headers: workspace.headers })
    ).json()) as {
      data: { metadata: Record<string, unknown> }[];
    };
    // The route is x-audit-exempt: the usage row is the call's record, not an audit entry per call.
    expect(audit.data).toEqual([]);

    // Counted against the workspace's budgets (none set), without a charge key kept per call in its limiter:
    // the only key kept is the batch's (so a batch sent again is not counted twice).
    let countedTokens = 0;
    for (let tries = 0; tries < 50 && countedTokens === 0; tries++) {
      await new Promise((wake) => setTimeout(wake, 20));
      const budgets = await fetcher(`${BASE}/api/v1/budgets`, { headers: workspace.headers });
      countedTokens = ((await budgets.json()) as { daily: { tokens: number } }).daily.tokens;
    }
    expect(countedTokens).toBe(body.usage.total_tokens);
    const keptKeys = await runInDurableObject(env.WORKSPACE_LIMITER.getByName(workspace.id), (_instance, state) =>
      state.storage.sql.exec<{ charge_key: string }>("SELECT charge_key FROM limiter_budget_charges").toArray(),
    );
    expect(keptKeys).toEqual([{ charge_key: expect.stringMatching(/^batch:/) }]);
  });

  it("streams chat.completion.chunk events, then the finish reason, the usage chunk and [DONE]", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "simulated", model: "sim-1?stream_chunks=5" }],
    });
    const response = await chat(workspace.headers, {
      messages: [{ role: "user", content: "Stream please" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("Content-Type")).toContain("text/event-stream");
    const frames = (await response.text())
      .split("\n\n")
      .filter(Boolean)
      .map((frame) => frame.replace(/^data: /, ""));
    expect(frames.at(-1)).toBe("[DONE]");
    const chunks = frames.slice(0, -1).map((frame) => JSON.parse(frame) as Record<string, any>);
    const contentChunks = chunks.filter((chunk) => chunk.choices[0]?.delta?.content !== undefined);
    expect(contentChunks).toHaveLength(5);
    expect(contentChunks[0].choices[0].delta.role).toBe("assistant");
    expect(chunks.at(-2)?.choices[0]).toMatchObject({ finish_reason: "stop", delta: {} });
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage.total_tokens).toBe(last.usage.prompt_tokens + 24);
    expect(last.x_mgx).toMatchObject({ provider: "simulated", simulated: true });
    const text = contentChunks.map((chunk) => chunk.choices[0].delta.content).join("");
    expect(text.split(" ")).toHaveLength(24);
  });

  it("answers tool calls in OpenAI's shape", async () => {
    const workspace = await workspaceWith(null);
    const response = await chat(workspace.headers, {
      messages: [{ role: "user", content: "Read the file" }],
      tools: [{ type: "function", function: { name: "read_file", parameters: { type: "object", properties: {} } } }],
      tool_choice: "auto",
    });
    const body = (await response.json()) as Record<string, any>;
    expect(body.choices[0].finish_reason).toBe("tool_calls");
    expect(body.choices[0].message).toMatchObject({
      content: null,
      tool_calls: [{ type: "function", function: { name: "read_file", arguments: "{}" } }],
    });
  });

  it("honours tool_choice: none calls no tool, a named tool is the one called", async () => {
    const workspace = await workspaceWith(null);
    const tools = ["read_file", "write_file"].map((name) => ({
      type: "function",
      function: { name, parameters: { type: "object", properties: {} } },
    }));
    const ask = async (tool_choice: unknown) =>
      (await (
        await chat(workspace.headers, { messages: [{ role: "user", content: "Edit the file" }], tools, tool_choice })
      ).json()) as Record<string, any>;
    const none = await ask("none");
    expect(none.choices[0].finish_reason).not.toBe("tool_calls");
    expect(none.choices[0].message.tool_calls).toBeUndefined();
    const named = await ask({ type: "function", function: { name: "write_file" } });
    expect(named.choices[0].message.tool_calls.map((call: any) => call.function.name)).toEqual(["write_file"]);
  });

  it("honours parallel_tool_calls: false, one tool call per answer", async () => {
    const workspace = await workspaceWith(null);
    const tools = [{ type: "function", function: { name: "read_file", parameters: { type: "object" } } }];
    const calls = async (extra: Record<string, unknown>) => {
      const response = await chat(workspace.headers, {
        model: "simulated:sim-1?tool_calls=3",
        messages: [{ role: "user", content: "Read three files" }],
        tools,
        ...extra,
      });
      return ((await response.json()) as Record<string, any>).choices[0].message.tool_calls.length;
    };
    expect(await calls({})).toBe(3);
    expect(await calls({ parallel_tool_calls: false })).toBe(1);
  });

  it("serves a bare model name the chain lacks where GET /api/v1/llm/models/{id} finds it, not by the chain", async () => {
    const workspace = await workspaceWith({ strategy: "fallback", chain: [{ provider: "simulated", model: "sim-2" }] });
    const served = async (model: string) =>
      (
        (await (await chat(workspace.headers, { model, messages: [{ role: "user", content: "x" }] })).json()) as {
          model: string;
        }
      ).model;
    const found = await fetcher(`${BASE}/api/v1/llm/models/sim-1`, { headers: workspace.headers });
    expect(((await found.json()) as { id: string }).id).toBe("simulated:sim-1");
    expect(await served("sim-1")).toBe("sim-1");
    // The chain's own model, and a name no provider here serves (openai is not configured in this pool), are the chain's.
    expect(await served("sim-2")).toBe("sim-2");
    expect(await served("gpt-4o-mini")).toBe("sim-2");
  });

  it("refuses with 422 what it cannot honour: more than one choice, log probabilities, a tool choice naming no offered tool", async () => {
    const workspace = await workspaceWith(null);
    const messages = [{ role: "user", content: "x" }];
    const refused = async (body: Record<string, unknown>) => {
      const response = await chat(workspace.headers, { messages, ...body });
      expect(response.status).toBe(422);
      return ((await response.json()) as { errors: { path: string; message: string }[] }).errors;
    };
    expect(await refused({ n: 2 })).toEqual([expect.objectContaining({ path: "n" })]);
    expect(await refused({ tool_choice: "required" })).toEqual([
      expect.objectContaining({ path: "tool_choice", message: '"required" needs tools' }),
    ]);
    const tools = [{ type: "function", function: { name: "read_file" } }];
    expect(await refused({ tools, tool_choice: { type: "function", function: { name: "rm_rf" } } })).toEqual([
      expect.objectContaining({ path: "tool_choice", message: 'no tool named "rm_rf" in tools' }),
    ]);
    // OpenAI's newer tool choices are refused in words that say what is taken, not zod's "Invalid input".
    const allowedTools = {
      type: "allowed_tools",
      allowed_tools: { mode: "auto", tools: [{ type: "function", function: { name: "read_file" } }] },
    };
    expect(await refused({ tools, tool_choice: allowedTools })).toEqual([
      {
        path: "tool_choice",
        message: expect.stringContaining('must be "auto", "none", "required" or {"type": "function"'),
      },
    ]);
    const call = { id: "call_1", type: "function", function: { name: "read_file", arguments: "{}" } };
    const answeredWithoutId = [
      ...messages,
      { role: "assistant", content: null, tool_calls: [call] },
      { role: "tool", content: "…" },
    ];
    expect(await refused({ tools, messages: answeredWithoutId })).toEqual([
      { path: "messages.2.tool_call_id", message: "a tool message needs the tool_call_id of the call it answers" },
    ]);
    expect(await refused({ response_format: { type: "xml" } })).toEqual([
      expect.objectContaining({ path: "response_format.type" }),
    ]);
    expect(await refused({ stop: ["a", "b", "c", "d", "e"] })).toEqual([expect.objectContaining({ path: "stop" })]);
    expect(await refused({ reasoning_effort: "extreme" })).toEqual([
      expect.objectContaining({ path: "reasoning_effort" }),
    ]);
    // Log probabilities: no provider but OpenAI has them, so an answer would come with logprobs null, the caller's
    // .logprobs.content a TypeError, whenever the chain picked another one.
    expect(await refused({ logprobs: true })).toEqual([expect.objectContaining({ path: "logprobs" })]);
    expect(await refused({ logprobs: true, top_logprobs: 3 })).toEqual([
      expect.objectContaining({ path: "logprobs" }),
      expect.objectContaining({ path: "top_logprobs" }),
    ]);
    // Token biases: dropped, a banned word could come back; token ids are one tokenizer's, and only OpenAI takes them.
    expect(await refused({ logit_bias: { "19339": -100 } })).toEqual([
      expect.objectContaining({ path: "logit_bias", message: expect.stringContaining("token biases are not offered") }),
    ]);
    // Asked for what no chain can promise: dropped, the answer would silently lack it.
    expect(await refused({ modalities: ["text", "audio"], audio: { voice: "alloy", format: "wav" } })).toEqual([
      expect.objectContaining({ path: "audio", message: expect.stringContaining("answers are text") }),
      expect.objectContaining({ path: "modalities" }),
    ]);
    expect(await refused({ web_search_options: {} })).toEqual([
      expect.objectContaining({ path: "web_search_options" }),
    ]);
    const weather = { name: "weather", parameters: { type: "object", properties: {} } };
    expect(await refused({ functions: [weather], function_call: "auto" })).toEqual([
      expect.objectContaining({ path: "functions", message: expect.stringContaining("send `tools`") }),
      expect.objectContaining({ path: "function_call" }),
    ]);
    // A name OpenAI and Anthropic refuse: told here, not after routing (the simulated provider takes any name).
    const spaced = { type: "function", function: { name: "read file", parameters: { type: "object" } } };
    expect(await refused({ tools: [spaced] })).toEqual([
      expect.objectContaining({
        path: "tools.0.function.name",
        message: expect.stringContaining("letters, digits, underscores or dashes"),
      }),
    ]);
    const image = { type: "image_url", image_url: { url: "https://example.com/diagram.png" } };
    expect(await refused({ messages: [{ role: "user", content: [image] }] })).toEqual([
      {
        path: "messages.0.content",
        message: expect.stringContaining("image, audio and file parts are not supported"),
      },
    ]);
  });

  it("refuses a model named with a lone surrogate with 422, in a request or a chain: D1 stored its usage under another name", async () => {
    const workspace = await workspaceWith(null);
    const messages = [{ role: "user", content: "x" }];
    // JSON's "\ud800": half a surrogate pair. Served, its calls were charged as "sim-\ufffd\ufffd\ufffd", a model
    // GET /api/v1/providers listed beside the chain's, which showed no calls.
    for (const path of ["/api/v1/llm/chat/completions", "/api/v1/llm/responses"]) {
      const response = await fetcher(`${BASE}${path}`, {
        method: "POST",
        headers: { ...workspace.headers, "Content-Type": "application/json" },
        body: JSON.stringify({ model: "simulated:sim-\ud800", messages, input: "x" }),
      });
      expect(response.status, path).toBe(422);
      const problem = (await response.json()) as Record<string, any>;
      expect(problem.errors).toEqual([{ path: "model", message: expect.stringContaining("well-formed Unicode") }]);
      expect(problem.error).toMatchObject({ type: "invalid_request_error", param: "model" });
    }
    const patch = (model: string) =>
      fetcher(`${BASE}/api/v1/workspace`, {
        method: "PATCH",
        headers: { ...workspace.headers, "Content-Type": "application/json" },
        body: JSON.stringify({ llm: { strategy: "fallback", chain: [{ provider: "simulated", model }] } }),
      });
    const refused = await patch("sim-\ud800");
    expect(refused.status).toBe(422);
    expect(((await refused.json()) as Record<string, any>).errors).toEqual([
      { path: "llm.chain.0.model", message: expect.stringContaining("well-formed Unicode") },
    ]);
    // A character outside the BMP is a whole surrogate pair, and a name like any other.
    expect((await patch("sim-\u{1F600}")).status).toBe(200);
  });

  it("accepts tool and schema descriptions as long as OpenAI takes them", async () => {
    // OpenAI once held a function's description to 1,024 characters and no longer does; agents' tools (coding
    // agents' shell tool, MCP servers') describe themselves at length, and were refused here with a 422.
    const workspace = await workspaceWith(null);
    const description = "Runs a shell command in the task's workspace. ".repeat(200);
    expect(description.length).toBeGreaterThan(4_096);
    const response = await chat(workspace.headers, {
      messages: [{ role: "user", content: "List the files" }],
      tools: [{ type: "function", function: { name: "bash", description, parameters: { type: "object" } } }],
      response_format: {
        type: "json_schema",
        json_schema: { name: "listing", description, schema: { type: "object" } },
      },
    });
    expect(response.status).toBe(200);
  });

  it("refuses bad bodies with 422, keys without tasks:write with 403, and no credentials with 401", async () => {
    const workspace = await workspaceWith(null);
    const invalid = await chat(workspace.headers, { messages: [] });
    expect(invalid.status).toBe(422);
    expect((await invalid.json()) as Record<string, unknown>).toMatchObject({ code: "VALIDATION_FAILED" });
    const reader = await createTestKey(fetcher, BASE, workspace.key, ["tasks:read"]);
    expect((await chat(reader.headers, { messages: [{ role: "user", content: "x" }] })).status).toBe(403);
    expect((await chat({}, { messages: [{ role: "user", content: "x" }] })).status).toBe(401);
  });

  it("routes by a chain changed with PATCH /api/v1/workspace from the next call, and lists it at once", async () => {
    const workspace = await workspaceWith(null);
    // A first call: the router now holds the workspace's settings (the default chain) in this isolate.
    expect((await chat(workspace.headers, { messages: [{ role: "user", content: "x" }] })).status).toBe(200);
    // Settings of its own: a breaker of its own, which the other tests' failing models do not share.
    const failing = { provider: "simulated", model: "sim-1?failure_rate=1&stream_chunks=2" };
    const patched = await fetcher(`${BASE}/api/v1/workspace`, {
      method: "PATCH",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ llm: { strategy: "fallback", chain: [failing] } }),
    });
    expect(patched.status).toBe(200);
    const models = (await (await fetcher(`${BASE}/api/v1/llm/models`, { headers: workspace.headers })).json()) as {
      data: { id: string; x_mgx: { in_chain: boolean } }[];
    };
    expect(models.data.filter((model) => model.x_mgx.in_chain).map((model) => model.id)).toEqual([
      "auto",
      `simulated:${failing.model}`,
    ]);
    const next = await chat(workspace.headers, { messages: [{ role: "user", content: "x" }] });
    expect(next.status).toBe(503);
    expect(await next.json()).toMatchObject({ reason: "all_providers_failed" });
  });

  it("answers 503 with Retry-After when every provider fails", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "simulated", model: "sim-1?failure_rate=1&failure_status=503" }],
    });
    const response = await chat(workspace.headers, { messages: [{ role: "user", content: "x" }] });
    expect(response.status).toBe(503);
    expect(response.headers.get("Retry-After")).toBe("1");
    expect(response.headers.get("X-Should-Retry")).toBeNull();
    expect(await response.json()).toMatchObject({
      code: "DEPENDENCY_UNAVAILABLE",
      reason: "all_providers_failed",
      retryable: true,
      failures: [{ provider: "simulated", model: "sim-1", attempts: 3, status: 503, code: "http_503" }],
    });
  });

  it("gives up by the timeout the client says it waits (X-Stainless-Timeout), else waits for a slow provider", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "simulated", model: "sim-1?latency_ms=2500" }],
    });
    const body = { messages: [{ role: "user", content: "x" }], max_tokens: 5 };
    let startedMs = Date.now();
    // OpenAI's SDK with `timeout: 2000` says 2: answered a second before it gives up, with why.
    const hurried = await chat({ ...workspace.headers, "X-Stainless-Timeout": "2" }, body);
    expect(hurried.status).toBe(503);
    expect(await hurried.json()).toMatchObject({ reason: "timeout" });
    expect(Date.now() - startedMs).toBeLessThan(2_000);

    startedMs = Date.now();
    const patient = await chat({ ...workspace.headers, "X-Stainless-Timeout": "600" }, body);
    expect(patient.status).toBe(200);
    expect(Date.now() - startedMs).toBeGreaterThanOrEqual(2_500);
  });

  it("tells a request every provider refused with each provider's reason, not only the last one's", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [
        { provider: "simulated", model: "sim-1?failure_rate=1&failure_status=400" },
        { provider: "simulated", model: "sim-2?failure_rate=1&failure_status=422" },
      ],
    });
    const response = await chat(workspace.headers, { messages: [{ role: "user", content: "x" }] });
    expect(response.status).toBe(400);
    const problem = (await response.json()) as { detail: string; failures: unknown[] };
    expect(problem).toMatchObject({ code: "BAD_REQUEST", reason: "invalid_request" });
    expect(problem.detail).toBe(
      "every provider refused the request: simulated:sim-1: simulated failure 400; simulated:sim-2: simulated failure 422",
    );
    // Refusals of the request are not retried: one attempt each.
    expect(problem.failures).toEqual([
      {
        provider: "simulated",
        model: "sim-1",
        attempts: 1,
        status: 400,
        code: "http_400",
        message: "simulated failure 400",
      },
      {
        provider: "simulated",
        model: "sim-2",
        attempts: 1,
        status: 422,
        code: "http_422",
        message: "simulated failure 422",
      },
    ]);
  });

  it("tells SDKs not to retry a 503 that retrying cannot mend: credentials every provider refuses", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "simulated", model: "sim-1?failure_rate=1&failure_status=401" }],
    });
    const response = await chat(workspace.headers, { messages: [{ role: "user", content: "x" }] });
    expect(response.status).toBe(503);
    expect(response.headers.get("X-Should-Retry")).toBe("false");
    expect(response.headers.get("Retry-After")).toBeNull();
    const problem = (await response.json()) as Record<string, unknown>;
    expect(problem).toMatchObject({ reason: "authentication", retryable: false });
    // What a provider says to our credentials is about the deployment's secret, not the workspace's to read.
    expect(problem.detail).toBe(
      "every provider refused our credentials: simulated:sim-1: provider answered 401: it refused this deployment's credentials",
    );
  });

  it("answers 503 naming what to configure, not the caller's 400, when the chain names no provider configured here", async () => {
    // No OPENAI_API_KEY nor ANTHROPIC_API_KEY in the test environment: both known, neither configured.
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [
        { provider: "openai", model: "gpt-4o-mini" },
        { provider: "anthropic", model: "claude-3-5-haiku-latest" },
      ],
    });
    const response = await chat(workspace.headers, { messages: [{ role: "user", content: "x" }] });
    expect(response.status).toBe(503);
    expect(response.headers.get("X-Should-Retry")).toBe("false");
    expect(await response.json()).toMatchObject({
      code: "DEPENDENCY_UNAVAILABLE",
      reason: "no_configured_provider",
      retryable: false,
      detail:
        "No provider in this workspace's routing chain is configured on this deployment: openai (OPENAI_API_KEY or OPENAI_BASE_URL), anthropic (ANTHROPIC_API_KEY). Configure one, or change the chain (PATCH /api/v1/workspace, llm.chain).",
    });
  });

  it("names LLM_DEFAULT_CHAIN, not the workspace's chain, for a workspace that set none", async () => {
    const router = createLlmRouter(
      llmConfig({ OPENAI_API_KEY: undefined, OPENAI_BASE_URL: undefined, LLM_DEFAULT_CHAIN: "openai:gpt-4o-mini" }),
      { logger: quietLogger },
    );
    const workspace = await workspaceWith(null);
    const failure = await router
      .chat({ messages: [{ role: "user", content: "x" }] }, { workspaceId: workspace.id, chargeKey: "default-chain" })
      .catch((error: unknown) => error);
    expect(failure).toMatchObject({
      kind: "no_configured_provider",
      message:
        "No provider in this deployment's default routing chain (LLM_DEFAULT_CHAIN; the workspace sets none of its own) is configured here: openai (OPENAI_API_KEY or OPENAI_BASE_URL). Configure one, or set the workspace's chain (PATCH /api/v1/workspace, llm.chain).",
    });
  });
});

describe("the OpenAPI document of POST /api/v1/llm/chat/completions", () => {
  it("names every status the route answers, with the headers each carries", async () => {
    const doc = (await (await fetcher(`${BASE}/openapi.json`)).json()) as Record<string, any>;
    const documented = doc.paths["/api/v1/llm/chat/completions"].post.responses as Record<
      string,
      { headers?: Record<string, { required?: boolean; $ref?: string }> }
    >;
    // The headers every route's responses share are references to components.headers.
    const resolved = (header: { required?: boolean; $ref?: string }): { required?: boolean } =>
      header.$ref ? doc.components.headers[header.$ref.replace("#/components/headers/", "")] : header;
    const SHARED = ["X-Request-Id", "X-API-Version", "RateLimit", "RateLimit-Policy"];
    const workspace = await workspaceWith(null);
    const post = (body: string, headers: Record<string, string> = workspace.headers, type = "application/json") =>
      fetcher(`${BASE}/api/v1/llm/chat/completions`, {
        method: "POST",
        headers: { ...headers, "Content-Type": type },
        body,
      });
    const message = { messages: [{ role: "user", content: "x" }] };
    const reader = await createTestKey(fetcher, BASE, workspace.key, ["tasks:read"]);
    // The first call spends the 1-token day (its prompt alone goes over); the next is refused.
    const spent = await workspaceWith(null, {
      daily_tokens: 1,
      monthly_tokens: null,
      daily_cost_usd: null,
      monthly_cost_usd: null,
    });
    await post(JSON.stringify(message), spent.headers);
    const failing = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "simulated", model: "sim-1?failure_rate=1&failure_status=503" }],
    });
    const answers = [
      await post(JSON.stringify(message)),
      await post("{not json"),
      await post(JSON.stringify(message), {}),
      await post(JSON.stringify(message), reader.headers),
      await post(JSON.stringify({ ...message, pad: "x".repeat(1024 * 1024) })),
      await post("x", workspace.headers, "text/plain"),
      await post(JSON.stringify({ messages: [] })),
      await post(JSON.stringify(message), spent.headers),
      await post(JSON.stringify(message), failing.headers),
    ];
    expect(answers.map((answer) => answer.status)).toEqual([200, 400, 401, 403, 413, 415, 422, 429, 503]);
    const budgetProblem = await answers[7].clone().json();
    for (const answer of answers) {
      const entry = documented[String(answer.status)];
      expect(entry, `status ${answer.status}`).toBeDefined();
      for (const [name, header] of Object.entries(entry.headers ?? {})) {
        if (resolved(header).required) expect(answer.headers.get(name), `${answer.status} ${name}`).not.toBeNull();
      }
      await answer.body?.cancel();
    }
    expect(Object.keys(documented["200"].headers ?? {})).toEqual(["X-LLM-Provider", "X-LLM-Simulated", ...SHARED]);
    // A spent budget: when it resets, and that retrying before then cannot help; both documented.
    expect(answers[7].headers.get("X-Should-Retry")).toBe("false");
    // Its members, as a refused task submission has them, are in the document's Problem.
    expect(budgetProblem).toMatchObject({
      reason: "budget_exhausted",
      period: "daily",
      metric: "tokens",
      retryable: false,
      retry_after_seconds: Number(answers[7].headers.get("Retry-After")),
    });
    expect(Object.keys(doc.components.schemas.Problem.properties)).toEqual(
      expect.arrayContaining(["reason", "retryable", "retry_after_seconds", "period", "metric", "max_bytes"]),
    );
    expect(Object.keys(documented["429"].headers ?? {}).sort()).toEqual(
      ["Retry-After", "X-Should-Retry", ...SHARED].sort(),
    );
    expect(answers[8].headers.get("Retry-After")).toBe("1");
    expect(Object.keys(documented["503"].headers ?? {}).sort()).toEqual(
      ["Retry-After", "X-Should-Retry", ...SHARED].sort(),
    );
    // Every 429 of every route carries Retry-After (the contract), and the document says so.
    for (const [path, operations] of Object.entries(doc.paths as Record<string, Record<string, any>>)) {
      for (const [method, operation] of Object.entries(operations)) {
        const limited = operation.responses?.["429"];
        if (limited) expect(resolved(limited.headers?.["Retry-After"] ?? {}).required, `${method} ${path}`).toBe(true);
      }
    }
  });

  it("declares the OpenAI fields it accepts and ignores, and those it refuses", async () => {
    const doc = (await (await fetcher(`${BASE}/openapi.json`)).json()) as Record<string, any>;
    const request = doc.components.schemas.ChatCompletionRequest;
    const ignored = [
      "store",
      "metadata",
      "user",
      "safety_identifier",
      "prompt_cache_key",
      "service_tier",
      "prediction",
      "verbosity",
    ];
    for (const field of ignored) {
      expect(request.properties[field]?.description, field).toMatch(/^Accepted and ignored: /);
      expect(request.description, field).toContain(`\`${field}\``);
    }
    for (const field of ["n", "logprobs", "top_logprobs", "logit_bias"]) {
      expect(request.properties[field]?.description, field).toMatch(/^Only /);
      expect(request.description, field).toContain(`\`${field}`);
    }
    for (const field of ["functions", "function_call", "audio", "web_search_options"]) {
      expect(request.properties[field]?.description, field).toMatch(/^Refused with 422 unless null/);
      expect(request.description, field).toContain(`\`${field}\``);
    }
    expect(request.properties.modalities?.description).toMatch(/^Only \["text"\]/);
  });
});

describe("errors in OpenAI's terms, for OpenAI's SDKs", () => {
  const sdk = (apiKey: string) =>
    new OpenAI({
      apiKey,
      baseURL: `${BASE}/api/v1/llm`,
      maxRetries: 0,
      fetch: (url, init) => fetcher(String(url), init),
    });
  const failure = (call: Promise<unknown>) =>
    call.then(
      () => expect.unreachable("the call succeeded"),
      (error) => error,
    );

  it("adds OpenAI's error object to the problem, which the SDK makes its message, type, code and param of", async () => {
    const workspace = await workspaceWith(null);
    const response = await chat(workspace.headers, { n: 2, messages: [{ role: "user", content: "x" }] });
    expect(response.status).toBe(422);
    expect(response.headers.get("Content-Type")).toBe("application/problem+json");
    const problem = (await response.json()) as Record<string, any>;
    // Additive: the problem's own members stay as they were.
    expect(problem).toMatchObject({ code: "VALIDATION_FAILED", detail: "The request body is invalid." });
    expect(problem.errors).toEqual([{ path: "n", message: expect.any(String) }]);
    expect(problem.error).toEqual({
      message: `The request body is invalid. n: ${problem.errors[0].message}`,
      type: "invalid_request_error",
      code: "validation_failed",
      param: "n",
    });

    const client = sdk(workspace.key);
    const invalid = await failure(
      client.chat.completions.create({ n: 2, model: "auto", messages: [{ role: "user", content: "x" }] }),
    );
    expect(invalid).toBeInstanceOf(OpenAI.UnprocessableEntityError);
    expect(invalid).toMatchObject({
      message: `422 ${problem.error.message}`,
      type: "invalid_request_error",
      code: "validation_failed",
      param: "n",
    });
    expect(await failure(sdk("mgx_not_a_key").models.list())).toMatchObject({
      status: 401,
      type: "invalid_request_error",
      code: "invalid_api_key",
    });
    const unknown = await failure(client.models.retrieve("gpt-5-imaginary"));
    expect(unknown).toMatchObject({ status: 404, type: "invalid_request_error", code: "model_not_found" });
    expect(unknown.message).toBe(
      '404 No model "gpt-5-imaginary" is offered to this workspace; GET /api/v1/llm/models lists them.',
    );
  });

  it("tells a spent budget as OpenAI's insufficient_quota, and providers that all failed as a server_error", async () => {
    // The first call spends the 1-token day (its prompt alone goes over); the next is refused.
    const spent = await workspaceWith(null, {
      daily_tokens: 1,
      monthly_tokens: null,
      daily_cost_usd: null,
      monthly_cost_usd: null,
    });
    const call = () =>
      sdk(spent.key).chat.completions.create({ model: "auto", messages: [{ role: "user", content: "x" }] });
    await call();
    const refused = await failure(call());
    expect(refused).toBeInstanceOf(OpenAI.RateLimitError);
    expect(refused).toMatchObject({ type: "insufficient_quota", code: "insufficient_quota" });
    expect(refused.message).toMatch(/^429 The daily token budget is exhausted/);

    const failing = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "simulated", model: "sim-1?failure_rate=1&failure_status=503" }],
    });
    const unavailable = await failure(
      sdk(failing.key).chat.completions.create({ model: "auto", messages: [{ role: "user", content: "x" }] }),
    );
    expect(unavailable).toMatchObject({ status: 503, type: "server_error", code: "all_providers_failed" });
    expect(unavailable.message).toMatch(/^503 every provider failed: simulated:sim-1: /);
  });

  it("leaves the problems of other routes as they are", async () => {
    const workspace = await workspaceWith(null);
    const response = await fetcher(`${BASE}/api/v1/tasks/task_missing`, { headers: workspace.headers });
    expect(response.status).toBe(404);
    expect(await response.json()).not.toHaveProperty("error");
  });
});

describe("GET /api/v1/providers", () => {
  it("lists every known provider, which are configured here, and the chain's models", async () => {
    const workspace = await workspaceWith({
      strategy: "cost",
      chain: [
        { provider: "simulated", model: "sim-1" },
        { provider: "openai", model: "gpt-4o-mini" },
      ],
    });
    const response = await fetcher(`${BASE}/api/v1/providers`, { headers: workspace.headers });
    expect(response.status).toBe(200);
    const body = (await response.json()) as {
      data: { provider: string; configured: boolean; simulated: boolean; models: unknown[] }[];
    };
    const byName = Object.fromEntries(body.data.map((entry) => [entry.provider, entry]));
    expect(Object.keys(byName).sort()).toEqual(["anthropic", "azure", "local", "openai", "simulated", "workers-ai"]);
    expect(byName.simulated).toMatchObject({
      configured: true,
      simulated: true,
      // Other tests' simulated models with settings are breakers of their own, listed beside it.
      models: expect.arrayContaining([expect.objectContaining({ model: "sim-1", in_chain: true, state: "closed" })]),
    });
    // No OPENAI_API_KEY in the test environment: known, in the chain, not configured.
    expect(byName.openai).toMatchObject({
      configured: false,
      simulated: false,
      models: [{ model: "gpt-4o-mini", in_chain: true }],
    });
  });

  it("pages with ?limit= and ?cursor= as every list does, and refuses a cursor it did not issue", async () => {
    const workspace = await workspaceWith({ strategy: "fallback", chain: [{ provider: "simulated", model: "sim-1" }] });
    const page = async (query: string) => {
      const response = await fetcher(`${BASE}/api/v1/providers${query}`, { headers: workspace.headers });
      return { status: response.status, body: (await response.json()) as Record<string, any> };
    };
    const whole = await page("");
    expect(whole.status).toBe(200);
    expect(whole.body.next_cursor).toBeNull();
    const names = whole.body.data.map((entry: { provider: string }) => entry.provider);
    expect(names.length).toBe(6);

    const seen: string[] = [];
    let query = "?limit=4";
    for (let pages = 1; ; pages++) {
      const { status, body } = await page(query);
      expect(status).toBe(200);
      seen.push(...body.data.map((entry: { provider: string }) => entry.provider));
      if (body.next_cursor === null) {
        expect(pages).toBe(2);
        break;
      }
      expect(body.data).toHaveLength(4);
      query = `?limit=4&cursor=${encodeURIComponent(body.next_cursor)}`;
    }
    expect(seen).toEqual(names);

    for (const bad of ["?cursor=not-a-cursor", "?limit=0", "?limit=101"]) {
      const refused = await page(bad);
      expect(refused.status, bad).toBe(422);
      expect(refused.body.code).toBe("VALIDATION_FAILED");
    }
  });

  it("shows a simulated model with settings as a breaker of its own, never in place of the plain model's", async () => {
    const plain = `sim-${crypto.randomUUID().slice(0, 8)}`;
    const failing = `${plain}?failure_rate=1&failure_status=500`;
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [
        { provider: "simulated", model: plain },
        { provider: "simulated", model: failing },
      ],
    });
    const answer = await chat(workspace.headers, {
      model: `simulated:${plain}`,
      messages: [{ role: "user", content: "hi" }],
    });
    expect(answer.status).toBe(200);
    const failedAtMs = Date.now();
    await env.PROVIDER_BREAKER.getByName("simulated").sync(
      failing,
      [1, 2, 3, 4, 5].map((index) => ({ atMs: failedAtMs + index, ok: false, error: "http_500" })),
    );
    const response = await fetcher(`${BASE}/api/v1/providers`, { headers: workspace.headers });
    const body = (await response.json()) as { data: { provider: string; models: Record<string, unknown>[] }[] };
    const models = body.data.find((entry) => entry.provider === "simulated")!.models;
    const mine = models.filter((entry) => String(entry.model).startsWith(plain));
    expect(mine).toMatchObject([
      { model: plain, in_chain: true, state: "closed", consecutive_failures: 0, last_error: null },
      { model: failing, in_chain: true, state: "open", consecutive_failures: 5, last_error: "http_500" },
    ]);
  });

  it("lists a model off the chain the workspace was charged for, never another workspace's", async () => {
    const mine = await workspaceWith({ strategy: "fallback", chain: [{ provider: "simulated", model: "sim-1" }] });
    const theirs = await workspaceWith({ strategy: "fallback", chain: [{ provider: "simulated", model: "sim-1" }] });
    const myModel = `sim-mine-${crypto.randomUUID().slice(0, 8)}`;
    const theirModel = `sim-theirs-${crypto.randomUUID().slice(0, 8)}`;
    for (const [workspace, model] of [
      [mine, myModel],
      [theirs, theirModel],
    ] as const) {
      const answer = await chat(workspace.headers, {
        model: `simulated:${model}`,
        messages: [{ role: "user", content: "hi" }],
      });
      expect(answer.status).toBe(200);
    }
    const listedFor = async (workspace: typeof mine) => {
      const response = await fetcher(`${BASE}/api/v1/providers`, { headers: workspace.headers });
      const body = (await response.json()) as { data: { provider: string; models: { model: string }[] }[] };
      return body.data.find((entry) => entry.provider === "simulated")!.models.map((entry) => entry.model);
    };
    // Usage rows land just after the answers (coalesced per isolate).
    let listed = await listedFor(mine);
    for (let tries = 0; tries < 100 && !listed.includes(myModel); tries++) {
      await new Promise((wake) => setTimeout(wake, 20));
      listed = await listedFor(mine);
    }
    expect(listed).toContain("sim-1");
    expect(listed).toContain(myModel);
    expect(listed).not.toContain(theirModel);
    expect(await listedFor(theirs)).toContain(theirModel);
    expect(await listedFor(theirs)).not.toContain(myModel);
  });

  it("forgets a breaker idle for a week", async () => {
    const kept = `sim-kept-${crypto.randomUUID().slice(0, 8)}`;
    const forgotten = `sim-forgotten-${crypto.randomUUID().slice(0, 8)}`;
    const failure = (atMs: number) => [{ atMs, ok: false, error: "http_503" }];
    const rows = await runInDurableObject(env.PROVIDER_BREAKER.getByName("simulated"), (_instance, state) => {
      // Written as the object would have written them then.
      const book = new BreakerBook(state.storage);
      const nowMs = Date.now();
      book.sync(kept, failure(nowMs - 2 * 86_400_000), nowMs - 2 * 86_400_000);
      book.sync(forgotten, failure(nowMs - 8 * 86_400_000), nowMs - 8 * 86_400_000);
      book.snapshot(nowMs);
      return state.storage.sql
        .exec<{ model: string }>("SELECT model FROM breaker_models WHERE model IN (?, ?)", kept, forgotten)
        .toArray()
        .map((row) => row.model);
    });
    expect(rows).toEqual([kept]);
  });
});

describe("GET /api/v1/usage", () => {
  async function usageOf(headers: Record<string, string>, query: string) {
    const response = await fetcher(`${BASE}/api/v1/usage${query}`, { headers });
    return { status: response.status, body: (await response.json()) as Record<string, any> };
  }

  it("narrows to one provider or model, with totals over the rows returned, and refuses a day that is not one", async () => {
    const workspace = await workspaceWith(null);
    for (const model of ["simulated:sim-1", "simulated:sim-2", "simulated:sim-2"]) {
      const answer = await chat(workspace.headers, { model, messages: [{ role: "user", content: "hi" }] });
      expect(answer.status).toBe(200);
    }
    let all = await usageOf(workspace.headers, "");
    for (let tries = 0; tries < 100 && all.body.totals.calls < 3; tries++) {
      await new Promise((wake) => setTimeout(wake, 20));
      all = await usageOf(workspace.headers, "");
    }
    expect(all.body.data.map((row: { model: string }) => row.model)).toEqual(["sim-1", "sim-2"]);

    const sim2 = await usageOf(workspace.headers, "?model=sim-2");
    expect(sim2.status).toBe(200);
    expect(sim2.body.data).toEqual([expect.objectContaining({ provider: "simulated", model: "sim-2", calls: 2 })]);
    expect(sim2.body.totals).toMatchObject({ calls: 2, total_tokens: sim2.body.data[0].total_tokens });
    expect((await usageOf(workspace.headers, "?provider=simulated")).body.totals.calls).toBe(3);
    expect((await usageOf(workspace.headers, "?provider=openai")).body).toMatchObject({
      data: [],
      totals: { calls: 0 },
    });

    const notADay = await usageOf(workspace.headers, "?from=2026-02-30");
    expect(notADay.status).toBe(422);
    expect(notADay.body.errors).toEqual([{ path: "from", message: "must be a calendar day, YYYY-MM-DD" }]);
  });

  it("refuses a provider the router does not know, rather than answering no usage for a misspelt name", async () => {
    const workspace = await workspaceWith(null);
    for (const provider of ["OpenAI", "open-ai", "gemini"]) {
      const answer = await usageOf(workspace.headers, `?provider=${provider}`);
      expect(answer.status).toBe(422);
      expect(answer.body).toMatchObject({ code: "VALIDATION_FAILED", errors: [{ path: "provider" }] });
      expect(answer.body.errors[0].message).toContain('"workers-ai"');
    }
    expect((await usageOf(workspace.headers, "?provider=workers-ai")).status).toBe(200);
  });
});
