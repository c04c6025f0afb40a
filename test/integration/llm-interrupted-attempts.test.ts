import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createDb } from "../../src/db/client.ts";
import type { LlmRouting } from "../../src/db/schema.ts";
import { type ApiError, problemBody } from "../../src/lib/problem.ts";
import { llmErrorToApiError } from "../../src/llm/http-errors.ts";
import { createLlmRouter, LlmError } from "../../src/llm/index.ts";
import { toCompletion } from "../../src/llm/openai-compat.ts";
import { ChatCompletionSchema } from "../../src/llm/openai-schemas.ts";
import { costUsd } from "../../src/llm/prices.ts";
import { textTokens } from "../../src/llm/tokens.ts";
import { findCharge } from "../../src/llm/usage.ts";
import {
  budgetUsed,
  fakeUpstreams,
  llmConfig,
  quietLogger,
  summedCost,
  usageShown,
  workspaceWith,
} from "../support/llm.ts";

/**
 * A whole answer asked as a stream (it may take longer to write than the attempt timeout) whose stream breaks after
 * its answer began, other than by a timeout: the connection drops, or the provider sends an error in the stream. The
 * provider bills the prompt it read and what it wrote, and the retry is billed again, so the broken attempt is
 * charged both, estimated, in a usage row of its own (`:interrupted:<n>`), and told as an interrupted attempt.
 * Against the real D1 and WorkspaceLimiter, with fake upstreams inside workerd.
 */

afterEach(() => vi.restoreAllMocks());

const messages = [{ role: "user" as const, content: "Refactor the parser." }];
// The estimate a reservation uses (src/llm/tokens.ts): 20 characters (5 tokens) plus 4 for the message.
const PROMPT_ESTIMATE_TOKENS = 9;
const pieces = ["Parsed ", "in ", "six ", "pieces ", "over ", "time."];
/** What a broken attempt's provider wrote before the break: three pieces. */
const written = pieces.slice(0, 3);
const writtenTokens = Math.ceil(textTokens(written.join("")));
const brokenUsage = {
  prompt_tokens: PROMPT_ESTIMATE_TOKENS,
  completion_tokens: writtenTokens,
  total_tokens: PROMPT_ESTIMATE_TOKENS + writtenTokens,
};
const answerUsage = { prompt_tokens: 12, completion_tokens: 5, total_tokens: 17 };

const encoder = new TextEncoder();
const sse = (body: unknown, event?: string) =>
  encoder.encode(`${event ? `event: ${event}\n` : ""}data: ${JSON.stringify(body)}\n\n`);
const streamed = (write: (controller: ReadableStreamDefaultController<Uint8Array>) => void) =>
  new Response(new ReadableStream<Uint8Array>({ start: write }), { headers: { "Content-Type": "text/event-stream" } });
/**
 * The connection drops mid-stream, as workerd tells a reset: once what came before it was read, since an errored
 * stream drops the chunks still queued.
 */
const dropped = (controller: ReadableStreamDefaultController<Uint8Array>) =>
  setTimeout(() => controller.error(new TypeError("Network connection lost.")), 50);

const choice = (delta: unknown, finish: string | null = null) => ({
  id: "chatcmpl-broken",
  object: "chat.completion.chunk",
  choices: [{ index: 0, delta, finish_reason: finish }],
});
/** OpenAI's stream of the written pieces, then `end` (a break, or the rest of the answer). */
const openAiStream = (end: (controller: ReadableStreamDefaultController<Uint8Array>) => void) =>
  streamed((controller) => {
    controller.enqueue(sse(choice({ role: "assistant", content: "" })));
    for (const piece of written) controller.enqueue(sse(choice({ content: piece })));
    end(controller);
  });
const openAiRest = (controller: ReadableStreamDefaultController<Uint8Array>) => {
  for (const piece of pieces.slice(written.length)) controller.enqueue(sse(choice({ content: piece })));
  controller.enqueue(sse(choice({}, "stop")));
  controller.enqueue(sse({ ...choice({}), choices: [], usage: answerUsage }));
  controller.enqueue(encoder.encode("data: [DONE]\n\n"));
  controller.close();
};
/** An error OpenAI-compatible servers (vLLM, LiteLLM) send in the stream once it has begun. */
const openAiErrorEvent = (controller: ReadableStreamDefaultController<Uint8Array>) => {
  controller.enqueue(sse({ error: { message: "The server had an error", type: "server_error", code: 500 } }));
  controller.close();
};

/** Anthropic's stream of the written pieces, then `end`. */
const anthropicStream = (end: (controller: ReadableStreamDefaultController<Uint8Array>) => void) =>
  streamed((controller) => {
    const message = { id: "msg_broken", type: "message", role: "assistant", content: [] };
    controller.enqueue(
      sse(
        { type: "message_start", message: { ...message, usage: { input_tokens: 12, output_tokens: 1 } } },
        "message_start",
      ),
    );
    controller.enqueue(
      sse({ type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }, "content_block_start"),
    );
    for (const text of written) {
      controller.enqueue(
        sse({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text } }, "content_block_delta"),
      );
    }
    end(controller);
  });
const anthropicRest = (controller: ReadableStreamDefaultController<Uint8Array>) => {
  for (const text of pieces.slice(written.length)) {
    controller.enqueue(
      sse({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text } }, "content_block_delta"),
    );
  }
  controller.enqueue(sse({ type: "content_block_stop", index: 0 }, "content_block_stop"));
  controller.enqueue(
    sse({ type: "message_delta", delta: { stop_reason: "end_turn" }, usage: { output_tokens: 5 } }, "message_delta"),
  );
  controller.enqueue(sse({ type: "message_stop" }, "message_stop"));
  controller.close();
};
const anthropicOverloaded = (controller: ReadableStreamDefaultController<Uint8Array>) => {
  controller.enqueue(sse({ type: "error", error: { type: "overloaded_error", message: "Overloaded" } }, "error"));
  controller.close();
};

/** Room for fewer than 20 calls: no budget lease, so the limiter's figures show every token charged and held. */
const budgetedWorkspace = (chain: LlmRouting["chain"]) =>
  workspaceWith(
    { strategy: "fallback", chain },
    { daily_tokens: 10_000, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null },
  );

// Long enough that nothing here times out: a break is all that ends an attempt.
const router = (maxAttemptsPerTarget = 3) =>
  createLlmRouter(llmConfig(), {
    logger: quietLogger,
    overrides: { attemptTimeoutMs: 5_000, maxAttemptsPerTarget, sleep: async () => {} },
  });

/** Each request's body as the fake upstream read it: whether it asked for a stream. */
function upstream(host: string, answer: (call: number) => Response) {
  const asked: { stream?: boolean }[] = [];
  const fake = fakeUpstreams({
    [host]: async (request, call) => {
      asked.push((await request.clone().json()) as { stream?: boolean });
      return answer(call);
    },
  });
  vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
  return asked;
}

async function expectInterruptedRow(workspaceId: string, chargeKey: string, provider: string, model: string) {
  expect(await findCharge(createDb(env.DB), workspaceId, chargeKey)).toMatchObject({
    provider,
    model,
    promptTokens: PROMPT_ESTIMATE_TOKENS,
    completionTokens: writtenTokens,
    costUsd: costUsd(provider, model, brokenUsage),
    estimated: true,
  });
}

describe("a long whole answer whose stream breaks after it began", () => {
  const cases = [
    {
      name: "the connection drops",
      provider: "openai",
      host: "openai.test",
      model: "gpt-4o-mini-connection-drops",
      broken: () => openAiStream(dropped),
      whole: () => openAiStream(openAiRest),
      // Why, as the caller is told it beside the charge.
      error: { code: "connection", message: "connection to the provider failed: Network connection lost." },
    },
    {
      name: "OpenAI-compatible: an error chunk in the stream",
      provider: "openai",
      host: "openai.test",
      model: "gpt-4o-mini-error-chunk",
      broken: () => openAiStream(openAiErrorEvent),
      whole: () => openAiStream(openAiRest),
      error: { code: "server_error", message: "provider answered 500: The server had an error" },
    },
    {
      name: "Anthropic: an overloaded_error event in the stream",
      provider: "anthropic",
      host: "anthropic.test",
      model: "claude-3-5-haiku-latest",
      broken: () => anthropicStream(anthropicOverloaded),
      whole: () => anthropicStream(anthropicRest),
      error: { code: "overloaded_error", message: "provider answered 529: Overloaded" },
      // Its message_start told the prompt's count (input_tokens 12) before the break: charged that, not our estimate.
      brokenPromptTokens: 12,
    },
  ];

  for (const {
    name,
    provider,
    host,
    model,
    broken,
    whole,
    error,
    brokenPromptTokens,
  } of cases as ((typeof cases)[number] & {
    brokenPromptTokens?: number;
  })[]) {
    const promptTokens = brokenPromptTokens ?? PROMPT_ESTIMATE_TOKENS;
    const brokenUsage = {
      prompt_tokens: promptTokens,
      completion_tokens: writtenTokens,
      total_tokens: promptTokens + writtenTokens,
    };
    it(`(${name}) is charged its prompt and what the provider wrote, beside the retry's answer`, async () => {
      const workspace = await budgetedWorkspace([{ provider, model }]);
      const asked = upstream(host, (call) => (call === 1 ? broken() : whole()));
      const chargeKey = `broken-then-answered-${provider}`;
      const result = await router().chat({ messages }, { workspaceId: workspace.id, chargeKey });
      // Asked as a stream, as a whole answer that may take longer than the attempt timeout is.
      expect(asked).toMatchObject([{ stream: true }, { stream: true }]);
      expect(result).toMatchObject({ attempts: 2, message: { content: pieces.join("") } });
      const answerCost = costUsd(provider, model, answerUsage);
      const brokenCost = costUsd(provider, model, brokenUsage);
      expect(brokenCost).toBeGreaterThan(0);
      expect(result.interrupted_attempts).toEqual([
        { usage: brokenUsage, cost_usd: brokenCost, provider, model, simulated: false, error },
      ]);
      expect(result.timed_out_attempts).toBeUndefined();
      // The answer's JSON tells it, in the shape the OpenAPI document gives.
      const told = {
        provider,
        model,
        prompt_tokens: promptTokens,
        completion_tokens: writtenTokens,
        cost_usd: brokenCost,
        error,
      };
      const body = ChatCompletionSchema.parse(JSON.parse(JSON.stringify(toCompletion("chatcmpl-1", result))));
      expect(body.x_mgx).toMatchObject({ attempts: 2, interrupted_attempts: [told] });
      expect(body.x_mgx).not.toHaveProperty("timed_out_attempts");

      expect(await findCharge(createDb(env.DB), workspace.id, chargeKey)).toMatchObject({
        promptTokens: 12,
        completionTokens: 5,
        estimated: false,
      });
      expect(await findCharge(createDb(env.DB), workspace.id, `${chargeKey}:interrupted:1`)).toMatchObject({
        promptTokens,
        completionTokens: writtenTokens,
        costUsd: brokenCost,
        estimated: true,
      });
      // The budget spent what the rows say: the answer and the broken attempt.
      expect(await budgetUsed(workspace.id)).toMatchObject({
        tokens: answerUsage.total_tokens + brokenUsage.total_tokens,
        reserved_tokens: 0,
      });
      // One call, as the user made it; the broken attempt counted apart, its tokens and cost in the sums.
      const counted = {
        calls: 1,
        estimated_calls: 0,
        timed_out_attempts: 0,
        interrupted_attempts: 1,
        prompt_tokens: 12 + promptTokens,
        completion_tokens: 5 + writtenTokens,
        total_tokens: answerUsage.total_tokens + brokenUsage.total_tokens,
        cost_usd: summedCost(answerCost, brokenCost),
      };
      const usage = await usageShown(workspace);
      expect(usage.data[0]).toMatchObject({ provider, model, simulated: false, ...counted });
      expect(usage.totals).toMatchObject(counted);
    });
  }

  it("broken at every attempt, fails with a 503 that lists each attempt's charge, as the usage rows do", async () => {
    const model = "gpt-4o-mini-always-breaks";
    const workspace = await budgetedWorkspace([{ provider: "openai", model }]);
    upstream("openai.test", (call) => openAiStream(call === 1 ? dropped : openAiErrorEvent));
    const failure = await router(2)
      .chat({ messages }, { workspaceId: workspace.id, chargeKey: "always-breaks" })
      .catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(LlmError);
    expect(failure).toMatchObject({ kind: "all_providers_failed" });
    const brokenCost = costUsd("openai", model, brokenUsage);
    expect((failure as LlmError).charged).toEqual([
      expect.objectContaining({ usage: brokenUsage, cost_usd: brokenCost, unfinished: "interrupted" }),
      expect.objectContaining({ usage: brokenUsage, cost_usd: brokenCost, unfinished: "interrupted" }),
    ]);
    await expectInterruptedRow(workspace.id, "always-breaks:interrupted:1", "openai", model);
    await expectInterruptedRow(workspace.id, "always-breaks:interrupted:2", "openai", model);
    expect(await findCharge(createDb(env.DB), workspace.id, "always-breaks")).toBeNull();
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: 2 * brokenUsage.total_tokens, reserved_tokens: 0 });
    const usage = await usageShown(workspace);
    expect(usage.data[0]).toMatchObject({
      model,
      calls: 0,
      estimated_calls: 0,
      timed_out_attempts: 0,
      interrupted_attempts: 2,
      total_tokens: 2 * brokenUsage.total_tokens,
      cost_usd: summedCost(brokenCost, brokenCost),
    });
    // The 503 the caller gets lists them as an answer's x_mgx would, so its bill reconciles with GET /usage.
    const told = problemBody(llmErrorToApiError(failure) as ApiError, "req_test");
    expect(told).toMatchObject({ status: 503, reason: "all_providers_failed" });
    const attempt = {
      provider: "openai",
      model,
      prompt_tokens: 9,
      completion_tokens: writtenTokens,
      cost_usd: brokenCost,
    };
    // Each with why it broke: the first's connection dropped, the second's stream sent an error.
    expect(told.interrupted_attempts).toEqual([
      {
        ...attempt,
        error: { code: "connection", message: "connection to the provider failed: Network connection lost." },
      },
      { ...attempt, error: { code: "server_error", message: "provider answered 500: The server had an error" } },
    ]);
    expect(told).not.toHaveProperty("timed_out_attempts");
  });
});

describe("an answer whose stream breaks while its model thinks, before a delta", () => {
  // The thinking a reasoning model streams (reasoning_content) is not passed on, but the provider wrote it and bills it.
  const thinking = "The parser reads tokens twice; one pass would do.";
  const thinkingTokens = Math.ceil(textTokens(thinking));
  const thinksThenDrops = () =>
    streamed((controller) => {
      controller.enqueue(sse(choice({ role: "assistant", content: "", reasoning_content: thinking })));
      dropped(controller);
    });
  const thought = {
    prompt_tokens: PROMPT_ESTIMATE_TOKENS,
    completion_tokens: thinkingTokens,
    total_tokens: PROMPT_ESTIMATE_TOKENS + thinkingTokens,
  };

  it("is charged the prompt and the thinking, whole or streamed to the caller", async () => {
    const model = "o3-mini";
    const workspace = await budgetedWorkspace([{ provider: "openai", model }]);
    upstream("openai.test", (call) => (call % 2 === 1 ? thinksThenDrops() : openAiStream(openAiRest)));
    const whole = await router().chat({ messages }, { workspaceId: workspace.id, chargeKey: "thinks-whole" });
    expect(whole.interrupted_attempts).toEqual([
      expect.objectContaining({ usage: thought, cost_usd: costUsd("openai", model, thought) }),
    ]);
    await expect(findCharge(createDb(env.DB), workspace.id, "thinks-whole:interrupted:1")).resolves.toMatchObject({
      completionTokens: thinkingTokens,
    });

    const routed = await router().chatStream({ messages }, { workspaceId: workspace.id, chargeKey: "thinks-stream" });
    let told = "";
    for await (const event of routed.deltas) if (event.type === "delta") told += event.content ?? "";
    expect(told).toBe(pieces.join(""));
    expect((await routed.result).interrupted_attempts).toEqual([expect.objectContaining({ usage: thought })]);
    expect(await budgetUsed(workspace.id)).toMatchObject({
      tokens: 2 * (answerUsage.total_tokens + thought.total_tokens),
      reserved_tokens: 0,
    });
  });
});

describe("an answer a content filter cuts mid-answer", () => {
  // Azure's filter on the completion sends its refusal in the stream once the answer has begun: the call ends (a
  // content policy is the deployment's own), but the provider wrote, and bills, what came before it.
  const filtered = (controller: ReadableStreamDefaultController<Uint8Array>) => {
    controller.enqueue(
      sse({
        error: { message: "The response was filtered by the content policy", code: "content_filter", status: 400 },
      }),
    );
    controller.close();
  };

  it("fails with a 400 that lists the attempt's charge, as the usage row has it", async () => {
    const model = "gpt-4o-mini-filtered";
    const workspace = await budgetedWorkspace([{ provider: "openai", model }]);
    upstream("openai.test", () => openAiStream(filtered));
    const failure = await router()
      .chat({ messages }, { workspaceId: workspace.id, chargeKey: "filtered" })
      .catch((error: unknown) => error);
    expect(failure).toMatchObject({ kind: "content_filter" });
    await expectInterruptedRow(workspace.id, "filtered:interrupted:1", "openai", model);
    const told = problemBody(llmErrorToApiError(failure) as ApiError, "req_test");
    expect(told).toMatchObject({ status: 400, reason: "content_filter" });
    expect(told.interrupted_attempts).toEqual([
      {
        provider: "openai",
        model,
        prompt_tokens: 9,
        completion_tokens: writtenTokens,
        cost_usd: costUsd("openai", model, brokenUsage),
        error: {
          code: "content_filter",
          message: "provider answered 400: The response was filtered by the content policy",
        },
      },
    ]);
  });
});

describe("a long whole answer cancelled after its stream told the prompt's count", () => {
  it("is charged the provider's count of the prompt and what it wrote, not our estimate", async () => {
    const model = "claude-3-5-haiku-latest";
    const workspace = await budgetedWorkspace([{ provider: "anthropic", model }]);
    // message_start (input_tokens 12) and three pieces, then nothing until the request is aborted: a task cancelled
    // while its turn is written.
    const stalled = (request: Request) =>
      anthropicStream((controller) =>
        request.signal.addEventListener("abort", () => controller.error(request.signal.reason), { once: true }),
      );
    vi.spyOn(globalThis, "fetch").mockImplementation(fakeUpstreams({ "anthropic.test": stalled }).impl);
    const cancel = new AbortController();
    setTimeout(() => cancel.abort(new Error("the task was cancelled")), 300);
    const failure = await router()
      .chat({ messages }, { workspaceId: workspace.id, chargeKey: "cancelled-after-start", signal: cancel.signal })
      .catch((error: unknown) => error);
    expect(failure).toMatchObject({ kind: "cancelled" });
    expect(await findCharge(createDb(env.DB), workspace.id, "cancelled-after-start")).toMatchObject({
      promptTokens: 12,
      completionTokens: writtenTokens,
      estimated: true,
    });
  });
});
