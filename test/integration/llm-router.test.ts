import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app.ts";
import { createDb } from "../../src/db/client.ts";
import { Logger } from "../../src/lib/logger.ts";
import { type ApiError, problemBody } from "../../src/lib/problem.ts";
import { llmErrorToApiError } from "../../src/llm/http-errors.ts";
import { breakerClientFor, createLlmRouter, LlmError } from "../../src/llm/index.ts";
import { costUsd } from "../../src/llm/prices.ts";
import { providerOverview } from "../../src/llm/providers.ts";
import { findCharge } from "../../src/llm/usage.ts";
import {
  anthropicMessage,
  BASE,
  eventsOf,
  fakeUpstreams,
  fetcher,
  hang,
  llmConfig,
  openAiCompletion,
  problem,
  quietLogger,
  workspaceWith,
} from "../support/llm.ts";

/**
 * The router against fake OpenAI and Anthropic upstreams (global fetch
 * intercepted inside workerd), with the real D1, EventHub, WorkspaceLimiter
 * and ProviderBreaker bindings.
 */

afterEach(() => vi.restoreAllMocks());

const messages = [{ role: "user" as const, content: "Refactor the parser." }];

/** A chain of one OpenAI model. */
const openAiOnly = (model: string) => workspaceWith({ strategy: "fallback", chain: [{ provider: "openai", model }] });

/** A chain of an OpenAI model (named apart per test, for a breaker of its own) falling back to Claude Haiku. */
const openAiThenHaiku = (model: string) =>
  workspaceWith({
    strategy: "fallback",
    chain: [
      { provider: "openai", model },
      { provider: "anthropic", model: "claude-3-5-haiku-latest" },
    ],
  });
/** Reads a routed stream to its end, as a caller does: rejects with the error that ended it. */
async function drain(routed: { deltas: AsyncIterable<unknown> }): Promise<void> {
  for await (const _event of routed.deltas);
}

/** A router whose backoff sleeps are only recorded (ms), so a test sees every wait it would have made. */
function routerRecordingWaits() {
  const waits: number[] = [];
  const router = createLlmRouter(llmConfig(), {
    logger: quietLogger,
    overrides: { sleep: async (ms) => void waits.push(ms) },
  });
  return { router, waits };
}

/** OpenAI's answer when the account's quota is spent: a 429 that no retry mends. */
const openAiQuotaSpent = () =>
  Response.json(
    { error: { message: "You exceeded your current quota.", type: "insufficient_quota", code: "insufficient_quota" } },
    { status: 429 },
  );

const OPENAI = "openai.test";
const ANTHROPIC = "anthropic.test";

describe("retries", () => {
  it("a 429 with Retry-After: 1 is retried after about a second and succeeds", async () => {
    const workspace = await openAiOnly("gpt-4o-mini");
    const fake = fakeUpstreams({
      [OPENAI]: (_request, call) => (call === 1 ? problem(429, { "Retry-After": "1" }) : openAiCompletion("done")),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    // An isolate's first call to a model fetches its breaker's copy first (one round trip), not the wait timed here.
    await breakerClientFor(llmConfig()).known(["openai:gpt-4o-mini"]);
    const startedMs = Date.now();
    const result = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "retry-after" });
    const elapsedMs = Date.now() - startedMs;
    expect(result).toMatchObject({ provider: "openai", model: "gpt-4o-mini", attempts: 2, simulated: false });
    expect(fake.count(OPENAI)).toBe(2);
    // The provider's wait, not a jittered backoff: at least 1 s, and not much more.
    expect(elapsedMs).toBeGreaterThanOrEqual(1_000);
    expect(elapsedMs).toBeLessThan(1_600);
    const [event] = await eventsOf(workspace, "llm.provider.error", 1);
    expect(event.data).toMatchObject({
      provider: "openai",
      model: "gpt-4o-mini",
      error_type: "rate_limit",
      error_code: "server_error",
      retry_count: 0,
      fallback_triggered: false,
      http_status: 429,
    });
  });

  it("three 500s fail over to the next provider, with backoff between and a fallback event", async () => {
    const workspace = await openAiThenHaiku("gpt-4o-mini-failover");
    const fake = fakeUpstreams({ [OPENAI]: () => problem(500), [ANTHROPIC]: () => anthropicMessage("from claude") });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const { router, waits } = routerRecordingWaits();
    const result = await router.chat(
      { messages },
      { workspaceId: workspace.id, chargeKey: "failover", taskId: "task_x" },
    );
    expect(result).toMatchObject({ provider: "anthropic", model: "claude-3-5-haiku-latest", attempts: 4 });
    expect(result.message.content).toBe("from claude");
    expect(fake.count(OPENAI)).toBe(3);
    expect(waits).toHaveLength(2);
    expect(waits[0]).toBeLessThan(500);
    expect(waits[1]).toBeLessThan(1_000);
    const fallbacks = await eventsOf(workspace, "llm.provider.fallback", 1);
    expect(fallbacks).toHaveLength(1);
    expect(fallbacks[0]).toMatchObject({
      task_id: "task_x",
      data: {
        from_provider: "openai",
        to_provider: "anthropic",
        from_model: "gpt-4o-mini-failover",
        to_model: "claude-3-5-haiku-latest",
        reason: "error_rate",
      },
    });
    const errors = await eventsOf(workspace, "llm.provider.error", 3);
    expect(errors.map((event) => event.version)).toEqual(["1.1", "1.1", "1.1"]);
    // A 500 is a connection_error in the seed's terms; its status says it was the server's answer.
    expect(
      errors.map((event) => [
        event.data.retry_count,
        event.data.fallback_triggered,
        event.data.error_type,
        event.data.http_status,
      ]),
    ).toEqual([
      [0, false, "connection_error", 500],
      [1, false, "connection_error", 500],
      [2, true, "connection_error", 500],
    ]);
  });

  it("an attempt cut short by the call's deadline, within the provider's attempt timeout, is no breaker failure", async () => {
    const model = `gpt-4o-mini-deadline-${crypto.randomUUID().slice(0, 6)}`;
    const workspace = await openAiOnly(model);
    const fake = fakeUpstreams({ [OPENAI]: (request) => hang(request) });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    // The default attempt timeout is 60 s; the call has 300 ms left, as a task near its own timeout does.
    const error = await router
      .chat({ messages }, { workspaceId: workspace.id, chargeKey: "near-deadline", deadlineMs: Date.now() + 300 })
      .catch((caught: unknown) => caught);
    expect(error).toMatchObject({ kind: "timeout" });
    expect(fake.count(OPENAI)).toBe(1);
    const breaker = breakerClientFor(llmConfig());
    await breaker.flush();
    expect(breaker.view(`openai:${model}`)).toMatchObject({ state: "closed", consecutiveFailures: 0 });
  });

  it("a hung upstream times out and is retried", async () => {
    const workspace = await openAiOnly("gpt-4o-mini");
    const fake = fakeUpstreams({
      [OPENAI]: (request, call) => (call === 1 ? hang(request) : openAiCompletion("late but fine")),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const lines: Record<string, unknown>[] = [];
    const logger = new Logger({ level: "warn", sampleRate: 1, sink: (line) => lines.push(JSON.parse(line)) });
    const router = createLlmRouter(llmConfig(), { logger, overrides: { attemptTimeoutMs: 300 } });
    const startedMs = Date.now();
    const result = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "hung" });
    expect(Date.now() - startedMs).toBeGreaterThanOrEqual(300);
    expect(result).toMatchObject({ attempts: 2, message: { content: "late but fine" } });
    // The operator reads what happened, not only its code.
    expect(lines.find((line) => line.msg === "llm attempt failed")).toMatchObject({
      provider: "openai",
      code: "timeout",
      message: expect.stringMatching(/\S/),
    });
    const [event] = await eventsOf(workspace, "llm.provider.error", 1);
    expect(event.data).toMatchObject({ error_type: "timeout", retry_count: 0, http_status: null });
  });

  it("a provider too slow to answer, or throttling the call, is fallen over from for performance or rate_limit", async () => {
    const router = createLlmRouter(llmConfig(), {
      logger: quietLogger,
      overrides: { attemptTimeoutMs: 200, maxAttemptsPerTarget: 1 },
    });
    for (const [openAi, reason] of [
      [hang, "performance"],
      [openAiQuotaSpent, "rate_limit"],
    ] as const) {
      const workspace = await openAiThenHaiku(`gpt-4o-mini-fallback-${reason}`);
      const fake = fakeUpstreams({ [OPENAI]: openAi, [ANTHROPIC]: () => anthropicMessage("from claude") });
      vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
      const result = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: `fallback-${reason}` });
      expect(result).toMatchObject({ provider: "anthropic", message: { content: "from claude" } });
      const [fallback] = await eventsOf(workspace, "llm.provider.fallback", 1);
      expect(fallback.data).toMatchObject({ from_provider: "openai", to_provider: "anthropic", reason });
    }
  });

  it("does not retry a 400, and a caller's AbortSignal cancels a call in flight", async () => {
    const workspace = await openAiOnly("gpt-4o-mini");
    const fake = fakeUpstreams({ [OPENAI]: (request, call) => (call === 1 ? problem(400) : hang(request)) });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const refused = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "bad" }).catch((e) => e);
    expect(refused).toBeInstanceOf(LlmError);
    expect(refused).toMatchObject({ kind: "invalid_request", retryable: false });
    expect(fake.count(OPENAI)).toBe(1);

    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const cancelled = await router
      .chat({ messages }, { workspaceId: workspace.id, chargeKey: "cancel", signal: controller.signal })
      .catch((e) => e);
    expect(cancelled).toMatchObject({ kind: "cancelled", retryable: false });
  });

  it("gives up at the overall deadline instead of sleeping through a long Retry-After", async () => {
    const workspace = await openAiThenHaiku("gpt-4o-mini-deadline");
    const fake = fakeUpstreams({
      [OPENAI]: () => problem(429, { "Retry-After": "30" }),
      [ANTHROPIC]: () => anthropicMessage("now"),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const startedMs = Date.now();
    const result = await router.chat(
      { messages },
      { workspaceId: workspace.id, chargeKey: "long-wait", deadlineMs: Date.now() + 5_000 },
    );
    // 30 s exceeds the 5 s left: straight to the next provider, no sleep.
    expect(Date.now() - startedMs).toBeLessThan(1_000);
    expect(result.provider).toBe("anthropic");
    expect(fake.count(OPENAI)).toBe(1);
    const [fallback] = await eventsOf(workspace, "llm.provider.fallback", 1);
    expect(fallback.data.reason).toBe("rate_limit");
  });
});

describe("what a failure tells the caller", () => {
  // Anthropic's rate-limit message names the organization's id, which is no workspace's to read.
  const ANTHROPIC_LIMIT =
    "This request would exceed the rate limit for your organization (0f1e2d3c-aaaa-bbbb-cccc-1234567890ab) of 50,000 input tokens per minute.";
  const event = (type: string, data: Record<string, unknown>) =>
    `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
  /** One attempt per target, no waits between them: each failure is the target's last. */
  const oneAttemptRouter = () =>
    createLlmRouter(llmConfig(), {
      logger: quietLogger,
      overrides: { maxAttemptsPerTarget: 1, sleep: async () => {} },
    });

  it("a rate limit or spent quota of the deployment's account is told by status and code, not the provider's words", async () => {
    // OpenAI's 429 names the deployment's organization and its use (every workspace's calls, summed);
    // Anthropic's names the organization's id. Neither is a workspace's to read.
    const openAiLimit =
      "Rate limit reached for gpt-4o-mini in organization org-DeployAcct42 on tokens per min (TPM): Limit 200000, Used 199500, Requested 900.";
    const workspace = await openAiThenHaiku("gpt-4o-mini-acct-limits");
    const fake = fakeUpstreams({
      [OPENAI]: () =>
        Response.json(
          { error: { message: openAiLimit, type: "tokens", code: "rate_limit_exceeded" } },
          { status: 429, headers: { "Retry-After": "20" } },
        ),
      [ANTHROPIC]: () =>
        Response.json(
          { type: "error", error: { type: "rate_limit_error", message: ANTHROPIC_LIMIT } },
          { status: 429, headers: { "Retry-After": "20" } },
        ),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = oneAttemptRouter();
    const error = await router
      .chat({ messages }, { workspaceId: workspace.id, chargeKey: "acct-limits" })
      .catch((caught: LlmError) => caught);
    expect(error).toBeInstanceOf(LlmError);
    const told = JSON.stringify(problemBody(llmErrorToApiError(error) as ApiError, "req_test"));
    for (const text of [told, (error as LlmError).message, JSON.stringify((error as LlmError).failures)]) {
      expect(text).not.toContain("org-DeployAcct42");
      expect(text).not.toContain("199500");
      expect(text).not.toContain("0f1e2d3c-aaaa");
    }
    expect((error as LlmError).failures).toMatchObject([
      { provider: "openai", status: 429, code: "rate_limit_exceeded" },
      { provider: "anthropic", status: 429, code: "rate_limit_error" },
    ]);
  });

  it("an error event in Anthropic's stream is told by its type's status, as the same error answered over HTTP", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "anthropic", model: `claude-3-5-haiku-stream-error-${crypto.randomUUID().slice(0, 6)}` }],
    });
    // The 200 came, then the error, before any of the answer: the caller gets a problem, not a stream.
    const fake = fakeUpstreams({
      [ANTHROPIC]: () =>
        new Response(
          event("message_start", { message: { usage: { input_tokens: 10, output_tokens: 1 } } }) +
            event("error", { error: { type: "rate_limit_error", message: ANTHROPIC_LIMIT } }),
          { headers: { "Content-Type": "text/event-stream" } },
        ),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = oneAttemptRouter();
    const error = await router
      .chatStream({ messages }, { workspaceId: workspace.id, chargeKey: "stream-error-event" })
      .catch((caught: LlmError) => caught);
    expect(error).toBeInstanceOf(LlmError);
    const told = JSON.stringify(problemBody(llmErrorToApiError(error) as ApiError, "req_test"));
    expect(told).not.toContain("0f1e2d3c-aaaa");
    expect((error as LlmError).failures).toMatchObject([
      { provider: "anthropic", status: 429, code: "rate_limit_error" },
    ]);
    const [reported] = await eventsOf(workspace, "llm.provider.error", 1);
    expect(reported?.data).toMatchObject({
      error_type: "rate_limit",
      error_code: "rate_limit_error",
      http_status: 429,
    });
  });

  it("a call every provider refused in ways no retry mends is told not to be retried", async () => {
    const workspace = await openAiThenHaiku("gpt-4o-mini-spent-quota");
    const fake = fakeUpstreams({
      [OPENAI]: openAiQuotaSpent,
      [ANTHROPIC]: () =>
        Response.json(
          { type: "error", error: { type: "billing_error", message: "Credit balance too low." } },
          { status: 402 },
        ),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger, overrides: { sleep: async () => {} } });
    const error = await router
      .chat({ messages }, { workspaceId: workspace.id, chargeKey: "spent-quotas" })
      .catch((caught: LlmError) => caught);
    expect(error).toMatchObject({ kind: "all_providers_failed", retryable: false });
    expect(fake.count(OPENAI) + fake.count(ANTHROPIC)).toBe(2);
    const apiError = llmErrorToApiError(error) as ApiError;
    expect(apiError.status).toBe(503);
    expect(apiError.headers).toEqual({ "X-Should-Retry": "false" });
    expect(problemBody(apiError, "req_test")).toMatchObject({ reason: "all_providers_failed", retryable: false });
  });

  it("Anthropic's 400 for the deployment's spent credit is a spent quota, not the caller's request, and not told in its words", async () => {
    // Anthropic answers a spent prepaid balance with a 400 invalid_request_error, not its 402 billing_error.
    const spent =
      "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.";
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "anthropic", model: `claude-3-5-haiku-credit-${crypto.randomUUID().slice(0, 6)}` }],
    });
    const fake = fakeUpstreams({
      [ANTHROPIC]: () =>
        Response.json({ type: "error", error: { type: "invalid_request_error", message: spent } }, { status: 400 }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const response = await createApp().fetch(
      new Request(`${BASE}/api/v1/llm/chat/completions`, {
        method: "POST",
        headers: { ...workspace.headers, "Content-Type": "application/json" },
        body: JSON.stringify({ model: "auto", messages }),
      }),
      { ...env, ANTHROPIC_API_KEY: "ak-test", ANTHROPIC_BASE_URL: "https://anthropic.test" },
      createExecutionContext(),
    );
    const text = await response.text();
    // Before: a 400 "every provider refused the request", which sent the caller to mend a request that had no
    // fault, in Anthropic's words about the deployment's billing ("go to Plans & Billing").
    expect(response.status).toBe(503);
    expect(response.headers.get("X-Should-Retry")).toBe("false");
    expect(text).not.toMatch(/credit balance|Plans & Billing/);
    const body = JSON.parse(text) as { reason: string; failures: unknown[]; error: { type: string } };
    expect(body).toMatchObject({ reason: "all_providers_failed", error: { type: "server_error" } });
    expect(body.failures).toMatchObject([{ provider: "anthropic", status: 400, code: "billing_error" }]);
    const [reported] = await eventsOf(workspace, "llm.provider.error", 1);
    expect(reported?.data).toMatchObject({
      error_type: "quota_exceeded",
      error_code: "billing_error",
      http_status: 400,
    });
  });

  it("a rate limit in the middle of a stream is told the caller by status and code, as before its first delta", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "anthropic", model: "claude-3-5-haiku-latest" }],
    });
    const fake = fakeUpstreams({
      [ANTHROPIC]: () =>
        new Response(
          event("message_start", { message: { usage: { input_tokens: 10, output_tokens: 1 } } }) +
            event("content_block_start", { index: 0, content_block: { type: "text", text: "" } }) +
            event("content_block_delta", { index: 0, delta: { type: "text_delta", text: "Half an answer" } }) +
            event("error", { error: { type: "rate_limit_error", message: ANTHROPIC_LIMIT } }),
          { headers: { "Content-Type": "text/event-stream" } },
        ),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const routed = await router.chatStream({ messages }, { workspaceId: workspace.id, chargeKey: "mid-stream-limit" });
    // What the endpoint writes into the stream's error chunk is this failure's message.
    const failure = await drain(routed).catch((caught: Error) => caught);
    expect(failure).toBeInstanceOf(Error);
    expect((failure as Error).message).toBe("provider answered 429: rate limited (rate_limit_error)");
    await expect(routed.result).rejects.toMatchObject({ status: 429, code: "rate_limit_error" });
  });
});

describe("a long Retry-After", () => {
  it("fails over at once to the next target rather than waiting it out within the deadline", async () => {
    const workspace = await openAiThenHaiku("gpt-4o-mini-long-wait");
    const fake = fakeUpstreams({
      [OPENAI]: () => problem(429, { "Retry-After": "20" }),
      [ANTHROPIC]: () => anthropicMessage("now"),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const { router, waits } = routerRecordingWaits();
    // The default deadline (3 minutes) has room for 20 s, but a healthy target is ready now.
    const result = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "long-retry-after" });
    expect(result.provider).toBe("anthropic");
    expect(waits).toEqual([]);
    expect(fake.count(OPENAI)).toBe(1);
    const [error] = await eventsOf(workspace, "llm.provider.error", 1);
    expect(error.data).toMatchObject({ error_type: "rate_limit", retry_count: 0, fallback_triggered: true });
  });

  it("past the deadline on every target, is what the caller is told to wait, not a second", async () => {
    const workspace = await openAiThenHaiku("gpt-4o-mini-all-limited");
    const fake = fakeUpstreams({
      [OPENAI]: () => problem(429, { "Retry-After": "600" }),
      [ANTHROPIC]: () => problem(429, { "retry-after-ms": "240500" }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const error = await router
      .chat({ messages }, { workspaceId: workspace.id, chargeKey: "all-limited" })
      .catch((caught: unknown) => caught);
    expect(error).toMatchObject({ kind: "all_providers_failed", retryable: true });
    // The sooner of the two providers' waits; retrying after 1 s would only meet both refusals again.
    const answered = llmErrorToApiError(error) as ApiError;
    expect(answered.headers["Retry-After"]).toBe("241");
    expect(answered.extensions).toMatchObject({ retry_after_seconds: 241 });

    // A target that failed without saying when to come back may answer at once: no long wait is told.
    const mixed = await workspaceWith({
      strategy: "fallback",
      chain: [
        { provider: "openai", model: "gpt-4o-mini-all-limited" },
        { provider: "anthropic", model: "claude-3-5-haiku-mixed" },
      ],
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(
      fakeUpstreams({ [OPENAI]: () => problem(429, { "Retry-After": "600" }), [ANTHROPIC]: () => problem(401) }).impl,
    );
    const other = await router
      .chat({ messages }, { workspaceId: mixed.id, chargeKey: "mixed-limited" })
      .catch((caught: unknown) => caught);
    expect((llmErrorToApiError(other) as ApiError).headers["Retry-After"]).toBe("1");
  });

  it("is waited out on the last target, while the deadline allows", async () => {
    const workspace = await openAiOnly("gpt-4o-mini-last-wait");
    const fake = fakeUpstreams({
      [OPENAI]: (_request, call) => (call === 1 ? problem(429, { "Retry-After": "20" }) : openAiCompletion("later")),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const { router, waits } = routerRecordingWaits();
    const result = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "last-retry-after" });
    expect(result).toMatchObject({ provider: "openai", attempts: 2 });
    expect(waits).toEqual([20_000]);
  });
});

/**
 * A router whose breaker opens after five failures in a row and half-opens after `openMs`, one attempt per
 * target. As in the Worker, usage rows and breaker syncs go to waitUntil: a call does not wait out the rows'
 * coalescing delay (which over several calls would outlast the time the breaker stays open), and `settled`
 * waits for what the shared breaker (the Durable Object) was told.
 */
function routerWithQuickBreaker(openMs: number, trialTimeoutMs = 5_000) {
  const breakerPolicy = {
    consecutiveFailures: 5,
    minCalls: 10,
    failureRatio: 0.5,
    windowMs: 60_000,
    openMs,
    trialTimeoutMs,
  };
  const background: Promise<unknown>[] = [];
  const router = createLlmRouter(llmConfig(), {
    logger: quietLogger,
    waitUntil: (work) => background.push(work),
    overrides: { maxAttemptsPerTarget: 1, breakerPolicy },
  });
  return { router, breakerPolicy, settled: () => Promise.all(background) };
}

describe("circuit breaker", () => {
  it("five failures open it; later calls skip that provider until the half-open trial, whose success closes it", async () => {
    const model = `gpt-4o-mini-breaker-${crypto.randomUUID().slice(0, 6)}`;
    const workspace = await openAiThenHaiku(model);
    let openaiHealthy = false;
    const fake = fakeUpstreams({
      [OPENAI]: () => (openaiHealthy ? openAiCompletion("openai is back") : problem(503)),
      [ANTHROPIC]: () => anthropicMessage("fallback"),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    // Open long enough to outlast settled(), which waits up to a second for the batched successes to be sent.
    const { router, breakerPolicy, settled } = routerWithQuickBreaker(1_500);
    for (let call = 0; call < 5; call++) {
      const result = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: `b${call}` });
      expect(result.provider).toBe("anthropic");
    }
    expect(fake.count(OPENAI)).toBe(5);
    // Open: the next calls go straight to the fallback without touching openai.
    for (let call = 5; call < 8; call++) {
      const result = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: `b${call}` });
      expect(result).toMatchObject({ provider: "anthropic", attempts: 1 });
    }
    expect(fake.count(OPENAI)).toBe(5);
    // The shared breaker (the Durable Object) has the state, for other isolates and GET /providers.
    await settled();
    const snapshot = await env.PROVIDER_BREAKER.getByName("openai").snapshot(breakerPolicy);
    expect(snapshot.find((entry) => entry.model === model)?.view.state).toBe("open");
    const providers = (await (await fetcher(`${BASE}/api/v1/providers`, { headers: workspace.headers })).json()) as {
      data: { provider: string; models: { model: string; state: string; error_rate: number }[] }[];
    };
    const openai = providers.data.find((entry) => entry.provider === "openai");
    expect(openai?.models.find((entry) => entry.model === model)).toMatchObject({ state: "open", error_rate: 1 });

    await new Promise((wake) => setTimeout(wake, 1_600));
    openaiHealthy = true;
    const trial = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "trial" });
    expect(trial.provider).toBe("openai");
    expect(fake.count(OPENAI)).toBe(6);
    await settled();
    const after = await env.PROVIDER_BREAKER.getByName("openai").snapshot(breakerPolicy);
    expect(after.find((entry) => entry.model === model)?.view.state).toBe("closed");
    // Each call served by the fallback is told as one: the five that failed over, and the three that passed
    // over the open breaker (for its error rate); the trial was served by its first choice.
    const fallbacks = await eventsOf(workspace, "llm.provider.fallback", 8);
    expect(fallbacks).toHaveLength(8);
    for (const event of fallbacks) {
      expect(event.data).toMatchObject({ from_provider: "openai", from_model: model, reason: "error_rate" });
      expect(event.data).toMatchObject({ to_provider: "anthropic" });
    }
  });

  it("when every target is open it still tries them rather than fail without a call", async () => {
    const model = `gpt-4o-mini-allopen-${crypto.randomUUID().slice(0, 6)}`;
    const workspace = await openAiOnly(model);
    let healthy = false;
    const fake = fakeUpstreams({ [OPENAI]: () => (healthy ? openAiCompletion("ok") : problem(503)) });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger, overrides: { maxAttemptsPerTarget: 1 } });
    for (let call = 0; call < 5; call++) {
      await expect(
        router.chat({ messages }, { workspaceId: workspace.id, chargeKey: `o${call}` }),
      ).rejects.toMatchObject({
        kind: "all_providers_failed",
        retryable: true,
      });
    }
    healthy = true;
    const result = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "o5" });
    expect(result.message.content).toBe("ok");
    expect(fake.count(OPENAI)).toBe(6);
  });

  it("tries a half-open target whose trial another call holds when nothing else is left, rather than fail without a call", async () => {
    const model = `gpt-4o-mini-trial-held-${crypto.randomUUID().slice(0, 6)}`;
    const workspace = await openAiOnly(model);
    let healthy = false;
    let releaseSlowTrial!: () => void;
    const slowTrial = new Promise<void>((resolve) => {
      releaseSlowTrial = resolve;
    });
    const fake = fakeUpstreams({
      [OPENAI]: async (_request, call) => {
        if (!healthy) return problem(503);
        if (call === 6) await slowTrial; // The trial call: slow to answer.
        return openAiCompletion(`answer ${call}`);
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const { router } = routerWithQuickBreaker(300);
    for (let call = 0; call < 5; call++) {
      await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: `h${call}` }).catch(() => {});
    }
    await new Promise((wake) => setTimeout(wake, 400));
    healthy = true;
    const trial = router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "h-trial" });
    while (fake.count(OPENAI) < 6) await new Promise((wake) => setTimeout(wake, 5));
    // The trial is in flight: this call may not have it, and there is no other target.
    const meanwhile = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "h-meanwhile" });
    expect(meanwhile).toMatchObject({ provider: "openai", message: { content: "answer 7" } });
    releaseSlowTrial();
    expect(await trial).toMatchObject({ message: { content: "answer 6" } });
  });

  it("a half-open trial answered 400 counts for nothing, and the next call has the trial at once", async () => {
    const model = `gpt-4o-mini-trial-400-${crypto.randomUUID().slice(0, 6)}`;
    const workspace = await openAiThenHaiku(model);
    let answer: "503" | "400" | "ok" = "503";
    const fake = fakeUpstreams({
      [OPENAI]: () => (answer === "ok" ? openAiCompletion("openai is back") : problem(Number(answer))),
      [ANTHROPIC]: () => anthropicMessage("fallback"),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const { router, breakerPolicy, settled } = routerWithQuickBreaker(300, 60_000);
    for (let call = 0; call < 5; call++) {
      await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: `t${call}` });
    }
    await new Promise((wake) => setTimeout(wake, 400));
    // The trial: the request is refused, which says nothing of OpenAI's health; Claude answers it.
    answer = "400";
    const refused = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "t-trial" });
    expect(refused.provider).toBe("anthropic");
    expect(fake.count(OPENAI)).toBe(6);
    // OpenAI is well again: the next call tries it, and its success closes the breaker.
    answer = "ok";
    const next = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "t-next" });
    expect(next).toMatchObject({ provider: "openai", message: { content: "openai is back" } });
    await settled();
    const breakers = await env.PROVIDER_BREAKER.getByName("openai").snapshot(breakerPolicy);
    expect(breakers.find((entry) => entry.model === model)?.view.state).toBe("closed");
  });
});

describe("circuit breaker and calls that outlast its opening", () => {
  it("a slow answer to a call sent before the breaker opened does not close it", async () => {
    const model = `gpt-4o-mini-slow-success-${crypto.randomUUID().slice(0, 6)}`;
    const workspace = await openAiThenHaiku(model);
    let releaseSlow!: () => void;
    const slowMayAnswer = new Promise<void>((resolve) => {
      releaseSlow = resolve;
    });
    const fake = fakeUpstreams({
      // The first call was accepted before the outage and is answered late; every call after it fails.
      [OPENAI]: async (_request, call) => {
        if (call > 1) return problem(529);
        await slowMayAnswer;
        return openAiCompletion("late but whole");
      },
      [ANTHROPIC]: () => anthropicMessage("fallback"),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const { router, breakerPolicy, settled } = routerWithQuickBreaker(60_000);
    const slow = router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "ss-slow" });
    while (fake.count(OPENAI) < 1) await new Promise((wake) => setTimeout(wake, 5));
    for (let call = 0; call < 5; call++) {
      await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: `ss${call}` });
    }
    releaseSlow();
    expect(await slow).toMatchObject({ provider: "openai", message: { content: "late but whole" } });
    // OpenAI still fails what is sent to it now: the breaker stays open, and the next call goes to Claude.
    const next = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "ss-next" });
    expect(next.provider).toBe("anthropic");
    expect(fake.count(OPENAI)).toBe(6);
    await settled();
    const breakers = await env.PROVIDER_BREAKER.getByName("openai").snapshot(breakerPolicy);
    expect(breakers.find((entry) => entry.model === model)?.view).toMatchObject({ state: "open", calls: 6 });
  });

  it("GET /api/v1/providers still counts the last minute's failures after a trial closed the breaker", async () => {
    const model = `gpt-4o-mini-recovered-${crypto.randomUUID().slice(0, 6)}`;
    const workspace = await openAiThenHaiku(model);
    let healthy = false;
    const fake = fakeUpstreams({
      [OPENAI]: () => (healthy ? openAiCompletion("openai is back") : problem(503)),
      [ANTHROPIC]: () => anthropicMessage("fallback"),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const { router, settled } = routerWithQuickBreaker(300);
    for (let call = 0; call < 5; call++) {
      await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: `rc${call}` });
    }
    await new Promise((wake) => setTimeout(wake, 400));
    healthy = true;
    expect((await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "rc-trial" })).provider).toBe(
      "openai",
    );
    await settled();
    const providers = (await (await fetcher(`${BASE}/api/v1/providers`, { headers: workspace.headers })).json()) as {
      data: { provider: string; models: { model: string }[] }[];
    };
    const shown = providers.data.find((entry) => entry.provider === "openai")?.models.find((m) => m.model === model);
    // Six calls in the last minute, five of them failed: closed again, but not a clean minute.
    expect(shown).toMatchObject({ state: "closed", calls_last_minute: 6, error_rate: 0.833, consecutive_failures: 0 });
    // And the failures that opened it do not reopen it: the next calls go to OpenAI.
    for (let call = 0; call < 3; call++) {
      const next = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: `rc-after${call}` });
      expect(next.provider).toBe("openai");
    }
  });

  it("failures of calls sent before a successful trial closed the breaker do not reopen it", async () => {
    const model = `gpt-4o-mini-stragglers-${crypto.randomUUID().slice(0, 6)}`;
    const workspace = await openAiThenHaiku(model);
    let releaseStragglers!: () => void;
    const stragglersMayAnswer = new Promise<void>((resolve) => {
      releaseStragglers = resolve;
    });
    let healthy = false;
    const fake = fakeUpstreams({
      // The first five calls are slow, and fail once released: sent during the outage, they outlast it.
      [OPENAI]: async (_request, call) => {
        if (call <= 5) {
          await stragglersMayAnswer;
          return problem(503);
        }
        return healthy ? openAiCompletion("openai is back") : problem(503);
      },
      [ANTHROPIC]: () => anthropicMessage("fallback"),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const { router, breakerPolicy, settled } = routerWithQuickBreaker(300, 60_000);
    const stragglers = Array.from({ length: 5 }, (_, call) =>
      router.chat({ messages }, { workspaceId: workspace.id, chargeKey: `st-slow${call}` }),
    );
    while (fake.count(OPENAI) < 5) await new Promise((wake) => setTimeout(wake, 5));
    // Five quick failures open the breaker; after 300 ms the trial finds OpenAI well again and closes it.
    for (let call = 0; call < 5; call++) {
      await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: `st${call}` });
    }
    await new Promise((wake) => setTimeout(wake, 400));
    healthy = true;
    const trial = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "st-trial" });
    expect(trial.provider).toBe("openai");
    // The calls sent during the outage now fail: that says nothing of OpenAI since the trial.
    releaseStragglers();
    for (const straggler of stragglers) expect((await straggler).provider).toBe("anthropic");
    const next = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "st-next" });
    expect(next).toMatchObject({ provider: "openai", message: { content: "openai is back" } });
    await settled();
    const breakers = await env.PROVIDER_BREAKER.getByName("openai").snapshot(breakerPolicy);
    expect(breakers.find((entry) => entry.model === model)?.view).toMatchObject({ state: "closed" });
  });

  it("a stream begun before the breaker opened and ending after it does not close the breaker", async () => {
    const model = `gpt-4o-mini-long-stream-${crypto.randomUUID().slice(0, 6)}`;
    const workspace = await openAiThenHaiku(model);
    const encoder = new TextEncoder();
    const chunk = (body: unknown) => encoder.encode(`data: ${JSON.stringify(body)}\n\n`);
    let endStream!: () => void;
    const streamMayEnd = new Promise<void>((resolve) => {
      endStream = resolve;
    });
    const fake = fakeUpstreams({
      // The first call: a stream that answers at once and ends only when told; every call after it: an outage.
      [OPENAI]: (_request, call) =>
        call > 1
          ? problem(503)
          : new Response(
              new ReadableStream<Uint8Array>({
                async start(controller) {
                  controller.enqueue(
                    chunk({
                      choices: [{ index: 0, delta: { role: "assistant", content: "long" }, finish_reason: null }],
                    }),
                  );
                  await streamMayEnd;
                  controller.enqueue(chunk({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }] }));
                  controller.enqueue(chunk({ choices: [], usage: { prompt_tokens: 9, completion_tokens: 1 } }));
                  controller.enqueue(encoder.encode("data: [DONE]\n\n"));
                  controller.close();
                },
              }),
              { headers: { "Content-Type": "text/event-stream" } },
            ),
      [ANTHROPIC]: () => anthropicMessage("fallback"),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    // Open for a minute: no half-open trial within the test.
    const { router, breakerPolicy, settled } = routerWithQuickBreaker(60_000);
    const routed = await router.chatStream({ messages }, { workspaceId: workspace.id, chargeKey: "long-stream" });
    const deltas = routed.deltas[Symbol.asyncIterator]();
    expect((await deltas.next()).done).toBe(false);
    // While it streams, OpenAI fails five calls: the breaker opens, and calls go to Claude.
    for (let call = 0; call < 5; call++) {
      const result = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: `ls${call}` });
      expect(result.provider).toBe("anthropic");
    }
    expect(fake.count(OPENAI)).toBe(6);
    // The stream begun before the outage ends well: that says nothing of OpenAI since.
    endStream();
    while (!(await deltas.next()).done);
    await routed.result;
    const next = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "ls-next" });
    expect(next.provider).toBe("anthropic");
    expect(fake.count(OPENAI)).toBe(6);
    await settled();
    const breakers = await env.PROVIDER_BREAKER.getByName("openai").snapshot(breakerPolicy);
    expect(breakers.find((entry) => entry.model === model)?.view).toMatchObject({
      state: "open",
      calls: 6,
      consecutiveFailures: 5,
    });
  });
});

describe("the shared breaker slow or silent", () => {
  /** The real ProviderBreaker, its trial answers `delay` late (a promise that never settles: never). */
  function slowBreakerConfig(delay: (ask: () => Promise<unknown>) => Promise<unknown>) {
    const namespace = {
      getByName: (provider: string) => {
        const real = env.PROVIDER_BREAKER.getByName(provider);
        return {
          sync: (...args: Parameters<typeof real.sync>) => real.sync(...args),
          tryTrial: (model: string) => delay(() => real.tryTrial(model)),
          snapshot: (...args: Parameters<typeof real.snapshot>) => real.snapshot(...args),
        };
      },
    };
    return llmConfig({ PROVIDER_BREAKER: namespace });
  }

  /** Opens the model's shared breaker 31 s ago (half-open now), and has this isolate's copy say so. */
  async function halfOpen(config: ReturnType<typeof llmConfig>, model: string) {
    const openedMs = Date.now() - 31_000;
    await env.PROVIDER_BREAKER.getByName("openai").sync(
      model,
      [1, 2, 3, 4, 5].map((index) => ({ atMs: openedMs + index, ok: false })),
    );
    const client = breakerClientFor(config);
    client.state(`openai:${model}`);
    await client.flush();
    expect(client.state(`openai:${model}`)).toBe("half_open");
  }

  it("a breaker object that never answers the trial holds a call about a second, then the local copy decides", async () => {
    const model = `gpt-4o-mini-silent-${crypto.randomUUID().slice(0, 6)}`;
    const workspace = await openAiThenHaiku(model);
    const config = slowBreakerConfig(() => new Promise(() => {}));
    await halfOpen(config, model);
    const fake = fakeUpstreams({
      [OPENAI]: () => openAiCompletion("openai is back"),
      [ANTHROPIC]: () => anthropicMessage("fallback"),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(config, { logger: quietLogger });
    const startedMs = Date.now();
    const answered = await Promise.race([
      router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "silent" }),
      new Promise((resolve) => setTimeout(() => resolve("still waiting after 5 s"), 5_000)),
    ]);
    expect(answered).toMatchObject({ provider: "openai", message: { content: "openai is back" } });
    expect(Date.now() - startedMs).toBeLessThan(3_000);
  }, 10_000);

  it("a breaker object that never answers holds an isolate's first call about a second, and the next not at all", async () => {
    const model = `gpt-4o-mini-mute-${crypto.randomUUID().slice(0, 6)}`;
    const workspace = await openAiThenHaiku(model);
    const never = () => new Promise<never>(() => {});
    const config = llmConfig({
      PROVIDER_BREAKER: { getByName: () => ({ sync: never, tryTrial: never, snapshot: never }) },
    });
    const fake = fakeUpstreams({ [OPENAI]: () => openAiCompletion("ok"), [ANTHROPIC]: () => anthropicMessage("fb") });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    // As in the Worker, usage rows and breaker syncs go to waitUntil (the rows' coalescing is not the call's wait).
    const router = createLlmRouter(config, { logger: quietLogger, waitUntil: () => {} });
    const firstMs = Date.now();
    expect((await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "mute1" })).provider).toBe(
      "openai",
    );
    expect(Date.now() - firstMs).toBeLessThan(2_500);
    const nextMs = Date.now();
    expect((await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "mute2" })).provider).toBe(
      "openai",
    );
    expect(Date.now() - nextMs).toBeLessThan(500);
  });

  it("a new isolate's first calls respect a breaker another isolate opened, rather than take it for closed", async () => {
    const model = `gpt-4o-mini-new-isolate-${crypto.randomUUID().slice(0, 6)}`;
    const workspace = await openAiThenHaiku(model);
    // Opened elsewhere a second ago: open for another 29 s.
    const openedMs = Date.now() - 1_000;
    await env.PROVIDER_BREAKER.getByName("openai").sync(
      model,
      [1, 2, 3, 4, 5].map((index) => ({ atMs: openedMs + index, ok: false, error: "timeout" })),
    );
    // Still down (where it hangs instead, each such call waited out the attempt timeout before falling over).
    const fake = fakeUpstreams({ [OPENAI]: () => problem(503), [ANTHROPIC]: () => anthropicMessage("fallback") });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    // A router of its own breaker client (a policy makes one): an isolate that has not yet called the model.
    const { router } = routerWithQuickBreaker(30_000);
    const burst = await Promise.all(
      Array.from({ length: 5 }, (_, call) =>
        router.chat({ messages }, { workspaceId: workspace.id, chargeKey: `ni${call}` }),
      ),
    );
    expect(burst.map((result) => result.provider)).toEqual(Array(5).fill("anthropic"));
    expect(fake.count(OPENAI)).toBe(0);
  });

  it("with the breaker object down, the providers overview shows this isolate's copies, not every breaker closed", async () => {
    const model = `gpt-4o-mini-object-down-${crypto.randomUUID().slice(0, 6)}`;
    const workspace = await openAiThenHaiku(model);
    const down = () => Promise.reject(new Error("Durable Object is overloaded"));
    const config = llmConfig({
      PROVIDER_BREAKER: { getByName: () => ({ sync: down, tryTrial: down, snapshot: down }) },
    });
    const fake = fakeUpstreams({ [OPENAI]: () => problem(503), [ANTHROPIC]: () => anthropicMessage("fallback") });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(config, { logger: quietLogger, overrides: { maxAttemptsPerTarget: 1 } });
    for (let call = 0; call < 6; call++) {
      expect((await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: `down${call}` })).provider).toBe(
        "anthropic",
      );
    }
    // Five failures opened it here, and this isolate passes over OpenAI: its overview says so.
    expect(fake.count(OPENAI)).toBe(5);
    const chain = [{ provider: "openai", model }];
    const [openai] = await providerOverview(config, chain, [], ["openai"]);
    expect(openai?.models).toEqual([
      expect.objectContaining({ model, state: "open", consecutive_failures: 5, calls_last_minute: 5, error_rate: 1 }),
    ]);
  });

  it("with the breaker object silent, the providers overview answers in about a second from this isolate's copies", async () => {
    const model = `gpt-4o-mini-object-silent-${crypto.randomUUID().slice(0, 6)}`;
    const never = () => new Promise<never>(() => {});
    const config = llmConfig({
      PROVIDER_BREAKER: { getByName: () => ({ sync: never, tryTrial: never, snapshot: never }) },
    });
    const startedMs = Date.now();
    const overview = await Promise.race([
      providerOverview(config, [{ provider: "openai", model }], [], ["openai"]),
      new Promise((resolve) => setTimeout(() => resolve("still waiting after 5 s"), 5_000)),
    ]);
    expect(overview).toEqual([
      expect.objectContaining({ models: [expect.objectContaining({ model, state: "closed", calls_last_minute: 0 })] }),
    ]);
    expect(Date.now() - startedMs).toBeLessThan(3_000);
  }, 10_000);

  it("a call cancelled while the breaker object grants it the trial frees the trial for the next call", async () => {
    const model = `gpt-4o-mini-cancel-trial-${crypto.randomUUID().slice(0, 6)}`;
    const workspace = await openAiThenHaiku(model);
    const config = slowBreakerConfig(async (ask) => {
      await new Promise((wake) => setTimeout(wake, 200));
      return ask();
    });
    await halfOpen(config, model);
    const fake = fakeUpstreams({
      [OPENAI]: () => openAiCompletion("openai is back"),
      [ANTHROPIC]: () => anthropicMessage("fallback"),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(config, { logger: quietLogger });
    // The caller leaves while its trial is being granted.
    await expect(
      router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "left", signal: AbortSignal.timeout(50) }),
    ).rejects.toMatchObject({ kind: "cancelled" });
    expect(fake.count(OPENAI)).toBe(0);
    await breakerClientFor(config).flush();
    // The next call has the trial (a minute's wait otherwise, every call sent to Claude meanwhile).
    const next = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "next" });
    expect(next).toMatchObject({ provider: "openai", message: { content: "openai is back" } });
  });
});

describe("streams, tokens and cost", () => {
  it("a stream of 10,000 chunks is parsed exactly, and usage comes from the stream's usage chunk", async () => {
    const workspace = await openAiOnly("gpt-4o-mini");
    const encoder = new TextEncoder();
    const fake = fakeUpstreams({
      [OPENAI]: async (request) => {
        const body = (await request.json()) as { stream?: boolean; stream_options?: { include_usage?: boolean } };
        expect(body.stream_options?.include_usage).toBe(true);
        let index = 0;
        const stream = new ReadableStream<Uint8Array>({
          pull(controller) {
            // Many frames per network chunk, split at odd places.
            let text = "";
            for (let n = 0; n < 250 && index < 10_000; n++, index++) {
              text += `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: `${index},` }, finish_reason: null }] })}\n\n`;
            }
            if (index >= 10_000 && text.length === 0) {
              controller.enqueue(
                encoder.encode(
                  `data: ${JSON.stringify({ choices: [{ index: 0, delta: {}, finish_reason: "length" }] })}\n\ndata: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 30, completion_tokens: 10_000, total_tokens: 10_030 } })}\n\ndata: [DONE]\n\n`,
                ),
              );
              controller.close();
              return;
            }
            const cut = Math.floor(text.length / 3);
            controller.enqueue(encoder.encode(text.slice(0, cut)));
            controller.enqueue(encoder.encode(text.slice(cut)));
          },
        });
        return new Response(stream, { headers: { "Content-Type": "text/event-stream" } });
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const routed = await router.chatStream({ messages }, { workspaceId: workspace.id, chargeKey: "long-stream" });
    let deltas = 0;
    let text = "";
    for await (const event of routed.deltas) {
      if (event.type !== "delta") continue;
      deltas++;
      text += event.content ?? "";
    }
    const result = await routed.result;
    expect(deltas).toBe(10_000);
    expect(text).toBe(Array.from({ length: 10_000 }, (_, index) => `${index},`).join(""));
    expect(result.message.content).toBe(text);
    expect(result.finish_reason).toBe("length");
    expect(result.usage).toEqual({ prompt_tokens: 30, completion_tokens: 10_000, total_tokens: 10_030 });
    expect(result.cost_usd).toBe(costUsd("openai", "gpt-4o-mini", result.usage));
    expect(result.cost_usd).toBe(0.0060045);
  });

  it("tokens and cost_usd equal what the upstream's usage implies, and a charge key is charged once", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "anthropic", model: "claude-3-5-haiku-latest" }],
    });
    const fake = fakeUpstreams({
      [ANTHROPIC]: () => anthropicMessage("hello", { input_tokens: 1_200, output_tokens: 350 }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const context = { workspaceId: workspace.id, chargeKey: "run_1:0", taskId: "task_1", runId: "run_1" };
    const result = await router.chat({ messages }, context);
    // Haiku: $0.80 in, $4 out per million → 1200·0.8e-6 + 350·4e-6.
    expect(result.usage).toEqual({ prompt_tokens: 1_200, completion_tokens: 350, total_tokens: 1_550 });
    expect(result.cost_usd).toBe(0.00236);
    await router.chat({ messages }, context);
    const row = await findCharge(createDb(env.DB), workspace.id, "run_1:0");
    expect(row).toMatchObject({
      provider: "anthropic",
      promptTokens: 1_200,
      completionTokens: 350,
      costUsd: 0.00236,
      simulated: false,
      estimated: false,
      taskId: "task_1",
    });
    const usage = (await (await fetcher(`${BASE}/api/v1/usage`, { headers: workspace.headers })).json()) as {
      data: { calls: number; total_tokens: number; cost_usd: number }[];
    };
    expect(usage.data).toHaveLength(1);
    expect(usage.data[0]).toMatchObject({ calls: 1, estimated_calls: 0, total_tokens: 1_550, cost_usd: 0.00236 });
    const status = await env.WORKSPACE_LIMITER.getByName(workspace.id).budgetStatus();
    expect(status.daily).toMatchObject({ tokens: 1_550, cost_usd: 0.00236, reserved_tokens: 0 });
  });
});

describe("OpenAI's cached input", () => {
  // 10,000 prompt tokens, 8,000 of them read from OpenAI's prompt cache, 200 written: gpt-4o-mini bills
  // $0.15 a million for input, $0.075 for cached input and $0.60 for output.
  const reported = {
    prompt_tokens: 10_000,
    completion_tokens: 200,
    total_tokens: 10_200,
    prompt_tokens_details: { cached_tokens: 8_000, audio_tokens: 0 },
  };
  const expectedCostUsd = (2_000 * 0.15 + 8_000 * 0.075 + 200 * 0.6) / 1_000_000;

  it("is charged at the cached rate, whole and streamed, and reported as OpenAI reports it", async () => {
    const workspace = await openAiOnly("gpt-4o-mini");
    const chunk = (body: unknown) => `data: ${JSON.stringify(body)}\n\n`;
    const fake = fakeUpstreams({
      [OPENAI]: async (request) => {
        const { stream } = (await request.json()) as { stream?: boolean };
        if (!stream) {
          return Response.json({
            choices: [{ index: 0, message: { role: "assistant", content: "cached" }, finish_reason: "stop" }],
            usage: reported,
          });
        }
        const frames = [
          chunk({ choices: [{ index: 0, delta: { role: "assistant", content: "cached" }, finish_reason: null }] }),
          chunk({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }] }),
          chunk({ choices: [], usage: reported }),
          "data: [DONE]\n\n",
        ];
        return new Response(frames.join(""), { headers: { "Content-Type": "text/event-stream" } });
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const whole = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "cached-whole" });
    expect(whole.usage).toEqual({
      prompt_tokens: 10_000,
      completion_tokens: 200,
      total_tokens: 10_200,
      cached_prompt_tokens: 8_000,
    });
    expect(whole.cost_usd).toBeCloseTo(expectedCostUsd, 10);
    const routed = await router.chatStream({ messages }, { workspaceId: workspace.id, chargeKey: "cached-stream" });
    for await (const _ of routed.deltas);
    const streamed = await routed.result;
    expect(streamed.usage).toEqual(whole.usage);
    expect(streamed.cost_usd).toBe(whole.cost_usd);

    const row = await findCharge(createDb(env.DB), workspace.id, "cached-stream");
    expect(row).toMatchObject({ promptTokens: 10_000, cachedPromptTokens: 8_000, costUsd: whole.cost_usd });
    const usage = (await (await fetcher(`${BASE}/api/v1/usage`, { headers: workspace.headers })).json()) as {
      data: Record<string, number>[];
      totals: Record<string, number>;
    };
    expect(usage.data[0]).toMatchObject({ calls: 2, prompt_tokens: 20_000, cached_prompt_tokens: 16_000 });
    expect(usage.totals).toMatchObject({ cached_prompt_tokens: 16_000 });
    expect(usage.totals.cost_usd).toBeCloseTo(2 * expectedCostUsd, 10);
  });
});

describe("a stream that ends without the provider's usage", () => {
  const frame = (content: string) =>
    `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`;
  /** Two 40-character deltas, then `end`: hang (the client will leave), or fail mid-answer. */
  function partialStream(end: "hang" | "fail") {
    const encoder = new TextEncoder();
    return fakeUpstreams({
      [OPENAI]: (request) =>
        new Response(
          new ReadableStream<Uint8Array>({
            start(controller) {
              controller.enqueue(encoder.encode(frame("a".repeat(40)) + frame("b".repeat(40))));
            },
            // Asked for more once both deltas are read: nothing ever comes (until the call is aborted, as a
            // real fetch's body would be), or the connection breaks.
            pull(controller) {
              if (end === "fail") controller.error(new Error("connection reset mid-answer"));
              request.signal.throwIfAborted();
              return new Promise<void>((_, reject) => {
                request.signal.addEventListener("abort", () => reject(request.signal.reason), { once: true });
              });
            },
          }),
          { headers: { "Content-Type": "text/event-stream" } },
        ),
    });
  }
  // The estimate a reservation uses (src/llm/tokens.ts): "Refactor the parser." is 20 characters (5 tokens)
  // plus 4 for the message; 80 characters delivered are 20 completion tokens.
  const estimated = { prompt_tokens: 9, completion_tokens: 20, total_tokens: 29 };

  function openAiWorkspaceWithoutLease(model = "gpt-4o-mini") {
    return workspaceWith(
      { strategy: "fallback", chain: [{ provider: "openai", model }] },
      // Room for fewer than 20 such calls: no lease, so every token reserved shows, and must be freed.
      { daily_tokens: 10_000, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null },
    );
  }

  async function expectCharged(workspaceId: string, chargeKey: string, model = "gpt-4o-mini") {
    const row = await findCharge(createDb(env.DB), workspaceId, chargeKey);
    expect(row).toMatchObject({
      provider: "openai",
      promptTokens: estimated.prompt_tokens,
      completionTokens: estimated.completion_tokens,
      costUsd: costUsd("openai", model, estimated),
      estimated: true,
    });
    const status = await env.WORKSPACE_LIMITER.getByName(workspaceId).budgetStatus();
    expect(status.daily).toMatchObject({ tokens: estimated.total_tokens, reserved_tokens: 0 });
  }

  it("charges what the provider read and wrote when the client leaves early, not nothing", async () => {
    const workspace = await openAiWorkspaceWithoutLease();
    vi.spyOn(globalThis, "fetch").mockImplementation(partialStream("hang").impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const routed = await router.chatStream({ messages }, { workspaceId: workspace.id, chargeKey: "left-early" });
    let deltas = 0;
    for await (const event of routed.deltas) {
      if (event.type === "delta" && ++deltas === 2) break; // The client goes away.
    }
    await expect(routed.result).rejects.toMatchObject({ kind: "cancelled" });
    await expectCharged(workspace.id, "left-early");
  });

  it("charges what the provider wrote when the client leaves before reading a single delta", async () => {
    const workspace = await openAiWorkspaceWithoutLease();
    vi.spyOn(globalThis, "fetch").mockImplementation(partialStream("hang").impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const routed = await router.chatStream({ messages }, { workspaceId: workspace.id, chargeKey: "left-at-once" });
    // What a cancelled response body does (completionStream's cancel) when no chunk was ever pulled.
    await routed.deltas[Symbol.asyncIterator]().return?.();
    await expect(routed.result).rejects.toMatchObject({ kind: "cancelled" });
    // The router had read the first delta (40 characters, 10 tokens) to know the stream started.
    const firstDelta = { prompt_tokens: 9, completion_tokens: 10, total_tokens: 19 };
    const row = await findCharge(createDb(env.DB), workspace.id, "left-at-once");
    expect(row).toMatchObject({
      promptTokens: firstDelta.prompt_tokens,
      completionTokens: firstDelta.completion_tokens,
      estimated: true,
    });
    const status = await env.WORKSPACE_LIMITER.getByName(workspace.id).budgetStatus();
    expect(status.daily).toMatchObject({ tokens: firstDelta.total_tokens, reserved_tokens: 0 });
  });

  it("charges a cut Anthropic stream the prompt Anthropic counted at its start, not our estimate", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "anthropic", model: "claude-3-5-haiku-latest" }],
    });
    const encoder = new TextEncoder();
    const event = (data: object) => `event: ${(data as { type: string }).type}\ndata: ${JSON.stringify(data)}\n\n`;
    vi.spyOn(globalThis, "fetch").mockImplementation(
      fakeUpstreams({
        [ANTHROPIC]: () =>
          new Response(
            new ReadableStream<Uint8Array>({
              start(controller) {
                // A system prompt and tools our estimate does not see as Anthropic does: it counts 1,234.
                const opening = [
                  { type: "message_start", message: { usage: { input_tokens: 1_234, output_tokens: 1 } } },
                  { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
                  { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "a".repeat(40) } },
                ];
                controller.enqueue(encoder.encode(opening.map(event).join("")));
              },
              pull(controller) {
                controller.error(new Error("connection reset mid-answer"));
              },
            }),
            { headers: { "Content-Type": "text/event-stream" } },
          ),
      }).impl,
    );
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const routed = await router.chatStream({ messages }, { workspaceId: workspace.id, chargeKey: "cut-anthropic" });
    await expect(
      (async () => {
        for await (const _ of routed.deltas);
      })(),
    ).rejects.toMatchObject({ failure: "connection" });
    const row = await findCharge(createDb(env.DB), workspace.id, "cut-anthropic");
    expect(row).toMatchObject({ provider: "anthropic", promptTokens: 1_234, completionTokens: 10, estimated: true });
  });

  it("charges the prompt a provider read when the call is cancelled in flight, streamed or not", async () => {
    // A model of its own: its breaker must stay closed, cancellations being no failure of the provider's.
    const workspace = await openAiWorkspaceWithoutLease("gpt-4o-mini-cancelled");
    const fake = fakeUpstreams({ [OPENAI]: (request) => hang(request) });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const cancelledAfter = (ms: number) => AbortSignal.timeout(ms);
    const whole = await router
      .chat({ messages }, { workspaceId: workspace.id, chargeKey: "cancelled-whole", signal: cancelledAfter(100) })
      .catch((error) => error);
    expect(whole).toMatchObject({ kind: "cancelled", retryable: false });
    const streamed = await router
      .chatStream(
        { messages },
        { workspaceId: workspace.id, chargeKey: "cancelled-stream", signal: cancelledAfter(100) },
      )
      .catch((error) => error);
    expect(streamed).toMatchObject({ kind: "cancelled", retryable: false });
    expect(fake.count(OPENAI)).toBe(2);
    const db = createDb(env.DB);
    for (const chargeKey of ["cancelled-whole", "cancelled-stream"]) {
      expect(await findCharge(db, workspace.id, chargeKey)).toMatchObject({
        promptTokens: estimated.prompt_tokens,
        completionTokens: 0,
        estimated: true,
      });
    }
    const status = await env.WORKSPACE_LIMITER.getByName(workspace.id).budgetStatus();
    expect(status.daily).toMatchObject({ tokens: 2 * estimated.prompt_tokens, reserved_tokens: 0 });
    await breakerClientFor(llmConfig()).flush();
    const breakers = await env.PROVIDER_BREAKER.getByName("openai").snapshot();
    const breaker = breakers.find((entry) => entry.model === "gpt-4o-mini-cancelled");
    expect(breaker?.view ?? { consecutiveFailures: 0 }).toMatchObject({ consecutiveFailures: 0 });
  });

  it("ends a stream its caller cancels mid-answer as cancelled, charged what was delivered, its breaker untouched", async () => {
    const workspace = await openAiWorkspaceWithoutLease("gpt-4o-mini-cancelled-mid-stream");
    vi.spyOn(globalThis, "fetch").mockImplementation(partialStream("hang").impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const controller = new AbortController();
    const context = { workspaceId: workspace.id, chargeKey: "cancelled-mid-stream", signal: controller.signal };
    const routed = await router.chatStream({ messages }, context);
    let deltas = 0;
    const read = (async () => {
      for await (const event of routed.deltas) {
        if (event.type === "delta" && ++deltas === 2) controller.abort(); // The task is cancelled.
      }
    })();
    await expect(read).rejects.toMatchObject({ kind: "cancelled" });
    await expect(routed.result).rejects.toMatchObject({ kind: "cancelled" });
    await expectCharged(workspace.id, "cancelled-mid-stream", "gpt-4o-mini-cancelled-mid-stream");
    await breakerClientFor(llmConfig()).flush();
    const breakers = await env.PROVIDER_BREAKER.getByName("openai").snapshot();
    const breaker = breakers.find((entry) => entry.model === "gpt-4o-mini-cancelled-mid-stream");
    expect(breaker?.view).toMatchObject({ consecutiveFailures: 0, calls: 1 });
  });

  it("charges nothing for a call cancelled before it reached a provider", async () => {
    const workspace = await openAiWorkspaceWithoutLease("gpt-4o-mini-refused");
    const fake = fakeUpstreams({ [OPENAI]: () => problem(503, { "Retry-After": "5" }) });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    // Cancelled while waiting out the 503's Retry-After: the one request made was refused, and billed nothing.
    const cancelled = await router
      .chat(
        { messages },
        { workspaceId: workspace.id, chargeKey: "cancelled-waiting", signal: AbortSignal.timeout(200) },
      )
      .catch((error) => error);
    expect(cancelled).toMatchObject({ kind: "cancelled" });
    expect(fake.count(OPENAI)).toBe(1);
    expect(await findCharge(createDb(env.DB), workspace.id, "cancelled-waiting")).toBeNull();
    const status = await env.WORKSPACE_LIMITER.getByName(workspace.id).budgetStatus();
    expect(status.daily).toMatchObject({ tokens: 0, reserved_tokens: 0 });
  });

  it("answers a whole answer that came without usage, once, charged an estimate marked as such, its breaker untouched", async () => {
    const workspace = await openAiWorkspaceWithoutLease();
    const answer = "a".repeat(80);
    const fake = fakeUpstreams({
      [OPENAI]: () =>
        Response.json({ choices: [{ message: { role: "assistant", content: answer }, finish_reason: "stop" }] }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const result = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "no-usage" });
    expect(result).toMatchObject({
      message: { content: answer },
      usage: estimated,
      usage_estimated: true,
      attempts: 1,
    });
    expect(fake.count(OPENAI)).toBe(1);
    await expectCharged(workspace.id, "no-usage");
    const breaker = breakerClientFor(llmConfig());
    await breaker.flush();
    expect(breaker.view("openai:gpt-4o-mini")).toMatchObject({ state: "closed", consecutiveFailures: 0 });
  });

  it("charges the same when the provider fails mid-answer, and the caller gets the failure", async () => {
    const workspace = await openAiWorkspaceWithoutLease();
    vi.spyOn(globalThis, "fetch").mockImplementation(partialStream("fail").impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const routed = await router.chatStream({ messages }, { workspaceId: workspace.id, chargeKey: "cut-off" });
    const seen: string[] = [];
    const drained = (async () => {
      for await (const event of routed.deltas) if (event.type === "delta") seen.push(event.content ?? "");
    })();
    await expect(drained).rejects.toBeInstanceOf(Error);
    await expect(routed.result).rejects.toBeInstanceOf(Error);
    expect(seen.join("")).toBe("a".repeat(40) + "b".repeat(40));
    await expectCharged(workspace.id, "cut-off");
  });

  it("tells a provider that fails or stalls mid-answer as one llm.provider.error, as any failed attempt", async () => {
    const cut = await openAiWorkspaceWithoutLease();
    vi.spyOn(globalThis, "fetch").mockImplementation(partialStream("fail").impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger, overrides: { attemptTimeoutMs: 300 } });
    const cutOff = await router.chatStream({ messages }, { workspaceId: cut.id, chargeKey: "cut-event" });
    await expect(drain(cutOff)).rejects.toBeInstanceOf(Error);
    const [failed] = await eventsOf(cut, "llm.provider.error", 1, 2_000);
    expect(failed?.data).toMatchObject({
      provider: "openai",
      model: "gpt-4o-mini",
      error_type: "connection_error",
      retry_count: 0,
      fallback_triggered: false,
      http_status: null,
    });

    const stalled = await openAiWorkspaceWithoutLease();
    // Two deltas, then nothing until the attempt's clock aborts the request (as a real fetch's body does).
    const encoder = new TextEncoder();
    const stalling = fakeUpstreams({
      [OPENAI]: (request) =>
        new Response(
          new ReadableStream<Uint8Array>({
            start(controller) {
              controller.enqueue(encoder.encode(frame("a".repeat(40)) + frame("b".repeat(40))));
            },
            pull(controller) {
              return new Promise<void>((done) =>
                request.signal.addEventListener("abort", () => done(controller.error(request.signal.reason)), {
                  once: true,
                }),
              );
            },
          }),
          { headers: { "Content-Type": "text/event-stream" } },
        ),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(stalling.impl);
    const stall = await router.chatStream({ messages }, { workspaceId: stalled.id, chargeKey: "stall-event" });
    await expect(drain(stall)).rejects.toMatchObject({ failure: "timeout" });
    const [timedOut] = await eventsOf(stalled, "llm.provider.error", 1, 2_000);
    expect(timedOut?.data).toMatchObject({ error_type: "timeout", retry_count: 0, fallback_triggered: false });
    // One event per failure: the stream's own, nothing more.
    expect(await eventsOf(cut, "llm.provider.error")).toHaveLength(1);
    expect(await eventsOf(stalled, "llm.provider.error")).toHaveLength(1);
  }, 20_000);

  it("tells a stream cut mid-answer once, as a failure: five in a row open the provider's breaker", async () => {
    const model = `gpt-4o-mini-cut-${crypto.randomUUID().slice(0, 8)}`;
    const workspace = await openAiThenHaiku(model);
    const cut = partialStream("fail");
    const fake = fakeUpstreams({
      [OPENAI]: (request) => cut.impl(request),
      [ANTHROPIC]: () => anthropicMessage("from claude"),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    for (let call = 1; call <= 5; call++) {
      const routed = await router.chatStream({ messages }, { workspaceId: workspace.id, chargeKey: `cut-${call}` });
      expect(routed.provider).toBe("openai");
      await expect(drain(routed)).rejects.toBeInstanceOf(Error);
    }
    // What GET /api/v1/providers shows: five calls, all failed, and the breaker open.
    await breakerClientFor(llmConfig()).flush();
    const breakers = await env.PROVIDER_BREAKER.getByName("openai").snapshot();
    expect(breakers.find((entry) => entry.model === model)?.view).toMatchObject({
      state: "open",
      calls: 5,
      errorRate: 1,
      consecutiveFailures: 5,
    });
    // The next call goes to Claude without asking OpenAI.
    const next = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "cut-next" });
    expect(next.provider).toBe("anthropic");
    expect(fake.count(OPENAI)).toBe(5);
  });
});

describe("a stream's refusal mid-answer", () => {
  it("a stream stalled past a wait the call's deadline shortened counts nothing against its breaker", async () => {
    const model = `gpt-4o-mini-deadline-stream-${crypto.randomUUID().slice(0, 8)}`;
    const workspace = await openAiThenHaiku(model);
    const encoder = new TextEncoder();
    const first = { choices: [{ index: 0, delta: { role: "assistant", content: "thinking" }, finish_reason: null }] };
    const fake = fakeUpstreams({
      // One delta, then a pause longer than the call has left (well within the provider's 60 s attempt timeout).
      [OPENAI]: (request) =>
        new Response(
          new ReadableStream<Uint8Array>({
            start(controller) {
              controller.enqueue(encoder.encode(`data: ${JSON.stringify(first)}\n\n`));
            },
            pull() {
              return new Promise<void>((_, reject) => {
                request.signal.addEventListener("abort", () => reject(request.signal.reason), { once: true });
              });
            },
          }),
          { headers: { "Content-Type": "text/event-stream" } },
        ),
      [ANTHROPIC]: () => anthropicMessage("from claude"),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    for (let call = 1; call <= 5; call++) {
      const context = { workspaceId: workspace.id, chargeKey: `dl-${call}`, deadlineMs: Date.now() + 200 };
      const routed = await router.chatStream({ messages }, context);
      expect(routed.provider).toBe("openai");
      await expect(drain(routed)).rejects.toMatchObject({ failure: "timeout" });
    }
    await breakerClientFor(llmConfig()).flush();
    const breakers = await env.PROVIDER_BREAKER.getByName("openai").snapshot();
    const view = breakers.find((entry) => entry.model === model)?.view;
    expect(view ?? { state: "closed", consecutiveFailures: 0 }).toMatchObject({
      state: "closed",
      consecutiveFailures: 0,
    });
  });

  it("a stream ended by the provider's 400 mid-answer counts nothing against its breaker, as a 400 before it does", async () => {
    const model = `gpt-4o-mini-refused-mid-${crypto.randomUUID().slice(0, 8)}`;
    const workspace = await openAiThenHaiku(model);
    const encoder = new TextEncoder();
    const frames = [
      { choices: [{ index: 0, delta: { role: "assistant", content: "Hel" }, finish_reason: null }] },
      // vLLM tells a request it cannot serve in the stream, with the HTTP status as its code.
      { error: { object: "error", message: "guided decoding failed", type: "BadRequestError", code: 400 } },
    ].map((frame) => `data: ${JSON.stringify(frame)}\n\n`);
    const fake = fakeUpstreams({
      [OPENAI]: () =>
        new Response(encoder.encode(frames.join("")), { headers: { "Content-Type": "text/event-stream" } }),
      [ANTHROPIC]: () => anthropicMessage("from claude"),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    for (let call = 1; call <= 5; call++) {
      const routed = await router.chatStream({ messages }, { workspaceId: workspace.id, chargeKey: `refused-${call}` });
      expect(routed.provider).toBe("openai");
      await expect(drain(routed)).rejects.toMatchObject({ status: 400 });
    }
    await breakerClientFor(llmConfig()).flush();
    const breakers = await env.PROVIDER_BREAKER.getByName("openai").snapshot();
    const view = breakers.find((entry) => entry.model === model)?.view;
    expect(view ?? { state: "closed", consecutiveFailures: 0 }).toMatchObject({
      state: "closed",
      consecutiveFailures: 0,
    });
    // The next call still goes to OpenAI.
    const next = await router.chatStream({ messages }, { workspaceId: workspace.id, chargeKey: "refused-next" });
    expect(next.provider).toBe("openai");
    await next.deltas[Symbol.asyncIterator]().return?.();
    expect(fake.count(OPENAI)).toBe(6);
  });

  it("a half-open trial streamed and refused mid-answer frees the trial: the next call has it at once", async () => {
    const model = `gpt-4o-mini-trial-refused-${crypto.randomUUID().slice(0, 8)}`;
    const workspace = await openAiThenHaiku(model);
    const encoder = new TextEncoder();
    const refusedMidAnswer = [
      { choices: [{ index: 0, delta: { role: "assistant", content: "Hel" }, finish_reason: null }] },
      { error: { object: "error", message: "guided decoding failed", type: "BadRequestError", code: 400 } },
    ]
      .map((frame) => `data: ${JSON.stringify(frame)}\n\n`)
      .join("");
    let answer: "503" | "refused" | "ok" = "503";
    const fake = fakeUpstreams({
      [OPENAI]: () =>
        answer === "503"
          ? problem(503)
          : answer === "refused"
            ? new Response(encoder.encode(refusedMidAnswer), { headers: { "Content-Type": "text/event-stream" } })
            : openAiCompletion("openai is back"),
      [ANTHROPIC]: () => anthropicMessage("fallback"),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    // A trial that never reports back would hold the target for a minute.
    const { router } = routerWithQuickBreaker(300, 60_000);
    for (let call = 0; call < 5; call++) {
      await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: `tr${call}` });
    }
    await new Promise((wake) => setTimeout(wake, 400));
    answer = "refused";
    const trial = await router.chatStream({ messages }, { workspaceId: workspace.id, chargeKey: "tr-trial" });
    expect(trial.provider).toBe("openai");
    await expect(
      (async () => {
        for await (const _event of trial.deltas);
      })(),
    ).rejects.toMatchObject({ status: 400 });
    answer = "ok";
    const next = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "tr-next" });
    expect(next).toMatchObject({ provider: "openai", message: { content: "openai is back" } });
  });
});

describe("a stream's attempt timeout", () => {
  it("runs while the provider is awaited, not while the caller takes its time over a delta", async () => {
    // The timeout is for a provider that stalls; a caller that reads slowly (the SDK's loop awaiting its own work
    // on each chunk) holds the stream back itself. Counted against the provider, its stream was cut as stalled,
    // the caller told the provider had failed, and the provider's breaker charged a failure.
    const workspace = await openAiOnly("gpt-4o-mini-slow-reader");
    const encoder = new TextEncoder();
    const chunks = [
      { choices: [{ index: 0, delta: { role: "assistant", content: "Hel" }, finish_reason: null }] },
      { choices: [{ index: 0, delta: { content: "lo" }, finish_reason: null }] },
      { choices: [{ index: 0, delta: {}, finish_reason: "stop" }] },
      { choices: [], usage: { prompt_tokens: 9, completion_tokens: 2, total_tokens: 11 } },
    ].map((chunk) => `data: ${JSON.stringify(chunk)}\n\n`);
    chunks.push("data: [DONE]\n\n");
    const fake = fakeUpstreams({
      // Each chunk comes as soon as it is asked for; an aborted call's body fails, as a real fetch's does.
      [OPENAI]: (request) =>
        new Response(
          new ReadableStream<Uint8Array>({
            start(controller) {
              request.signal.addEventListener("abort", () => controller.error(request.signal.reason), { once: true });
            },
            pull(controller) {
              const next = chunks.shift();
              if (next) controller.enqueue(encoder.encode(next));
              else controller.close();
            },
          }),
          { headers: { "Content-Type": "text/event-stream" } },
        ),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger, overrides: { attemptTimeoutMs: 200 } });
    const routed = await router.chatStream({ messages }, { workspaceId: workspace.id, chargeKey: "slow-reader" });
    let text = "";
    for await (const event of routed.deltas) {
      if (event.type !== "delta") continue;
      text += event.content ?? "";
      await new Promise((wake) => setTimeout(wake, 400)); // The caller's own work, twice the attempt's timeout.
    }
    expect(text).toBe("Hello");
    expect(await routed.result).toMatchObject({ finish_reason: "stop", usage: { total_tokens: 11 } });
    expect(await eventsOf(workspace, "llm.provider.error", 0, 200)).toEqual([]);
  });
});
