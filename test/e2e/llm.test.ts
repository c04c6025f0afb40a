import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FakeAnthropic, startFakeAnthropic } from "../fakes/anthropic.ts";
import { type FakeOpenAi, startFakeOpenAi } from "../fakes/openai.ts";
import { createTestWorkspace, TEST_ADMIN_TOKEN, type TestWorkspace } from "../support/workspaces.ts";
import { startWorker, type WorkerProcess } from "./harness.ts";

/**
 * The router end to end: `wrangler dev` with fake OpenAI and Anthropic
 * servers on loopback, driven by the official `openai` npm client through
 * /api/v1/llm/chat/completions.
 */

let worker: WorkerProcess;
let openaiFake: FakeOpenAi;
/** The deployment's `local` server (Ollama, vLLM, LM Studio), an OpenAI-compatible fake of its own. */
let localFake: FakeOpenAi;
let anthropicFake: FakeAnthropic;
let workspace: TestWorkspace;
let client: OpenAI;

const ATTEMPT_TIMEOUT_MS = 1_500;

beforeAll(async () => {
  openaiFake = await startFakeOpenAi();
  localFake = await startFakeOpenAi();
  anthropicFake = await startFakeAnthropic();
  worker = await startWorker({
    vars: {
      ADMIN_TOKEN: TEST_ADMIN_TOKEN,
      OPENAI_API_KEY: "sk-fake",
      OPENAI_BASE_URL: `${openaiFake.url}/v1`,
      ANTHROPIC_API_KEY: "ak-fake",
      ANTHROPIC_BASE_URL: anthropicFake.url,
      LOCAL_LLM_BASE_URL: `${localFake.url}/v1`,
      LLM_DEFAULT_CHAIN: "openai:gpt-4o-mini,anthropic:claude-3-5-haiku-latest",
      LLM_ATTEMPT_TIMEOUT_MS: String(ATTEMPT_TIMEOUT_MS),
      LOG_LEVEL: "warn",
    },
  });
  workspace = await createTestWorkspace(fetch, worker.baseUrl);
  // The SDK's own retries are off so every retry seen here is the router's.
  client = new OpenAI({ apiKey: workspace.key, baseURL: `${worker.baseUrl}/api/v1/llm`, maxRetries: 0 });
});
afterAll(async () => {
  await worker?.stop();
  await openaiFake?.close();
  await localFake?.close();
  await anthropicFake?.close();
});

interface UsageRow {
  provider: string;
  model: string;
  calls: number;
  estimated_calls: number;
  interrupted_attempts: number;
  prompt_tokens: number;
  completion_tokens: number;
  cost_usd: number;
}

/** GET /api/v1/usage's rows once `ready` holds for them, or as they are after 10 s: rows land just after each call, coalesced per isolate. */
async function usageRows(headers: Record<string, string>, ready: (rows: UsageRow[]) => boolean): Promise<UsageRow[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const response = await fetch(`${worker.baseUrl}/api/v1/usage`, { headers });
    const rows = ((await response.json()) as { data: UsageRow[] }).data;
    if (ready(rows) || Date.now() > deadline) return rows;
    await new Promise((wake) => setTimeout(wake, 100));
  }
}

/** A workspace of its own routed OpenAI's `model` → Claude, and an SDK client for it (no retries of its own). */
async function openAiThenAnthropic(model: string): Promise<{ routed: TestWorkspace; routedClient: OpenAI }> {
  const routed = await createTestWorkspace(fetch, worker.baseUrl);
  const patch = await fetch(`${worker.baseUrl}/api/v1/workspace`, {
    method: "PATCH",
    headers: { ...routed.headers, "Content-Type": "application/json" },
    body: JSON.stringify({
      llm: {
        strategy: "fallback",
        chain: [
          { provider: "openai", model },
          { provider: "anthropic", model: "claude-3-5-haiku-latest" },
        ],
      },
    }),
  });
  expect(patch.status).toBe(200);
  return {
    routed,
    routedClient: new OpenAI({ apiKey: routed.key, baseURL: `${worker.baseUrl}/api/v1/llm`, maxRetries: 0 }),
  };
}

async function events(
  types: string,
  atLeast: number,
): Promise<{ event_type: string; data: Record<string, unknown> }[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const response = await fetch(`${worker.baseUrl}/api/v1/events?types=${types}&limit=100`, {
      headers: workspace.headers,
    });
    const body = (await response.json()) as { data: { event_type: string; data: Record<string, unknown> }[] };
    if (body.data.length >= atLeast || Date.now() > deadline) return body.data;
    await new Promise((wake) => setTimeout(wake, 100));
  }
}

describe("the official openai client", () => {
  it("passes the client's generation settings on to the provider", async () => {
    openaiFake.faults.plan([{ ok: true, content: '{"ok":true}', usage: { prompt: 10, completion: 4 } }]);
    const tools = [{ type: "function" as const, function: { name: "read_file", parameters: { type: "object" } } }];
    await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Answer in JSON" }],
      tools,
      tool_choice: { type: "function", function: { name: "read_file" } },
      response_format: { type: "json_object" },
      top_p: 0.5,
      stop: "END",
      seed: 42,
      frequency_penalty: 0.25,
      max_completion_tokens: 30,
      parallel_tool_calls: false,
    });
    const sent = JSON.parse(openaiFake.requests.at(-1)!.body.toString()) as Record<string, unknown>;
    expect(sent).toMatchObject({
      tool_choice: { type: "function", function: { name: "read_file" } },
      response_format: { type: "json_object" },
      top_p: 0.5,
      stop: ["END"],
      seed: 42,
      frequency_penalty: 0.25,
      max_completion_tokens: 30,
      parallel_tool_calls: false,
    });
    expect(sent).not.toHaveProperty("max_tokens");
  });

  it("lists the models a completion can name, and retrieves one", async () => {
    const ids: string[] = [];
    for await (const model of client.models.list()) ids.push(model.id);
    expect(ids.slice(0, 3)).toEqual(["auto", "openai:gpt-4o-mini", "anthropic:claude-3-5-haiku-latest"]);
    expect(ids).toContain("openai:gpt-4.1");
    const model = await client.models.retrieve("anthropic:claude-3-5-haiku-latest");
    expect(model).toMatchObject({ id: "anthropic:claude-3-5-haiku-latest", object: "model", owned_by: "anthropic" });
    await expect(client.models.retrieve("gpt-5-imaginary")).rejects.toMatchObject({ status: 404 });
  });

  it("completes a chat; tokens and cost_usd are what the upstream's usage implies", async () => {
    openaiFake.faults.plan([{ ok: true, content: "Hello from the fake", usage: { prompt: 1_000, completion: 500 } }]);
    const completion = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Say hello" }],
    });
    expect(completion.choices[0].message.content).toBe("Hello from the fake");
    expect(completion.usage).toMatchObject({ prompt_tokens: 1_000, completion_tokens: 500, total_tokens: 1_500 });
    // gpt-4o-mini: $0.15 in, $0.60 out per million.
    expect((completion as unknown as { x_mgx: { cost_usd: number; provider: string } }).x_mgx).toMatchObject({
      provider: "openai",
      cost_usd: 0.00045,
    });
    const sent = JSON.parse(openaiFake.requests.at(-1)!.body.toString()) as { model: string };
    expect(sent.model).toBe("gpt-4o-mini");
    expect(openaiFake.requests.at(-1)!.headers.authorization).toBe("Bearer sk-fake");
  });

  it("streams a chat, with the usage chunk the upstream reported", async () => {
    openaiFake.faults.plan([{ ok: true, chunks: 12, usage: { prompt: 40, completion: 12 } }]);
    const stream = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Stream it" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage: OpenAI.CompletionUsage | undefined | null;
    let finish: string | null | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe(Array(12).fill("chunk").join(" "));
    expect(finish).toBe("stop");
    expect(usage).toMatchObject({ prompt_tokens: 40, completion_tokens: 12, total_tokens: 52 });
    const upstream = JSON.parse(openaiFake.requests.at(-1)!.body.toString()) as Record<string, unknown>;
    expect(upstream).toMatchObject({ stream: true, stream_options: { include_usage: true } });
  });

  it("parses a 10,000-chunk upstream stream exactly, relayed chunk by chunk", async () => {
    openaiFake.faults.plan([{ ok: true, chunks: 10_000, usage: { prompt: 10, completion: 10_000 } }]);
    const stream = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "long" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let contentChunks = 0;
    let words = 0;
    let usage: OpenAI.CompletionUsage | undefined | null;
    for await (const chunk of stream) {
      const content = chunk.choices[0]?.delta?.content;
      if (content) {
        contentChunks++;
        words += content.trim() === "chunk" ? 1 : 0;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    expect(contentChunks).toBe(10_000);
    expect(words).toBe(10_000);
    expect(usage?.completion_tokens).toBe(10_000);
  });
});

describe("fault injection", () => {
  it("a 429 with Retry-After: 1 is retried after about a second and succeeds", async () => {
    openaiFake.faults.plan([
      { status: 429, headers: { "Retry-After": "1" } },
      { ok: true, content: "second time" },
    ]);
    const before = openaiFake.arrivals.length;
    const completion = await client.chat.completions.create({
      model: "openai:gpt-4o-mini-429",
      messages: [{ role: "user", content: "retry me" }],
    });
    expect(completion.choices[0].message.content).toBe("second time");
    const [first, second] = openaiFake.arrivals.slice(before);
    expect(second - first).toBeGreaterThanOrEqual(1_000);
    expect(second - first).toBeLessThan(1_700);
  });

  it("three 500s fail over to Anthropic with an llm.provider.fallback event", async () => {
    // Its own workspace, routed openai → anthropic, so the fallback is the next provider.
    const { routed, routedClient } = await openAiThenAnthropic("gpt-4o-mini-500");
    openaiFake.faults.plan([{ status: 500 }, { status: 500 }, { status: 500 }]);
    anthropicFake.faults.plan([{ ok: true, content: "Claude answers", usage: { prompt: 1_200, completion: 350 } }]);
    const before = openaiFake.arrivals.length;
    const completion = await routedClient.chat.completions.create({
      model: "auto",
      messages: [{ role: "user", content: "fail over" }],
    });
    expect(openaiFake.arrivals.length - before).toBe(3);
    expect(completion.choices[0].message.content).toBe("Claude answers");
    expect(completion.model).toBe("claude-3-5-haiku-latest");
    expect((completion as unknown as { x_mgx: { cost_usd: number; attempts: number } }).x_mgx).toMatchObject({
      cost_usd: 0.00236,
      attempts: 4,
    });
    const deadline = Date.now() + 10_000;
    let fallback: { data: Record<string, unknown> }[] = [];
    while (fallback.length === 0 && Date.now() < deadline) {
      const response = await fetch(`${worker.baseUrl}/api/v1/events?types=llm.provider.fallback`, {
        headers: routed.headers,
      });
      fallback = ((await response.json()) as { data: { data: Record<string, unknown> }[] }).data;
      if (fallback.length === 0) await new Promise((wake) => setTimeout(wake, 100));
    }
    expect(fallback).toHaveLength(1);
    expect(fallback[0].data).toMatchObject({
      from_provider: "openai",
      from_model: "gpt-4o-mini-500",
      to_provider: "anthropic",
      to_model: "claude-3-5-haiku-latest",
      reason: "error_rate",
    });
    const sent = anthropicFake.requests.at(-1)!;
    expect(sent.headers["x-api-key"]).toBe("ak-fake");
    expect(sent.headers["anthropic-version"]).toBe("2023-06-01");
  });

  it("a hung upstream times out and is retried; a reset connection is retried too", async () => {
    openaiFake.faults.plan([{ hang: true }, { reset: true }, { ok: true, content: "third time lucky" }]);
    const before = openaiFake.arrivals.length;
    const startedMs = Date.now();
    const completion = await client.chat.completions.create({
      model: "openai:gpt-4o-mini-hang",
      messages: [{ role: "user", content: "hang then reset" }],
    });
    expect(completion.choices[0].message.content).toBe("third time lucky");
    const elapsedMs = Date.now() - startedMs;
    // The hung attempt is given up at its timeout, not later: then two backoffs (at most 500 ms and 1 s).
    expect(elapsedMs).toBeGreaterThanOrEqual(ATTEMPT_TIMEOUT_MS);
    expect(elapsedMs).toBeLessThan(ATTEMPT_TIMEOUT_MS + 1_500 + 1_000);
    expect(openaiFake.arrivals.length - before).toBe(3);
    // The error events land in the background, after the 429 test's: wait for both of this model's.
    let mine: { data: Record<string, unknown> }[] = [];
    for (const deadline = Date.now() + 10_000; mine.length < 2 && Date.now() < deadline; ) {
      const errors = await events("llm.provider.error", 1);
      mine = errors.filter((event) => event.data.model === "gpt-4o-mini-hang");
      if (mine.length < 2) await new Promise((wake) => setTimeout(wake, 100));
    }
    expect(mine.map((event) => event.data.error_type)).toEqual(["timeout", "connection_error"]);
  });

  it("streams from Anthropic when it is asked for by name", async () => {
    anthropicFake.faults.plan([{ ok: true, chunks: 6, usage: { prompt: 9, completion: 6 } }]);
    const stream = await client.chat.completions.create({
      model: "anthropic:claude-3-5-haiku-latest",
      messages: [
        { role: "system", content: "terse" },
        { role: "user", content: "hi" },
      ],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage: OpenAI.CompletionUsage | undefined | null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe(Array(6).fill("claude").join(" "));
    expect(usage).toMatchObject({ prompt_tokens: 9, completion_tokens: 6 });
    const sent = JSON.parse(anthropicFake.requests.at(-1)!.body.toString()) as Record<string, unknown>;
    expect(sent).toMatchObject({ system: "terse", stream: true, messages: [{ role: "user" }] });
  });

  it("gets JSON that fits the schema from Anthropic, through a forced answer tool, whole and streamed", async () => {
    const schema = {
      type: "object",
      properties: { name: { type: "string" }, age: { type: "integer" } },
      required: ["name", "age"],
    };
    const answer = '{"name":"Alice","age":30}';
    const responseFormat = { type: "json_schema" as const, json_schema: { name: "person", schema } };
    const ask = {
      model: "anthropic:claude-3-5-haiku-latest",
      messages: [{ role: "user" as const, content: "Alice, 30" }],
    };
    anthropicFake.faults.plan([
      { ok: true, content: answer },
      { ok: true, content: answer, chunks: 5 },
    ]);
    const completion = await client.chat.completions.create({ ...ask, response_format: responseFormat });
    expect(completion.choices[0]).toMatchObject({ message: { content: answer }, finish_reason: "stop" });
    expect(completion.choices[0].message.tool_calls ?? []).toEqual([]);
    const sent = JSON.parse(anthropicFake.requests.at(-1)!.body.toString()) as Record<string, unknown>;
    expect(sent).toMatchObject({
      tools: [{ name: "person", input_schema: schema }],
      tool_choice: { type: "tool", name: "person" },
    });

    const stream = await client.chat.completions.create({ ...ask, response_format: responseFormat, stream: true });
    const pieces: string[] = [];
    let finish: string | null | undefined;
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content) pieces.push(chunk.choices[0].delta.content);
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(pieces.length).toBe(5);
    expect(JSON.parse(pieces.join(""))).toEqual({ name: "Alice", age: 30 });
    expect(finish).toBe("stop");
  });

  it("usage by day, provider and model adds up what was charged", async () => {
    // Usage rows land just after each response: wait for the last one.
    const rows = await usageRows(
      workspace.headers,
      (found) => found.find((row) => row.provider === "anthropic")?.calls === 3,
    );
    // Streamed by name once (9 + 6), then the JSON answer whole (30 + 4) and streamed in five chunks (30 + 5).
    const anthropic = rows.find((row) => row.provider === "anthropic");
    expect(anthropic).toMatchObject({ calls: 3, estimated_calls: 0, prompt_tokens: 69, completion_tokens: 15 });
    // Haiku: $0.80 in, $4 out per million.
    expect(anthropic?.cost_usd).toBeCloseTo(69 * 0.8e-6 + 15 * 4e-6, 12);
    // The settings (10 + 4), hello (1,000 + 500), streamed (40 + 12) and 10,000-chunk (10 + 10,000) calls.
    const openai = rows.find((row) => row.model === "gpt-4o-mini");
    expect(openai).toMatchObject({ calls: 4, estimated_calls: 0, prompt_tokens: 1_060, completion_tokens: 10_516 });
    // gpt-4o-mini: $0.15 in, $0.60 out per million.
    expect(openai?.cost_usd).toBeCloseTo(1_060 * 0.15e-6 + 10_516 * 0.6e-6, 12);
  });
});

describe("the circuit breaker under wrangler dev", () => {
  it("five failures open it; later calls skip that provider until the half-open trial, whose success closes it", async () => {
    // Its own workspace and model (a breaker of its own), routed openai → anthropic. A 501 is a failure that
    // counts and is not retried, so each call fails over after exactly one OpenAI attempt.
    const model = "gpt-4o-mini-breaker";
    const { routed, routedClient } = await openAiThenAnthropic(model);
    const call = async () => {
      const completion = await routedClient.chat.completions.create({
        model: "auto",
        messages: [{ role: "user", content: "breaker" }],
      });
      return {
        provider: (completion as unknown as { x_mgx: { provider: string } }).x_mgx.provider,
        content: completion.choices[0].message.content,
      };
    };
    type Breaker = { state: string; consecutive_failures: number; retry_at: string | null };
    /** The model's breaker in GET /api/v1/providers once `ready` holds (synced in the background), or after `waitMs`. */
    const breaker = async (ready: (seen: Breaker) => boolean, waitMs = 5_000): Promise<Breaker | undefined> => {
      const deadline = Date.now() + waitMs;
      for (;;) {
        const response = await fetch(`${worker.baseUrl}/api/v1/providers`, { headers: routed.headers });
        const body = (await response.json()) as {
          data: { provider: string; models: (Breaker & { model: string })[] }[];
        };
        const seen = body.data
          .find((entry) => entry.provider === "openai")
          ?.models.find((entry) => entry.model === model);
        if ((seen && ready(seen)) || Date.now() > deadline) return seen;
        await new Promise((wake) => setTimeout(wake, 200));
      }
    };

    openaiFake.faults.plan(Array.from({ length: 5 }, () => ({ status: 501 })));
    anthropicFake.faults.plan(Array.from({ length: 8 }, () => ({ ok: true as const, content: "Claude answers" })));
    const before = openaiFake.arrivals.length;
    for (let n = 0; n < 4; n++) expect(await call()).toEqual({ provider: "anthropic", content: "Claude answers" });
    expect(openaiFake.arrivals.length - before).toBe(4);
    // Four failures in a row: still closed.
    expect(await breaker((seen) => seen.consecutive_failures === 4)).toMatchObject({
      state: "closed",
      consecutive_failures: 4,
    });
    expect(await call()).toEqual({ provider: "anthropic", content: "Claude answers" });
    expect(openaiFake.arrivals.length - before).toBe(5);
    const opened = await breaker((seen) => seen.state === "open");
    expect(opened).toMatchObject({ state: "open", retry_at: expect.any(String) });

    // Open: calls go straight to Anthropic, OpenAI is not asked (its fake would now answer).
    for (let n = 0; n < 3; n++) expect(await call()).toEqual({ provider: "anthropic", content: "Claude answers" });
    expect(openaiFake.arrivals.length - before).toBe(5);
    // Each call served by Anthropic is told as a fallback: the five that failed over, the three that passed over.
    let passedOver: { data: Record<string, unknown> }[] = [];
    for (const deadline = Date.now() + 5_000; passedOver.length < 8 && Date.now() < deadline; ) {
      await new Promise((wake) => setTimeout(wake, 100));
      const response = await fetch(`${worker.baseUrl}/api/v1/events?types=llm.provider.fallback&limit=100`, {
        headers: routed.headers,
      });
      passedOver = ((await response.json()) as { data: { data: Record<string, unknown> }[] }).data;
    }
    expect(passedOver).toHaveLength(8);
    for (const event of passedOver) {
      expect(event.data).toMatchObject({ from_provider: "openai", from_model: model, reason: "error_rate" });
    }

    // Half-open 30 s after it opened: the next call is OpenAI's trial, and its success closes the breaker.
    const halfOpen = await breaker((seen) => seen.state === "half_open", 40_000);
    expect(halfOpen?.state).toBe("half_open");
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(opened!.retry_at!));
    openaiFake.faults.plan([{ ok: true, content: "OpenAI is back" }]);
    expect(await call()).toEqual({ provider: "openai", content: "OpenAI is back" });
    expect(openaiFake.arrivals.length - before).toBe(6);
    expect(await breaker((seen) => seen.state === "closed")).toMatchObject({
      state: "closed",
      consecutive_failures: 0,
    });
  }, 60_000);
});

describe("budgets under wrangler dev", () => {
  it("charges every call exactly while calls draw on the isolate's lease, and answers 429 once a budget is spent", async () => {
    const budgeted = await createTestWorkspace(fetch, worker.baseUrl);
    const put = (daily_tokens: number) =>
      fetch(`${worker.baseUrl}/api/v1/budgets`, {
        method: "PUT",
        headers: { ...budgeted.headers, "Content-Type": "application/json" },
        body: JSON.stringify({ daily_tokens, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null }),
      });
    expect((await put(1_000_000)).status).toBe(200);
    const chat = () =>
      fetch(`${worker.baseUrl}/api/v1/llm/chat/completions`, {
        method: "POST",
        headers: { ...budgeted.headers, "Content-Type": "application/json" },
        body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }], max_tokens: 20 }),
      });
    // 29 tokens a call (the fake's default usage: 21 prompt, 8 completion); ten at a time, so calls share
    // the lease, wait for none and finish in any order.
    for (let wave = 0; wave < 3; wave++) {
      const statuses = await Promise.all(Array.from({ length: 10 }, async () => (await chat()).status));
      expect(statuses).toEqual(Array(10).fill(200));
    }
    type Status = { daily: { tokens: number; reserved_tokens: number }; exhausted: boolean };
    const status = async () =>
      (await (await fetch(`${worker.baseUrl}/api/v1/budgets`, { headers: budgeted.headers })).json()) as Status;
    // Leased charges reach the limiter in batches, within about 250 ms.
    const deadline = Date.now() + 5_000;
    let seen = await status();
    while (seen.daily.tokens < 30 * 29 && Date.now() < deadline) {
      await new Promise((wake) => setTimeout(wake, 100));
      seen = await status();
    }
    expect(seen.daily.tokens).toBe(30 * 29);
    // What is still reserved is the open lease's rest: no more than a quarter of the room it was lent from.
    expect(seen.daily.reserved_tokens).toBeLessThanOrEqual(250_000);

    // Lowered under what is used: the next call is refused, as a budget error.
    expect((await put(800)).status).toBe(200);
    const refused = await chat();
    expect(refused.status).toBe(429);
    expect(await refused.json()).toMatchObject({ reason: "budget_exhausted", period: "daily", metric: "tokens" });

    // The official client, with its default retries, takes the refusal at once: one request, no retry.
    const requests: string[] = [];
    const sdk = new OpenAI({
      apiKey: budgeted.key,
      baseURL: `${worker.baseUrl}/api/v1/llm`,
      fetch: (url, init) => {
        requests.push(String(url));
        return fetch(url, init);
      },
    });
    const error = await sdk.chat.completions
      .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.RateLimitError);
    // In OpenAI's terms (the problem's `error` member): its message, and a spent quota's type and code.
    expect(error).toMatchObject({
      status: 429,
      type: "insufficient_quota",
      code: "insufficient_quota",
      message: expect.stringMatching(/^429 The daily token budget is exhausted/),
    });
    expect(requests).toHaveLength(1);
  });
});

describe("a client that leaves a stream early, under wrangler dev", () => {
  it("is charged for the prompt and what it was sent, once the runtime cancels the response", async () => {
    const own = await createTestWorkspace(fetch, worker.baseUrl);
    // Two chunks ("chunk", " chunk"), then the provider stalls: only the client's leaving ends the call.
    openaiFake.faults.plan([{ ok: true, chunks: 8, stallAfterChunks: 2 }]);
    const leaving = new AbortController();
    const response = await fetch(`${worker.baseUrl}/api/v1/llm/chat/completions`, {
      method: "POST",
      headers: { ...own.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ model: "gpt-4o-mini", stream: true, messages: [{ role: "user", content: "hi" }] }),
      signal: leaving.signal,
    });
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    let text = "";
    while (!text.includes(" chunk")) text += new TextDecoder().decode((await reader.read()).value);
    leaving.abort();

    const rows = await usageRows(own.headers, (found) => found.length > 0);
    // Estimated as a reservation is: "hi" is 1 token plus 4 for the message; "chunk chunk" (11 characters) is 3.
    expect(rows).toEqual([
      expect.objectContaining({
        provider: "openai",
        calls: 1,
        estimated_calls: 1,
        prompt_tokens: 5,
        completion_tokens: 3,
      }),
    ]);
  });
});

describe("a client that leaves before a completion is answered, under wrangler dev", () => {
  it("is charged what the provider reported, as the call runs on", async () => {
    const own = await createTestWorkspace(fetch, worker.baseUrl);
    openaiFake.faults.plan([{ ok: true, latencyMs: 1_000, usage: { prompt: 40, completion: 9 } }]);
    const leaving = new AbortController();
    const answered = fetch(`${worker.baseUrl}/api/v1/llm/chat/completions`, {
      method: "POST",
      headers: { ...own.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
      signal: leaving.signal,
    });
    await new Promise((wake) => setTimeout(wake, 300));
    leaving.abort();
    await expect(answered).rejects.toThrow();

    const rows = await usageRows(own.headers, (found) => found.length > 0);
    expect(rows).toEqual([
      expect.objectContaining({
        provider: "openai",
        calls: 1,
        estimated_calls: 0,
        prompt_tokens: 40,
        completion_tokens: 9,
      }),
    ]);
  });
});

describe("a long whole answer and the client's timeout, under wrangler dev", () => {
  it("is told why before the SDK's own timer fires, not answered to no one after it", async () => {
    const own = await createTestWorkspace(fetch, worker.baseUrl);
    // A frame every 400 ms, 20 of them: never a stall (the attempt timeout is 1.5 s), but 8 s to write whole.
    openaiFake.faults.plan([{ ok: true, chunks: 20, frameDelayMs: 400 }]);
    const ownClient = new OpenAI({ apiKey: own.key, baseURL: `${worker.baseUrl}/api/v1/llm`, maxRetries: 0 });
    const startedMs = Date.now();
    // A call's own timeout is sent as X-Stainless-Timeout (3 s; the client's default timeout is not): the call's
    // deadline is 2 s.
    const failure = await ownClient.chat.completions
      .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "write at length" }] }, { timeout: 3_000 })
      .catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(OpenAI.APIError);
    expect(failure).not.toBeInstanceOf(OpenAI.APIConnectionTimeoutError);
    expect((failure as InstanceType<typeof OpenAI.APIError>).status).toBe(503);
    expect(Date.now() - startedMs).toBeLessThan(3_000);
    // Charged what the provider read and wrote until then, as a timed-out attempt, not a call.
    const rows = await usageRows(own.headers, (found) => found.length > 0);
    expect(rows).toEqual([expect.objectContaining({ provider: "openai", calls: 0 })]);
    expect(rows[0].completion_tokens).toBeGreaterThan(0);
  });
});

describe("a local server that refuses to stream, under wrangler dev", () => {
  /** A workspace of its own routed to the local server's `model` alone, and an SDK client for it. */
  async function localOnly(model: string): Promise<{ own: TestWorkspace; ownClient: OpenAI }> {
    const own = await createTestWorkspace(fetch, worker.baseUrl);
    const patch = await fetch(`${worker.baseUrl}/api/v1/workspace`, {
      method: "PATCH",
      headers: { ...own.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ llm: { strategy: "fallback", chain: [{ provider: "local", model }] } }),
    });
    expect(patch.status).toBe(200);
    return {
      own,
      ownClient: new OpenAI({ apiKey: own.key, baseURL: `${worker.baseUrl}/api/v1/llm`, maxRetries: 0 }),
    };
  }
  /** How the local server was asked each request since `before`: as a stream, or whole. */
  const askedSince = (before: number) =>
    localFake.requests
      .slice(before)
      .map((request) => ((JSON.parse(request.body.toString()) as { stream?: boolean }).stream ? "stream" : "whole"));

  it("answers a long whole call asked whole after the stream's refusal, and the next asked whole at once", async () => {
    // A model the price table does not know, without max_tokens: its answer may take longer to write than the
    // attempt timeout, so the router asks it as a stream.
    const model = "qwen-no-stream";
    const { own, ownClient } = await localOnly(model);
    localFake.faults.plan([], {
      ok: true,
      refuseStream: true,
      content: "The report.",
      usage: { prompt: 11, completion: 3 },
    });
    const before = localFake.requests.length;
    const ask = () =>
      ownClient.chat.completions.create({ model: "auto", messages: [{ role: "user", content: "Write the report" }] });

    const first = await ask();
    expect(first.choices[0].message.content).toBe("The report.");
    expect(askedSince(before)).toEqual(["stream", "whole"]);
    const second = await ask();
    expect(second.choices[0].message.content).toBe("The report.");
    expect(askedSince(before)).toEqual(["stream", "whole", "whole"]);

    // The refusal counted nothing against the server's breaker.
    const response = await fetch(`${worker.baseUrl}/api/v1/providers`, { headers: own.headers });
    const listed = (await response.json()) as { data: { provider: string; models: Record<string, unknown>[] }[] };
    const breaker = listed.data.find((entry) => entry.provider === "local")?.models.find((m) => m.model === model);
    expect(breaker).toMatchObject({ state: "closed", consecutive_failures: 0, error_rate: 0, last_error: null });
    // One usage row a call, the server's own figures: the refused request is charged nothing.
    const rows = await usageRows(own.headers, (found) => found[0]?.calls === 2);
    expect(rows).toEqual([
      expect.objectContaining({
        provider: "local",
        model,
        calls: 2,
        estimated_calls: 0,
        prompt_tokens: 22,
        completion_tokens: 6,
      }),
    ]);
  });

  it("still fails a long whole call on a 400 that is not about streaming, asking once", async () => {
    const { ownClient } = await localOnly("qwen-short-context");
    const tooLong = {
      error: { message: "This model's maximum context length is 4096 tokens.", type: "invalid_request_error" },
    };
    localFake.faults.plan([{ status: 400, body: tooLong }], { ok: true });
    const before = localFake.requests.length;
    const failure = await ownClient.chat.completions
      .create({ model: "auto", messages: [{ role: "user", content: "Write the report" }] })
      .catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(OpenAI.APIError);
    expect((failure as InstanceType<typeof OpenAI.APIError>).status).toBe(400);
    expect(askedSince(before)).toEqual(["stream"]);
  });
});

describe("a long whole answer whose connection is reset mid-answer, under wrangler dev", () => {
  it("is answered by the retry, and the broken attempt is charged and told as interrupted, not as a call", async () => {
    const own = await createTestWorkspace(fetch, worker.baseUrl);
    // Asked as a stream (a whole answer without max_tokens may take longer to write than the attempt timeout):
    // three of six pieces written, then the socket is destroyed; the retry answers whole.
    openaiFake.faults.plan([
      { ok: true, chunks: 6, resetAfterChunks: 3 },
      { ok: true, content: "answered on the retry", usage: { prompt: 12, completion: 5 } },
    ]);
    const ownClient = new OpenAI({ apiKey: own.key, baseURL: `${worker.baseUrl}/api/v1/llm`, maxRetries: 0 });
    const completion = await ownClient.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "write at length" }],
    });
    expect(completion.choices[0].message.content).toBe("answered on the retry");
    const figures = (completion as unknown as { x_mgx: Record<string, any> }).x_mgx;
    expect(figures).toMatchObject({ attempts: 2 });
    expect(figures.interrupted_attempts).toEqual([
      expect.objectContaining({
        provider: "openai",
        model: "gpt-4o-mini",
        prompt_tokens: expect.any(Number),
        // Why it broke: the socket was reset mid-answer.
        error: { code: "connection", message: expect.stringContaining("connection to the provider failed") },
      }),
    ]);
    const [broken] = figures.interrupted_attempts as { completion_tokens: number; cost_usd: number }[];
    expect(broken.completion_tokens).toBeGreaterThan(0);
    expect(broken.cost_usd).toBeGreaterThan(0);
    // One call, and the broken attempt counted apart, its tokens in the sums as it was charged.
    const rows = await usageRows(own.headers, (found) => found.length > 0 && found[0].calls === 1);
    expect(rows).toEqual([expect.objectContaining({ provider: "openai", calls: 1, interrupted_attempts: 1 })]);
    expect(rows[0].completion_tokens).toBe(5 + broken.completion_tokens);
  });
});
