import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createDb } from "../../src/db/client.ts";
import { type ApiError, problemBody } from "../../src/lib/problem.ts";
import { llmErrorToApiError } from "../../src/llm/http-errors.ts";
import { breakerClientFor, createLlmRouter, LlmError } from "../../src/llm/index.ts";
import { costUsd } from "../../src/llm/prices.ts";
import { textTokens } from "../../src/llm/tokens.ts";
import { findCharge } from "../../src/llm/usage.ts";
import {
  anthropicMessage,
  budgetUsed,
  eventsOf,
  fakeUpstreams,
  hang,
  llmConfig,
  openAiCompletion,
  problem,
  quietLogger,
  summedCost,
  usageShown,
  workspaceWith,
} from "../support/llm.ts";

/**
 * An attempt whose timer runs out while the provider has the request: the
 * provider read the prompt and bills it, so the call is charged that prompt
 * (estimated, a usage row of its own) beside whatever answered, in one
 * settlement of the call's reservation. Against the real D1 and
 * WorkspaceLimiter, with fake upstreams inside workerd.
 */

afterEach(() => vi.restoreAllMocks());

const OPENAI = "openai.test";
const messages = [{ role: "user" as const, content: "Refactor the parser." }];
// The estimate a reservation uses (src/llm/tokens.ts): 20 characters (5 tokens) plus 4 for the message.
const promptEstimate = { prompt_tokens: 9, completion_tokens: 0, total_tokens: 9 };
const answerUsage = { prompt_tokens: 12, completion_tokens: 5 };

/** Room for fewer than 20 calls: no budget lease, so the limiter's figures show every token charged and held. */
function budgetedWorkspace(model: string) {
  return workspaceWith(
    { strategy: "fallback", chain: [{ provider: "openai", model }] },
    { daily_tokens: 10_000, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null },
  );
}

const routerTimingOutAfter = (attemptTimeoutMs: number, maxAttemptsPerTarget = 3) =>
  createLlmRouter(llmConfig(), {
    logger: quietLogger,
    overrides: { attemptTimeoutMs, maxAttemptsPerTarget, sleep: async () => {} },
  });

async function expectTimedOutRow(workspaceId: string, chargeKey: string, model: string) {
  expect(await findCharge(createDb(env.DB), workspaceId, chargeKey)).toMatchObject({
    provider: "openai",
    model,
    promptTokens: promptEstimate.prompt_tokens,
    completionTokens: 0,
    costUsd: costUsd("openai", model, promptEstimate),
    estimated: true,
  });
}

/** Why a timed-out attempt ended, as the caller is told it beside its charge. */
const TIMED_OUT = { code: "timeout", message: "the provider did not answer in time" };

describe("attempts that time out at the provider", () => {
  it("are charged the prompt beside the answer that came after them", async () => {
    const model = "gpt-4o-mini-timeout-then-answer";
    const workspace = await budgetedWorkspace(model);
    const fake = fakeUpstreams({
      [OPENAI]: (request, call) => (call === 1 ? hang(request) : openAiCompletion("late but fine", answerUsage)),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const result = await routerTimingOutAfter(200).chat(
      { messages },
      { workspaceId: workspace.id, chargeKey: "timeout-then-answer" },
    );
    // The answer's own figures are the provider's; the timed-out attempt is told apart.
    expect(result).toMatchObject({ attempts: 2, usage: { ...answerUsage, total_tokens: 17 } });
    expect(result.timed_out_attempts).toEqual([
      {
        usage: promptEstimate,
        cost_usd: costUsd("openai", model, promptEstimate),
        provider: "openai",
        model,
        simulated: false,
        error: TIMED_OUT,
      },
    ]);
    expect(await findCharge(createDb(env.DB), workspace.id, "timeout-then-answer")).toMatchObject({
      promptTokens: 12,
      completionTokens: 5,
      estimated: false,
    });
    await expectTimedOutRow(workspace.id, "timeout-then-answer:timed-out:1", model);
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: 17 + 9, reserved_tokens: 0 });
    // One call, as the user made it: the timed-out attempt is counted apart, its prompt in the tokens and cost.
    const counted = {
      calls: 1,
      estimated_calls: 0,
      timed_out_attempts: 1,
      prompt_tokens: 12 + 9,
      completion_tokens: 5,
      total_tokens: 17 + 9,
      cost_usd: summedCost(costUsd("openai", model, answerUsage), costUsd("openai", model, promptEstimate)),
    };
    const usage = await usageShown(workspace);
    expect(usage.data[0]).toMatchObject({ provider: "openai", model, simulated: false, ...counted });
    expect(usage.totals).toMatchObject(counted);
  });

  it("are charged when every attempt timed out, and the failure says so", async () => {
    const model = "gpt-4o-mini-always-hangs";
    const workspace = await budgetedWorkspace(model);
    const fake = fakeUpstreams({ [OPENAI]: (request) => hang(request) });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const failure = await routerTimingOutAfter(100, 2)
      .chat({ messages }, { workspaceId: workspace.id, chargeKey: "always-hangs" })
      .catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(LlmError);
    expect(failure).toMatchObject({ kind: "all_providers_failed" });
    expect((failure as LlmError).charged).toHaveLength(2);
    expect((failure as LlmError).charged?.[0]).toMatchObject({ usage: promptEstimate, provider: "openai", model });
    await expectTimedOutRow(workspace.id, "always-hangs:timed-out:1", model);
    await expectTimedOutRow(workspace.id, "always-hangs:timed-out:2", model);
    expect(await findCharge(createDb(env.DB), workspace.id, "always-hangs")).toBeNull();
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: 18, reserved_tokens: 0 });
    // The call failed: no call is counted, only its two charged attempts.
    const promptCost = costUsd("openai", model, promptEstimate);
    const usage = await usageShown(workspace);
    expect(usage.data[0]).toMatchObject({
      model,
      calls: 0,
      estimated_calls: 0,
      timed_out_attempts: 2,
      prompt_tokens: 18,
      completion_tokens: 0,
      total_tokens: 18,
      cost_usd: summedCost(promptCost, promptCost),
    });
    expect(usage.totals).toMatchObject({ calls: 0, timed_out_attempts: 2, total_tokens: 18 });
    // The 503 the caller gets lists them as an answer's x_mgx would, so its bill reconciles with GET /usage.
    const told = problemBody(llmErrorToApiError(failure) as ApiError, "req_test");
    expect(told).toMatchObject({ status: 503, reason: "all_providers_failed" });
    const attempt = {
      provider: "openai",
      model,
      prompt_tokens: 9,
      completion_tokens: 0,
      cost_usd: expect.any(Number),
      error: TIMED_OUT,
    };
    expect(told.timed_out_attempts).toEqual([attempt, attempt]);
  });

  it("are charged in a stream whose first attempt gave no first event in time", async () => {
    const model = "gpt-4o-mini-stream-timeout";
    const workspace = await budgetedWorkspace(model);
    const frames = [
      { choices: [{ index: 0, delta: { role: "assistant", content: "hi" }, finish_reason: null }] },
      { choices: [{ index: 0, delta: {}, finish_reason: "stop" }] },
      { choices: [], usage: { ...answerUsage, total_tokens: 17 } },
    ];
    const body = `${frames.map((frame) => `data: ${JSON.stringify(frame)}\n\n`).join("")}data: [DONE]\n\n`;
    const fake = fakeUpstreams({
      [OPENAI]: (request, call) =>
        call === 1 ? hang(request) : new Response(body, { headers: { "Content-Type": "text/event-stream" } }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const routed = await routerTimingOutAfter(200).chatStream(
      { messages },
      { workspaceId: workspace.id, chargeKey: "stream-timeout" },
    );
    for await (const _event of routed.deltas);
    const result = await routed.result;
    expect(result.usage).toEqual({ ...answerUsage, total_tokens: 17 });
    expect(result.timed_out_attempts).toHaveLength(1);
    await expectTimedOutRow(workspace.id, "stream-timeout:timed-out:1", model);
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: 17 + 9, reserved_tokens: 0 });
    expect((await usageShown(workspace)).data[0]).toMatchObject({
      calls: 1,
      estimated_calls: 0,
      timed_out_attempts: 1,
      total_tokens: 17 + 9,
    });
  });

  it("are the only failures charged: a provider's error answer (a 408, a 500) costs nothing", async () => {
    const model = "gpt-4o-mini-error-answers";
    const workspace = await budgetedWorkspace(model);
    const fake = fakeUpstreams({
      [OPENAI]: (_request, call) => (call === 1 ? problem(408) : call === 2 ? problem(500) : openAiCompletion("ok")),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const result = await routerTimingOutAfter(5_000).chat(
      { messages },
      { workspaceId: workspace.id, chargeKey: "error-answers" },
    );
    expect(result.attempts).toBe(3);
    expect(result.timed_out_attempts).toBeUndefined();
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: 17, reserved_tokens: 0 });
    expect((await usageShown(workspace)).data[0]).toMatchObject({ calls: 1, timed_out_attempts: 0, total_tokens: 17 });
  });
});

describe("an Anthropic stream that sends nothing but pings", () => {
  it("is given up at the attempt timeout: a ping keeps a connection open, it is no sign the model writes", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "anthropic", model: "claude-3-5-haiku-latest" }],
    });
    const encoder = new TextEncoder();
    const event = (type: string, data: unknown) => encoder.encode(`event: ${type}\ndata: ${JSON.stringify(data)}\n\n`);
    vi.spyOn(globalThis, "fetch").mockImplementation(
      fakeUpstreams({
        "anthropic.test": (request) =>
          new Response(
            new ReadableStream<Uint8Array>({
              start(controller) {
                controller.enqueue(
                  event("message_start", {
                    type: "message_start",
                    message: { id: "msg_1", usage: { input_tokens: 9, output_tokens: 1 } },
                  }),
                );
                const timer = setInterval(() => controller.enqueue(event("ping", { type: "ping" })), 100);
                request.signal.addEventListener(
                  "abort",
                  () => {
                    clearInterval(timer);
                    controller.error(request.signal.reason);
                  },
                  { once: true },
                );
              },
            }),
            { headers: { "Content-Type": "text/event-stream" } },
          ),
      }).impl,
    );
    const startedMs = Date.now();
    const given = routerTimingOutAfter(300, 1)
      .chatStream({ messages }, { workspaceId: workspace.id, chargeKey: "pings", deadlineMs: startedMs + 5_000 })
      .then(
        () => "answered",
        (error: unknown) => error,
      );
    const failure = await Promise.race([given, new Promise((wake) => setTimeout(() => wake("still waiting"), 2_000))]);
    expect(failure).toMatchObject({ kind: "all_providers_failed" });
    expect(Date.now() - startedMs).toBeLessThan(1_500);
    await given;
  });
});

describe("a whole answer that may take longer to write than the attempt timeout", () => {
  const pieces = ["Parsed ", "in ", "six ", "pieces ", "over ", "time."];
  const encoder = new TextEncoder();
  const chunk = (body: unknown) => encoder.encode(`data: ${JSON.stringify(body)}\n\n`);
  const choice = (delta: unknown, finish: string | null = null) => ({
    id: "chatcmpl-slow",
    object: "chat.completion.chunk",
    choices: [{ index: 0, delta, finish_reason: finish }],
  });
  /** A stream body that breaks when its request is aborted, as a real connection's does. */
  const connectionBody = (request: Request, start: (controller: ReadableStreamDefaultController) => unknown) =>
    new ReadableStream<Uint8Array>({
      start(controller) {
        request.signal.addEventListener("abort", () => controller.error(request.signal.reason), { once: true });
        // Enqueueing into a stream the abort broke throws: the writer stops there.
        Promise.resolve(start(controller)).catch(() => {});
      },
    });
  /** A provider that streams these pieces of its answer (after its role chunk), then nothing more. */
  const writesThenStalls = (written: string[]) =>
    fakeUpstreams({
      [OPENAI]: (request) =>
        new Response(
          connectionBody(request, (controller) => {
            controller.enqueue(chunk(choice({ role: "assistant", content: "" })));
            for (const piece of written) controller.enqueue(chunk(choice({ content: piece })));
          }),
          { headers: { "Content-Type": "text/event-stream" } },
        ),
    }).impl;
  /** The answer's stream: after `silentMs` of nothing at all, a piece every 100 ms. */
  const slowStream = (request: Request, silentMs: number) =>
    new Response(
      connectionBody(request, async (controller) => {
        await new Promise((resolve) => setTimeout(resolve, silentMs));
        for (const piece of pieces) {
          await new Promise((resolve) => setTimeout(resolve, 100));
          controller.enqueue(chunk(choice({ content: piece })));
        }
        controller.enqueue(chunk(choice({}, "stop")));
        controller.enqueue(chunk({ ...choice({}), choices: [], usage: { ...answerUsage, total_tokens: 17 } }));
        controller.enqueue(encoder.encode("data: [DONE]\n\n"));
        controller.close();
      }),
      { headers: { "Content-Type": "text/event-stream" } },
    );
  /** An answer that takes its provider 600 ms to write (after `silentMs`): streamed, or whole at the end. */
  const slowWriter = (silentMs = 0) => {
    const asked: { stream?: boolean; max_completion_tokens?: number }[] = [];
    const fake = fakeUpstreams({
      [OPENAI]: async (request) => {
        const body = (await request.clone().json()) as (typeof asked)[number];
        asked.push(body);
        if (body.stream) return slowStream(request, silentMs);
        // As a real connection is, given up when the attempt's timer aborts the request.
        return Promise.race([
          new Promise<Response>((resolve) =>
            setTimeout(() => resolve(openAiCompletion(pieces.join(""), answerUsage)), silentMs + 600),
          ),
          hang(request),
        ]);
      },
    });
    return { fake, asked };
  };
  const answer = {
    message: { role: "assistant", content: "Parsed in six pieces over time." },
    finish_reason: "stop",
    usage: { prompt_tokens: 12, completion_tokens: 5 },
    attempts: 1,
  };

  it("is asked as a stream and told whole, not cut while the provider still writes it; a short one is asked whole", async () => {
    const workspace = await budgetedWorkspace("gpt-4o-mini");
    const { fake, asked } = slowWriter();
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    // Each attempt may wait 300 ms for the provider: half the time the answer takes to write.
    const router = routerTimingOutAfter(300, 1);
    // Without max_tokens, gpt-4o-mini may write 16,384 tokens: far more than 300 ms at an hour per 128,000.
    const result = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "long-answer" });
    expect(result).toMatchObject(answer);
    expect(result.timed_out_attempts).toBeUndefined();
    expect(asked).toMatchObject([{ stream: true }]);

    // 10 tokens take at most 281 ms at that pace: asked whole, and cut when the provider is slower than that.
    const asWhole = await router
      .chat({ messages, max_tokens: 10 }, { workspaceId: workspace.id, chargeKey: "asked-whole" })
      .catch((e) => e);
    expect(asWhole).toBeInstanceOf(LlmError);
    expect(asWhole).toMatchObject({ kind: "all_providers_failed" });
    expect(asked[1]).toMatchObject({ stream: false, max_completion_tokens: 10 });

    // The agent runtime's calls are streamed whatever their max_tokens.
    const runtimeCall = await router.chat(
      { messages, max_tokens: 10 },
      { workspaceId: workspace.id, chargeKey: "runtime", wholeFromStream: true },
    );
    expect(runtimeCall).toMatchObject(answer);
    expect(asked[2]).toMatchObject({ stream: true, max_completion_tokens: 10 });
  });

  it("stalled after part of its answer is charged what the provider wrote, not its prompt alone", async () => {
    const model = "gpt-4o-mini-stalls-mid-answer";
    const workspace = await budgetedWorkspace(model);
    // Three pieces of the answer, then nothing: the provider wrote them, and bills them with the prompt.
    const written = pieces.slice(0, 3);
    vi.spyOn(globalThis, "fetch").mockImplementation(writesThenStalls(written));
    const failure = await routerTimingOutAfter(300, 1)
      .chat({ messages }, { workspaceId: workspace.id, chargeKey: "stalls-mid-answer" })
      .catch((error: unknown) => error);
    expect(failure).toMatchObject({ kind: "all_providers_failed" });
    const completion = Math.ceil(textTokens(written.join("")));
    const charged = { prompt_tokens: 9, completion_tokens: completion, total_tokens: 9 + completion };
    expect((failure as LlmError).charged).toEqual([
      expect.objectContaining({ usage: charged, cost_usd: costUsd("openai", model, charged) }),
    ]);
    expect(await findCharge(createDb(env.DB), workspace.id, "stalls-mid-answer:timed-out:1")).toMatchObject({
      promptTokens: 9,
      completionTokens: completion,
      estimated: true,
    });
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: 9 + completion, reserved_tokens: 0 });
    // The 503 the caller gets tells it so, as GET /api/v1/usage does.
    expect(problemBody(llmErrorToApiError(failure) as ApiError, "req_test").timed_out_attempts).toEqual([
      {
        provider: "openai",
        model,
        prompt_tokens: 9,
        completion_tokens: completion,
        cost_usd: costUsd("openai", model, charged),
        error: TIMED_OUT,
      },
    ]);
  });

  it("cancelled after part of its answer is charged what the provider wrote, not its prompt alone", async () => {
    const model = "gpt-4o-mini-cancelled-mid-answer";
    const workspace = await budgetedWorkspace(model);
    const written = pieces.slice(0, 3);
    vi.spyOn(globalThis, "fetch").mockImplementation(writesThenStalls(written));
    // A task cancelled while its turn is being written.
    const cancel = new AbortController();
    setTimeout(() => cancel.abort(new Error("the task was cancelled")), 300);
    const failure = await routerTimingOutAfter(5_000, 1)
      .chat({ messages }, { workspaceId: workspace.id, chargeKey: "cancelled-mid-answer", signal: cancel.signal })
      .catch((error: unknown) => error);
    expect(failure).toMatchObject({ kind: "cancelled" });
    const completion = Math.ceil(textTokens(written.join("")));
    expect(await findCharge(createDb(env.DB), workspace.id, "cancelled-mid-answer")).toMatchObject({
      promptTokens: 9,
      completionTokens: completion,
      estimated: true,
    });
  });

  it("ends by the call's deadline, as one asked whole does, without counting against the provider still writing", async () => {
    const model = "gpt-4o-mini-writes-past-deadline";
    const workspace = await budgetedWorkspace(model);
    // A piece every 100 ms for 3 s: never a stall, but longer than the caller waits (X-Stainless-Timeout, say).
    vi.spyOn(globalThis, "fetch").mockImplementation(
      fakeUpstreams({
        [OPENAI]: (request) =>
          new Response(
            connectionBody(request, async (controller) => {
              for (let index = 0; index < 30; index++) {
                controller.enqueue(chunk(choice({ content: "word " })));
                await new Promise((resolve) => setTimeout(resolve, 100));
              }
              controller.enqueue(chunk(choice({}, "stop")));
              controller.enqueue(encoder.encode("data: [DONE]\n\n"));
              controller.close();
            }),
            { headers: { "Content-Type": "text/event-stream" } },
          ),
      }).impl,
    );
    const startedMs = Date.now();
    const failure = await routerTimingOutAfter(300, 1)
      .chat({ messages }, { workspaceId: workspace.id, chargeKey: "past-deadline", deadlineMs: startedMs + 800 })
      .catch((error: unknown) => error);
    // Told why at the deadline, before the client's own timer fires, not answered long after it left.
    expect(failure).toMatchObject({ kind: "timeout" });
    expect(Date.now() - startedMs).toBeLessThan(1_500);
    // Charged what the provider read and wrote, as it bills it.
    const row = await findCharge(createDb(env.DB), workspace.id, "past-deadline:timed-out:1");
    expect(row).toMatchObject({ promptTokens: 9, estimated: true });
    expect(row?.completionTokens).toBeGreaterThan(0);
    // The provider was answering: our hurry, not its failure.
    await breakerClientFor(llmConfig()).flush();
    const breakers = await env.PROVIDER_BREAKER.getByName("openai").snapshot();
    expect(breakers.find((entry) => entry.model === model)?.view.consecutiveFailures ?? 0).toBe(0);
  });

  it("cut by the call's deadline tells no fallback: there is no time left for one", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [
        { provider: "openai", model: "gpt-4o-mini-deadline-then-none" },
        { provider: "anthropic", model: "claude-3-5-haiku-latest" },
      ],
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(
      fakeUpstreams({
        [OPENAI]: (request) => hang(request),
        "anthropic.test": () => anthropicMessage("too late"),
      }).impl,
    );
    const failure = await routerTimingOutAfter(5_000, 1)
      .chat({ messages }, { workspaceId: workspace.id, chargeKey: "no-fallback", deadlineMs: Date.now() + 500 })
      .catch((error: unknown) => error);
    expect(failure).toMatchObject({ kind: "timeout" });
    const [error] = await eventsOf(workspace, "llm.provider.error", 1);
    expect(error.data).toMatchObject({ provider: "openai", error_type: "timeout", fallback_triggered: false });
    expect(await eventsOf(workspace, "llm.provider.fallback", 0, 300)).toEqual([]);
  });

  it("of a model that sends nothing while it thinks is waited for as long as it may think, not the attempt timeout", async () => {
    const router = routerTimingOutAfter(300, 1);
    // o3-mini streams nothing for 500 ms (its thinking), then its answer: within what 100,000 tokens may take.
    // No budget, so no answer cap near its limit: the first wait is the longest, cut by the call's deadline.
    const thinker = await workspaceWith({ strategy: "fallback", chain: [{ provider: "openai", model: "o3-mini" }] });
    const { fake, asked } = slowWriter(500);
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const thought = await router.chat({ messages }, { workspaceId: thinker.id, chargeKey: "thinker" });
    expect(thought).toMatchObject(answer);
    expect(asked).toMatchObject([{ stream: true }]);

    // gpt-4o-mini does not think before it answers: the same silence is a stall, given up at 300 ms.
    const silent = await budgetedWorkspace("gpt-4o-mini");
    const stalled = await router.chat({ messages }, { workspaceId: silent.id, chargeKey: "stalled" }).catch((e) => e);
    expect(stalled).toMatchObject({ kind: "all_providers_failed" });
    expect(stalled.message).toContain("did not answer in time");

    // Once its answer has begun, the thinker's stall between two pieces is given up at the attempt timeout.
    vi.spyOn(globalThis, "fetch").mockImplementation(
      fakeUpstreams({
        [OPENAI]: (request) =>
          new Response(
            connectionBody(request, (controller) =>
              controller.enqueue(chunk(choice({ role: "assistant", content: "Parsed " }))),
            ),
            { headers: { "Content-Type": "text/event-stream" } },
          ),
      }).impl,
    );
    const startedMs = Date.now();
    const cut = await router.chat({ messages }, { workspaceId: thinker.id, chargeKey: "cut" }).catch((e) => e);
    expect(cut).toMatchObject({ kind: "all_providers_failed" });
    expect(Date.now() - startedMs).toBeLessThan(2_000);
    // A stall of the provider's, counted against its breaker.
    const o3Breaker = async () => {
      await breakerClientFor(llmConfig()).flush();
      const breakers = await env.PROVIDER_BREAKER.getByName("openai").snapshot();
      return breakers.find((entry) => entry.model === "o3-mini")?.view;
    };
    expect(await o3Breaker()).toMatchObject({ consecutiveFailures: 1 });

    // Silent until the call's deadline: thinking or hung, no one can tell, so it waits that long, and having been
    // given more than the attempt timeout, it counts against the breaker (else an o3 that hangs never opens it).
    vi.spyOn(globalThis, "fetch").mockImplementation(fakeUpstreams({ [OPENAI]: (request) => hang(request) }).impl);
    const hungStartedMs = Date.now();
    const hung = await router
      .chat({ messages }, { workspaceId: thinker.id, chargeKey: "hung", deadlineMs: hungStartedMs + 1_000 })
      .catch((e) => e);
    expect(hung).toMatchObject({ kind: "timeout" });
    expect(Date.now() - hungStartedMs).toBeGreaterThanOrEqual(900);
    expect(await o3Breaker()).toMatchObject({ consecutiveFailures: 2 });
  });
});
