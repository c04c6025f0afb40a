import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createDb } from "../../src/db/client.ts";
import { tasks, usageRecords } from "../../src/db/schema.ts";
import { type ApiError, problemBody } from "../../src/lib/problem.ts";
import { llmErrorToApiError } from "../../src/llm/http-errors.ts";
import { BudgetExhaustedError, createLlmRouter } from "../../src/llm/index.ts";
import { costUsd } from "../../src/llm/prices.ts";
import { textTokens } from "../../src/llm/tokens.ts";
import { findCharge } from "../../src/llm/usage.ts";
import { consumeTaskBatch } from "../../src/tasks/consumer.ts";
import {
  budgetUsed,
  eventsOf,
  fakeUpstreams,
  hang,
  llmConfig,
  NO_BUDGETS,
  openAiCompletion,
  quietLogger,
  summedCost,
  usageShown,
  workspaceWith,
} from "../support/llm.ts";
import { insertTask, taskBody } from "../unit/tasks/fakes.ts";

/**
 * An attempt that ends unfinished (it timed out at the provider, or its stream broke after the answer began) is
 * charged, and the next attempt may spend the call's whole reservation again. So before a retry or a failover, what
 * the unfinished attempt spent must find room in the budget beside the call's reservation: where the room is short,
 * the next answer is cut to what the call still holds; where that cannot hold the prompt again, the call ends with
 * the budget error. Against the real D1 and WorkspaceLimiter, with fake upstreams inside workerd.
 */

afterEach(() => vi.restoreAllMocks());

const OPENAI = "openai.test";
const messages = [{ role: "user" as const, content: "Refactor the parser." }];
// The estimate a reservation uses (src/llm/tokens.ts): 20 characters (5 tokens) plus 4 for the message.
const PROMPT_TOKENS = 9;
const promptUsage = { prompt_tokens: PROMPT_TOKENS, completion_tokens: 0, total_tokens: PROMPT_TOKENS };

/**
 * A workspace with a daily token budget whose chain is one OpenAI model, named for its test: every timed-out
 * attempt counts against the target's breaker, shared by the tests, which would open for those that follow.
 */
const budgeted = (daily_tokens: number, model: string) =>
  workspaceWith({ strategy: "fallback", chain: [{ provider: "openai", model }] }, { ...NO_BUDGETS, daily_tokens });

const routerTimingOutAfter = (attemptTimeoutMs: number) =>
  createLlmRouter(llmConfig(), {
    logger: quietLogger,
    overrides: { attemptTimeoutMs, maxAttemptsPerTarget: 3, sleep: async () => {} },
  });

/** OpenAI answering each request with `answer`; the max_completion_tokens each asked are kept. */
function upstream(answer: (request: Request, call: number) => Response | Promise<Response>) {
  const asked: (number | undefined)[] = [];
  const fake = fakeUpstreams({
    [OPENAI]: async (request, call) => {
      asked.push(((await request.clone().json()) as { max_completion_tokens?: number }).max_completion_tokens);
      return answer(request, call);
    },
  });
  vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
  return { asked, count: () => fake.count(OPENAI) };
}

/** The 429 a call refused for held room is told: retryable in 5 s, no X-Should-Retry: false. */
function toldHeld(failure: unknown): ApiError {
  const told = llmErrorToApiError(failure) as ApiError;
  expect(told.status).toBe(429);
  expect(told.headers).not.toHaveProperty("X-Should-Retry");
  expect(told.headers).toMatchObject({ "Retry-After": "5" });
  return told;
}

/** An OpenAI stream that writes these deltas of an answer, then breaks (the connection lost) before it ends. */
function streamBrokenAfter(deltas: string[]): Response {
  const encoder = new TextEncoder();
  const chunk = (delta: unknown) =>
    encoder.encode(
      `data: ${JSON.stringify({ id: "c", object: "chat.completion.chunk", choices: [{ index: 0, delta, finish_reason: null }] })}\n\n`,
    );
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(chunk({ role: "assistant", content: "" }));
      for (const content of deltas) controller.enqueue(chunk({ content }));
      setTimeout(() => controller.error(new TypeError("Network connection lost.")), 50);
    },
  });
  return new Response(body, { headers: { "Content-Type": "text/event-stream" } });
}

/** A promise held shut until `open` is called. */
function latch(): { opened: Promise<void>; open: () => void } {
  let open: () => void = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

/**
 * Another call (`other`) held at the upstream until `release`, then answered with its usage; meanwhile this call
 * (`thisCall`) meets `answer` there (a hang, a broken stream). The upstream tells them apart by their first message.
 * What this call ended with, and the max_tokens each request asked.
 */
async function besideHeldCall(
  workspaceId: string,
  name: string,
  other: { messages: typeof messages; maxTokens: number; usage: { prompt_tokens: number; completion_tokens: number } },
  thisCall: {
    maxTokens: number;
    attemptTimeoutMs: number;
    wholeFromStream?: boolean;
    answer: (request: Request) => Response | Promise<Response>;
  },
) {
  const otherArrived = latch();
  const otherAnswers = latch();
  const provider = upstream(async (request) => {
    const sent = (await request.clone().json()) as { messages: { content: string }[] };
    if (sent.messages[0].content !== other.messages[0].content) return thisCall.answer(request);
    otherArrived.open();
    await otherAnswers.opened;
    return openAiCompletion("done", other.usage);
  });
  const otherCall = routerTimingOutAfter(10_000).chat(
    { messages: other.messages, max_tokens: other.maxTokens },
    { workspaceId, chargeKey: `${name}-other` },
  );
  await otherArrived.opened;
  const failure = await routerTimingOutAfter(thisCall.attemptTimeoutMs)
    .chat(
      { messages, max_tokens: thisCall.maxTokens },
      {
        workspaceId,
        chargeKey: `${name}-this`,
        ...(thisCall.wholeFromStream ? { wholeFromStream: true } : {}),
      },
    )
    .catch((error: unknown) => error);
  const release = async () => {
    otherAnswers.open();
    await otherCall;
  };
  return { failure, asked: provider.asked, release };
}

describe("a call whose attempt ended unfinished, before it tries again", () => {
  it("ends with 429 budget_exhausted, no retry, when the budget holds the attempt's spend but not another", async () => {
    // 15 tokens a day: the call holds them all (its answer cut to 6); the timed-out attempt's 9-token prompt
    // leaves 6, which cannot hold the prompt again.
    const model = "gpt-4o-mini-no-room";
    const workspace = await budgeted(15, model);
    const provider = upstream((request) => hang(request));
    const failure = await routerTimingOutAfter(100)
      .chat({ messages }, { workspaceId: workspace.id, chargeKey: "no-room" })
      .catch((error: unknown) => error);
    expect(provider.count()).toBe(1);
    expect(failure).toBeInstanceOf(BudgetExhaustedError);
    expect(failure).toMatchObject({ kind: "budget_exhausted", held: false, retryable: false, period: "daily" });
    expect((failure as Error).message).toContain("daily token budget has no room for another attempt");
    const promptCost = costUsd("openai", model, promptUsage);
    // What the caller sees: the budget's 429, not to be retried, with the attempt it was charged.
    const told = llmErrorToApiError(failure) as ApiError;
    expect(told.status).toBe(429);
    expect(told.headers).toMatchObject({ "X-Should-Retry": "false" });
    expect(problemBody(told, "req_test")).toMatchObject({
      status: 429,
      reason: "budget_exhausted",
      retryable: false,
      period: "daily",
      metric: "tokens",
      timed_out_attempts: [
        { provider: "openai", model, prompt_tokens: PROMPT_TOKENS, completion_tokens: 0, cost_usd: promptCost },
      ],
    });
    expect(await findCharge(createDb(env.DB), workspace.id, "no-room:timed-out:1")).toMatchObject({
      promptTokens: PROMPT_TOKENS,
      completionTokens: 0,
      estimated: true,
    });
    // The budget counts what the rows say, and holds nothing after.
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: PROMPT_TOKENS, reserved_tokens: 0 });
    const usage = await usageShown(workspace);
    expect(usage.data[0]).toMatchObject({ calls: 0, timed_out_attempts: 1, total_tokens: PROMPT_TOKENS });
  });

  it("ends the same way when its whole answer's stream broke mid-answer, charged what it wrote", async () => {
    const model = "gpt-4o-mini-broke";
    const workspace = await budgeted(15, model);
    const written = ["Parsed ", "in ", "six "];
    const provider = upstream(() => streamBrokenAfter(written));
    const failure = await routerTimingOutAfter(5_000)
      .chat({ messages }, { workspaceId: workspace.id, chargeKey: "broke", wholeFromStream: true })
      .catch((error: unknown) => error);
    expect(provider.count()).toBe(1);
    expect(failure).toMatchObject({ kind: "budget_exhausted", held: false, retryable: false });
    const writtenTokens = Math.ceil(textTokens(written.join("")));
    expect(problemBody(llmErrorToApiError(failure) as ApiError, "req_test")).toMatchObject({
      status: 429,
      reason: "budget_exhausted",
      interrupted_attempts: [{ prompt_tokens: PROMPT_TOKENS, completion_tokens: writtenTokens }],
    });
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: PROMPT_TOKENS + writtenTokens, reserved_tokens: 0 });
    expect((await usageShown(workspace)).data[0]).toMatchObject({
      calls: 0,
      interrupted_attempts: 1,
      total_tokens: PROMPT_TOKENS + writtenTokens,
    });
  });

  it("does not fall over to the next target either", async () => {
    const model = "gpt-4o-mini-no-room-first";
    const workspace = await workspaceWith(
      {
        strategy: "fallback",
        chain: [
          { provider: "openai", model },
          { provider: "openai", model: "gpt-4o-mini-no-room-second" },
        ],
      },
      { ...NO_BUDGETS, daily_tokens: 15 },
    );
    const provider = upstream((request) => hang(request));
    const router = createLlmRouter(llmConfig(), {
      logger: quietLogger,
      overrides: { attemptTimeoutMs: 100, maxAttemptsPerTarget: 1, sleep: async () => {} },
    });
    const failure = await router
      .chat({ messages }, { workspaceId: workspace.id, chargeKey: "no-fallback" })
      .catch((error: unknown) => error);
    expect(provider.count()).toBe(1);
    expect(failure).toMatchObject({ kind: "budget_exhausted", held: false, retryable: false });
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: PROMPT_TOKENS, reserved_tokens: 0 });
  });

  it("ends with 429 budget_held, retryable, when what it cannot use is held by another call in flight, not spent", async () => {
    // 1,000 tokens a day; another call holds 983 of them (its prompt and max_tokens 974) while it runs. This one
    // holds the 17 left, its answer cut to 8; its timed-out prompt leaves 8, which cannot hold the prompt again. The
    // budget is not spent (9 of 1,000 once it ends): the room comes back with the other call, so a retry may go on.
    const model = "gpt-4o-mini-held-by-other";
    const workspace = await budgeted(1_000, model);
    const otherArrived = latch();
    const otherAnswers = latch();
    const provider = upstream(async (request) => {
      const asked = ((await request.clone().json()) as { max_completion_tokens?: number }).max_completion_tokens;
      if (asked !== 974) return hang(request);
      otherArrived.open();
      await otherAnswers.opened;
      return openAiCompletion("done", { prompt_tokens: 9, completion_tokens: 20 });
    });
    const other = routerTimingOutAfter(10_000).chat(
      { messages, max_tokens: 974 },
      { workspaceId: workspace.id, chargeKey: "held-other" },
    );
    await otherArrived.opened;
    const failure = await routerTimingOutAfter(100)
      .chat({ messages }, { workspaceId: workspace.id, chargeKey: "held-this" })
      .catch((error: unknown) => error);
    expect(provider.asked).toEqual([974, 8]);
    expect(failure).toBeInstanceOf(BudgetExhaustedError);
    expect(failure).toMatchObject({ kind: "budget_exhausted", held: true, retryable: true, period: "daily" });
    const told = llmErrorToApiError(failure) as ApiError;
    expect(told.status).toBe(429);
    expect(told.headers).not.toHaveProperty("X-Should-Retry");
    expect(Number(told.headers?.["Retry-After"])).toBeLessThan(60);
    expect(problemBody(told, "req_test")).toMatchObject({
      reason: "budget_held",
      retryable: true,
      timed_out_attempts: [{ provider: "openai", model, prompt_tokens: PROMPT_TOKENS, completion_tokens: 0 }],
    });
    otherAnswers.open();
    await other;
    // The budget was never spent: the timed-out prompt and the other call's answer.
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: PROMPT_TOKENS + 29, reserved_tokens: 0 });
  });

  it("ends with budget_held too when its hold got only part of the room, the rest held by another call", async () => {
    // 1,000 tokens a day; another call holds 985 (its prompt and max_tokens 976), this one 10 (its prompt and
    // max_tokens 1). The timed-out prompt's hold gets the 5 left; the 6 this call has then cannot hold the prompt
    // again, but the other's 985 come back as it settles: a retry in seconds may go on.
    const model = "gpt-4o-mini-partly-held";
    const workspace = await budgeted(1_000, model);
    const otherMessages = [{ role: "user" as const, content: "Refactor the lexer." }];
    const { failure, asked, release } = await besideHeldCall(
      workspace.id,
      model,
      { messages: otherMessages, maxTokens: 976, usage: { prompt_tokens: 5, completion_tokens: 1 } },
      { maxTokens: 1, attemptTimeoutMs: 100, answer: hang },
    );
    await release();
    expect(asked).toEqual([976, 1]);
    expect(failure).toMatchObject({ kind: "budget_exhausted", held: true, retryable: true, period: "daily" });
    expect(problemBody(toldHeld(failure), "req_test")).toMatchObject({
      reason: "budget_held",
      retryable: true,
      metric: "tokens",
      timed_out_attempts: [{ prompt_tokens: PROMPT_TOKENS, completion_tokens: 0 }],
    });
    expect((failure as Error).message).toContain("held by calls in flight");
    // Spent: the timed-out prompt and the other call's 6; nothing held after.
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: PROMPT_TOKENS + 6, reserved_tokens: 0 });
  });

  it("ends with budget_exhausted when what others hold could not let it answer once given back", async () => {
    // 16 tokens a day; another call holds 6 (a 5-token prompt and max_tokens 1), this one the other 10. The
    // timed-out prompt's hold is refused, the room all held; but the call has 1 token left, and the other's 6 would
    // make 7, short of the 10 its prompt and an answer need. Telling it to retry in seconds would only see it
    // refused again: the budget is as good as spent until the day ends.
    const model = "gpt-4o-mini-held-too-little";
    const workspace = await budgeted(16, model);
    const shortPrompt = [{ role: "user" as const, content: "Hi" }];
    const { failure, asked, release } = await besideHeldCall(
      workspace.id,
      model,
      { messages: shortPrompt, maxTokens: 1, usage: { prompt_tokens: 5, completion_tokens: 1 } },
      { maxTokens: 1, attemptTimeoutMs: 100, answer: hang },
    );
    await release();
    expect(asked).toEqual([1, 1]);
    expect(failure).toMatchObject({ kind: "budget_exhausted", held: false, retryable: false, period: "daily" });
    expect(problemBody(llmErrorToApiError(failure) as ApiError, "req_test")).toMatchObject({
      reason: "budget_exhausted",
      retryable: false,
    });
  });

  it("ends with budget_held when its hold is refused for tokens but what it is short of is dollars that others hold", async () => {
    // A day of 159 tokens and 0.001645 USD (a model the price table does not know is charged 5 and 15 USD a
    // million tokens). Another call (a 9-token prompt, max_tokens 100: 109 tokens, 0.001545 USD) holds the most of
    // both while it runs; this one (max_tokens 100 too) holds the 50 tokens and 0.0001 USD left, its answer cut to 3
    // by the dollars. Its timed-out prompt (0.000045 USD) leaves it 0.000055, which cannot hold the prompt again and
    // a token; the hold is refused, both budgets all held. The limiter names the token budget (it looks at tokens
    // first), yet what this call lacks is dollars, which the other call gives back as it settles: a retry in seconds
    // answers. Not a budget spent until midnight.
    const model = "gpt-4o-mini-held-dollars";
    const other = { prompt_tokens: PROMPT_TOKENS, completion_tokens: 100 };
    const otherCost = costUsd("openai", model, other);
    expect(otherCost).toBe(0.001545);
    const workspace = await workspaceWith(
      { strategy: "fallback", chain: [{ provider: "openai", model }] },
      { ...NO_BUDGETS, daily_tokens: 159, daily_cost_usd: 0.001645 },
    );
    const otherMessages = [{ role: "user" as const, content: "Refactor the lexer." }];
    const { failure, asked, release } = await besideHeldCall(
      workspace.id,
      "held-dollars",
      { messages: otherMessages, maxTokens: 100, usage: { prompt_tokens: PROMPT_TOKENS, completion_tokens: 1 } },
      { maxTokens: 100, attemptTimeoutMs: 100, answer: hang },
    );
    expect(asked).toEqual([100, 3]);
    expect(failure).toBeInstanceOf(BudgetExhaustedError);
    expect(failure).toMatchObject({ kind: "budget_exhausted", held: true, retryable: true, period: "daily" });
    expect(problemBody(toldHeld(failure), "req_test")).toMatchObject({
      reason: "budget_held",
      retryable: true,
      timed_out_attempts: [{ provider: "openai", model, prompt_tokens: PROMPT_TOKENS, completion_tokens: 0 }],
    });
    await release();
    // Far from spent: the timed-out prompt and the other call's 10 tokens; nothing held.
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: PROMPT_TOKENS + 10, reserved_tokens: 0 });
    // As it was told: asked again, the call answers.
    const again = await routerTimingOutAfter(10_000).chat(
      { messages: otherMessages, max_tokens: 1 },
      { workspaceId: workspace.id, chargeKey: "held-dollars-again" },
    );
    expect(again).toMatchObject({ message: { content: "done" }, attempts: 1 });
  });

  it("ends with budget_held when the dollars are all held and the tokens it lacks are free, not spent", async () => {
    // A day of 139 tokens (too few for a lease) and 0.0016 USD (5 and 15 USD a million tokens). Another call ("Hi",
    // 5 tokens, max_tokens 2: 7 tokens, 0.000055 USD) holds its dollars while it runs; this one (max_tokens 100: 109
    // tokens, 0.001545 USD) holds the rest of the dollars. Its stream breaks after 98 tokens of answer: that attempt
    // is charged 107 tokens and 0.001515 USD, which leaves the call 2 tokens, short of its 9-token prompt and a token.
    // Its hold is refused, the dollars all held; but 23 tokens are free, and the other call's dollars come back as it
    // settles: a retry in seconds answers. The tokens the budget has free count, not only what the other call holds
    // (7, which with the call's 2 would not hold the prompt and a token).
    const model = "gpt-4o-mini-free-tokens";
    const written = "abcd".repeat(98);
    const writtenTokens = Math.ceil(textTokens(written));
    expect(writtenTokens).toBe(98);
    const workspace = await workspaceWith(
      { strategy: "fallback", chain: [{ provider: "openai", model }] },
      { ...NO_BUDGETS, daily_tokens: 139, daily_cost_usd: 0.0016 },
    );
    expect(costUsd("openai", model, { prompt_tokens: 5, completion_tokens: 2 })).toBe(0.000055);
    let healed = false;
    const { failure, asked, release } = await besideHeldCall(
      workspace.id,
      "free-tokens",
      {
        messages: [{ role: "user" as const, content: "Hi" }],
        maxTokens: 2,
        usage: { prompt_tokens: 1, completion_tokens: 0 },
      },
      {
        maxTokens: 100,
        attemptTimeoutMs: 5_000,
        wholeFromStream: true,
        answer: () =>
          healed
            ? openAiCompletion("done", { prompt_tokens: PROMPT_TOKENS, completion_tokens: 2 })
            : streamBrokenAfter([written]),
      },
    );
    expect(asked).toEqual([2, 100]);
    expect(failure).toBeInstanceOf(BudgetExhaustedError);
    expect(failure).toMatchObject({ kind: "budget_exhausted", held: true, retryable: true, period: "daily" });
    expect(problemBody(toldHeld(failure), "req_test")).toMatchObject({
      reason: "budget_held",
      retryable: true,
      interrupted_attempts: [{ prompt_tokens: PROMPT_TOKENS, completion_tokens: writtenTokens }],
    });
    await release();
    expect(await budgetUsed(workspace.id)).toMatchObject({
      tokens: PROMPT_TOKENS + writtenTokens + 1,
      reserved_tokens: 0,
    });
    // As it was told: asked again, the call answers, cut to the 2 tokens the 0.00008 USD left allow.
    healed = true;
    asked.length = 0;
    const again = await routerTimingOutAfter(10_000).chat(
      { messages, max_tokens: 100 },
      { workspaceId: workspace.id, chargeKey: "free-tokens-again" },
    );
    expect(asked).toEqual([2]);
    expect(again).toMatchObject({ message: { content: "done" }, attempts: 1 });
  });

  it("names the budget it lacks once all is given back, not the one its refused hold named", async () => {
    // A day of 118 tokens (too few for a lease) and 0.001615 USD (5 and 15 USD a million tokens). Another call
    // ("Hi", max_tokens 3: 8 tokens, 0.00007 USD) holds its dollars while it runs; this one (max_tokens 100: 109
    // tokens, 0.001545 USD) holds the rest of the dollars. Its stream breaks after its 100 tokens of answer: charged
    // all it held. The hold is refused, the dollars all held, and the refusal names the cost budget; but once the
    // other call gives back its 8 tokens and 0.00007 USD, the dollars hold the prompt and a token, the 9 tokens (1 of
    // them free) do not. The budget to raise is the token budget: naming the cost budget sends the caller to raise
    // one that would not help.
    const model = "gpt-4o-mini-names-tokens";
    const written = "abcd".repeat(100);
    const workspace = await workspaceWith(
      { strategy: "fallback", chain: [{ provider: "openai", model }] },
      { ...NO_BUDGETS, daily_tokens: 118, daily_cost_usd: 0.001615 },
    );
    expect(costUsd("openai", model, { prompt_tokens: 5, completion_tokens: 3 })).toBe(0.00007);
    const { failure, asked, release } = await besideHeldCall(
      workspace.id,
      "names-tokens",
      {
        messages: [{ role: "user" as const, content: "Hi" }],
        maxTokens: 3,
        usage: { prompt_tokens: 5, completion_tokens: 1 },
      },
      { maxTokens: 100, attemptTimeoutMs: 5_000, wholeFromStream: true, answer: () => streamBrokenAfter([written]) },
    );
    await release();
    expect(asked).toEqual([3, 100]);
    expect(failure).toMatchObject({ kind: "budget_exhausted", held: false, retryable: false, metric: "tokens" });
    expect((failure as Error).message).toContain("daily token budget has no room for another attempt");
    expect(problemBody(llmErrorToApiError(failure) as ApiError, "req_test")).toMatchObject({
      reason: "budget_exhausted",
      period: "daily",
      metric: "tokens",
      interrupted_attempts: [{ prompt_tokens: PROMPT_TOKENS, completion_tokens: 100 }],
    });
  });

  it("cuts the next answer to what is left once the room cannot hold the unfinished attempt's spend", async () => {
    // 120 tokens a day; the call holds 109 (its prompt and max_tokens 100). The first timed-out prompt fits in the
    // 11 left; the second finds 2: 7 come out of the call's own hold, and the third attempt may answer 93.
    const model = "gpt-4o-mini-cut";
    const workspace = await budgeted(120, model);
    const provider = upstream((request, call) =>
      call < 3 ? hang(request) : openAiCompletion("cut", { prompt_tokens: 9, completion_tokens: 93 }),
    );
    const result = await routerTimingOutAfter(100).chat(
      { messages, max_tokens: 100 },
      { workspaceId: workspace.id, chargeKey: "cut" },
    );
    expect(provider.asked).toEqual([100, 100, 93]);
    expect(result).toMatchObject({ attempts: 3, usage: { total_tokens: 102 } });
    expect(result.timed_out_attempts).toHaveLength(2);
    // The day's budget is spent to the token, not past it; its 100% is told.
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: 120, reserved_tokens: 0 });
    const usage = await usageShown(workspace);
    expect(usage.data[0]).toMatchObject({ calls: 1, timed_out_attempts: 2, total_tokens: 120 });
    const reached = await eventsOf(workspace, "billing.threshold.reached", 3);
    expect(reached.map((event) => event.data.threshold_percent)).toEqual([50, 80, 100]);
  });

  it("with plenty of room, holds the unfinished attempt's spend while the retry runs, then charges the rows", async () => {
    // 2,000 tokens: room for fewer than 20 such calls, so no lease: the limiter shows what the call holds.
    const model = "gpt-4o-mini-plenty";
    const workspace = await budgeted(2_000, model);
    const second = latch();
    const arrived = latch();
    const provider = upstream(async (request, call) => {
      if (call === 1) return hang(request);
      arrived.open();
      await second.opened;
      return openAiCompletion("fine", { prompt_tokens: 12, completion_tokens: 5 });
    });
    const answer = routerTimingOutAfter(100).chat(
      { messages, max_tokens: 100 },
      { workspaceId: workspace.id, chargeKey: "plenty" },
    );
    await arrived.opened;
    // The call's 109 and, beside them, the timed-out attempt's 9, already charged once the call ends.
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: 0, reserved_tokens: 109 + PROMPT_TOKENS });
    second.open();
    const result = await answer;
    expect(provider.asked).toEqual([100, 100]);
    expect(result).toMatchObject({ attempts: 2, usage: { total_tokens: 17 } });
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: 17 + PROMPT_TOKENS, reserved_tokens: 0 });
    const usage = await usageShown(workspace);
    expect(usage.data[0]).toMatchObject({
      calls: 1,
      timed_out_attempts: 1,
      total_tokens: 17 + PROMPT_TOKENS,
      cost_usd: summedCost(
        costUsd("openai", model, { prompt_tokens: 12, completion_tokens: 5 }),
        costUsd("openai", model, promptUsage),
      ),
    });
  });
});

describe("the holds beside a call, released on every way it ends", () => {
  const streamFrames = [
    { choices: [{ index: 0, delta: { role: "assistant", content: "hi" }, finish_reason: null }] },
    { choices: [{ index: 0, delta: {}, finish_reason: "stop" }] },
    { choices: [], usage: { prompt_tokens: 12, completion_tokens: 5, total_tokens: 17 } },
  ];
  const streamBody = `${streamFrames.map((frame) => `data: ${JSON.stringify(frame)}\n\n`).join("")}data: [DONE]\n\n`;

  it("a caller's stream served after a timed-out attempt holds its spend until the stream ends", async () => {
    const model = "gpt-4o-mini-stream-held";
    const workspace = await budgeted(2_000, model);
    upstream((request, call) =>
      call === 1 ? hang(request) : new Response(streamBody, { headers: { "Content-Type": "text/event-stream" } }),
    );
    const routed = await routerTimingOutAfter(100).chatStream(
      { messages, max_tokens: 100 },
      { workspaceId: workspace.id, chargeKey: "stream-held" },
    );
    const deltas = routed.deltas[Symbol.asyncIterator]();
    expect((await deltas.next()).done).toBe(false);
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: 0, reserved_tokens: 109 + PROMPT_TOKENS });
    while (!(await deltas.next()).done);
    expect((await routed.result).timed_out_attempts).toHaveLength(1);
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: 17 + PROMPT_TOKENS, reserved_tokens: 0 });
    expect((await usageShown(workspace)).data[0]).toMatchObject({ calls: 1, total_tokens: 17 + PROMPT_TOKENS });
  });

  it("a call cancelled during its retry gives back the hold, and is charged both prompts", async () => {
    const model = "gpt-4o-mini-cancelled";
    const workspace = await budgeted(2_000, model);
    const arrived = latch();
    upstream((request, call) => {
      if (call === 2) arrived.open();
      return hang(request);
    });
    const cancel = new AbortController();
    const failure = routerTimingOutAfter(100)
      .chat({ messages, max_tokens: 100 }, { workspaceId: workspace.id, chargeKey: "cancelled", signal: cancel.signal })
      .catch((error: unknown) => error);
    await arrived.opened;
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: 0, reserved_tokens: 109 + PROMPT_TOKENS });
    // The retry's timer is 100 ms: cancelled at once, before it runs out.
    cancel.abort();
    expect(await failure).toMatchObject({ kind: "cancelled" });
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: 2 * PROMPT_TOKENS, reserved_tokens: 0 });
    expect(await findCharge(createDb(env.DB), workspace.id, "cancelled:timed-out:1")).toMatchObject({
      totalTokens: PROMPT_TOKENS,
    });
  });

  it("a hold whose reservation's answer was lost is given back too: the counter may have taken it", async () => {
    const model = "gpt-4o-mini-lost-answer";
    const workspace = await budgeted(2_000, model);
    upstream((request, call) =>
      call === 1 ? hang(request) : openAiCompletion("fine", { prompt_tokens: 12, completion_tokens: 5 }),
    );
    // The limiter takes the hold beside the call, but its answer is lost on the way back.
    const namespace = {
      getByName(name: string) {
        const stub = env.WORKSPACE_LIMITER.getByName(name);
        return {
          reserveBudget: async (input: Parameters<typeof stub.reserveBudget>[0]) => {
            const answer = await stub.reserveBudget(input);
            if (input.chargeKey.includes(":timed-out:")) throw new Error("Network connection lost.");
            return answer;
          },
          settleBudget: (input: Parameters<typeof stub.settleBudget>[0]) => stub.settleBudget(input),
        };
      },
    } as unknown as typeof env.WORKSPACE_LIMITER;
    const router = createLlmRouter(llmConfig({ WORKSPACE_LIMITER: namespace }), {
      logger: quietLogger,
      overrides: { attemptTimeoutMs: 100, maxAttemptsPerTarget: 3, sleep: async () => {} },
    });
    const result = await router.chat(
      { messages, max_tokens: 100 },
      { workspaceId: workspace.id, chargeKey: "lost-answer" },
    );
    // Without the hold's answer the retry's answer was cut to what the call holds beside its timed-out prompt.
    expect(result).toMatchObject({ attempts: 2, usage: { total_tokens: 17 } });
    // Nothing left reserved for the 30 minutes an unsettled reservation lasts.
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: 17 + PROMPT_TOKENS, reserved_tokens: 0 });
  });

  it("a call that reserved against a lease takes the hold from it, and the lease closes with every token counted", {
    timeout: 30_000,
  }, async () => {
    const model = "gpt-4o-mini-leased";
    const workspace = await budgeted(1_000_000, model);
    const limiterCalls: string[] = [];
    const namespace = {
      getByName(name: string) {
        const stub = env.WORKSPACE_LIMITER.getByName(name);
        const counted =
          <A extends unknown[], R>(what: string, call: (...args: A) => R) =>
          (...args: A) => {
            limiterCalls.push(what);
            return call(...args);
          };
        return {
          reserveBudget: counted("reserve", (input: Parameters<typeof stub.reserveBudget>[0]) =>
            stub.reserveBudget(input),
          ),
          settleBudget: counted("settle", (input: Parameters<typeof stub.settleBudget>[0]) => stub.settleBudget(input)),
          lendBudget: counted("lend", (input: Parameters<typeof stub.lendBudget>[0]) => stub.lendBudget(input)),
          settleLeasedBudget: counted("settleLeased", (input: Parameters<typeof stub.settleLeasedBudget>[0]) =>
            stub.settleLeasedBudget(input),
          ),
        };
      },
    } as unknown as typeof env.WORKSPACE_LIMITER;
    const background: Promise<unknown>[] = [];
    const router = createLlmRouter(llmConfig({ WORKSPACE_LIMITER: namespace }), {
      logger: quietLogger,
      waitUntil: (work) => background.push(work),
      overrides: { attemptTimeoutMs: 100, maxAttemptsPerTarget: 3, sleep: async () => {} },
    });
    const retried = latch();
    const retryAnswer = latch();
    upstream(async (request, call) => {
      if (call === 2) return hang(request);
      if (call === 3) {
        retried.open();
        await retryAnswer.opened;
      }
      return openAiCompletion("fine", { prompt_tokens: 12, completion_tokens: 5 });
    });
    const chat = (chargeKey: string, max_tokens = 100) =>
      router.chat({ messages, max_tokens }, { workspaceId: workspace.id, chargeKey });
    // The first call reserves its 109 tokens at the limiter and is lent a lease of ten such calls (1,090 tokens);
    // the second takes 109 of it, and its timed-out attempt's 9 beside them.
    await chat("leased:1");
    const second = chat("leased:2");
    await retried.opened;
    expect(limiterCalls).toEqual(["reserve", "settle"]);
    // What the lease has left (972) cannot hold a call of 975 alongside: it reserves at the limiter.
    await chat("leased:3", 975 - PROMPT_TOKENS);
    expect(limiterCalls.filter((call) => call === "reserve")).toHaveLength(2);
    retryAnswer.open();
    expect(await second).toMatchObject({ attempts: 2, timed_out_attempts: [{ usage: promptUsage }] });
    // Once its time is up the lease is closed: a hold never given back would keep it open, and its room held.
    await vi.waitFor(async () => expect(limiterCalls).toContain("settleLeased"), { timeout: 8_000 });
    await vi.waitFor(async () => expect((await budgetUsed(workspace.id)).reserved_tokens).toBe(0), { timeout: 8_000 });
    while (background.length > 0) await Promise.all(background.splice(0));
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: 3 * 17 + PROMPT_TOKENS, reserved_tokens: 0 });
    expect((await usageShown(workspace)).data[0]).toMatchObject({ calls: 3, total_tokens: 3 * 17 + PROMPT_TOKENS });
  });
});

describe("a task whose call's attempt timed out with no room for another", () => {
  it("ends with the budget error, as a task meeting a spent budget does", async () => {
    const model = "gpt-4o-mini-task";
    const workspace = await budgeted(TASK_BUDGET_TOKENS, model);
    const provider = upstream((request) => hang(request));
    const config = llmConfig();
    const router = createLlmRouter(config, {
      logger: quietLogger,
      overrides: { attemptTimeoutMs: 100, maxAttemptsPerTarget: 3, sleep: async () => {} },
    });
    const row = await insertTask(workspace.id);
    const batch = createMessageBatch("tasks", [
      { id: "msg-unfinished", timestamp: new Date(), attempts: 1, body: taskBody(workspace.id, row.id) },
    ]);
    await consumeTaskBatch(batch, config, { router, logger: quietLogger, random: () => 0.5 });
    const result = await getQueueResult(batch, createExecutionContext());

    expect(provider.count()).toBe(1);
    // Not retryable: the message is acked, the task failed for good.
    expect(result.explicitAcks).toEqual(["msg-unfinished"]);
    expect(result.retryMessages).toEqual([]);
    const db = createDb(env.DB);
    const charged = await db.select().from(usageRecords).where(eq(usageRecords.taskId, row.id));
    expect(charged).toHaveLength(1);
    const [task] = await db.select().from(tasks).where(eq(tasks.id, row.id));
    expect(task).toMatchObject({
      status: "failed",
      error: { type: "llm_budget_exhausted", message: expect.stringMatching(/daily token budget/) },
      promptTokens: charged[0].promptTokens,
      completionTokens: 0,
    });
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: charged[0].promptTokens, reserved_tokens: 0 });
  });
});

describe("a task whose call's attempt timed out where another call in flight holds the room", () => {
  it("ends its run to be retried, not asked again under the charge key its timed-out attempt settled", async () => {
    // 10,000 tokens; another call holds 9,400 while it runs, the task's call the 600 left (see TASK_BUDGET_TOKENS).
    const model = "gpt-4o-mini-task-held";
    const workspace = await budgeted(10_000, model);
    const otherArrived = latch();
    const otherAnswers = latch();
    let taskAsked = 0;
    upstream(async (request) => {
      const asked = ((await request.clone().json()) as { max_completion_tokens?: number }).max_completion_tokens;
      if (asked !== 9_391) {
        taskAsked++;
        return hang(request);
      }
      otherArrived.open();
      await otherAnswers.opened;
      return openAiCompletion("done", { prompt_tokens: 9, completion_tokens: 20 });
    });
    const config = llmConfig();
    const other = routerTimingOutAfter(30_000).chat(
      { messages, max_tokens: 9_391 },
      { workspaceId: workspace.id, chargeKey: "task-held-other" },
    );
    await otherArrived.opened;
    const router = createLlmRouter(config, {
      logger: quietLogger,
      overrides: { attemptTimeoutMs: 100, maxAttemptsPerTarget: 3, sleep: async () => {} },
    });
    const row = await insertTask(workspace.id);
    const batch = createMessageBatch("tasks", [
      { id: "msg-held", timestamp: new Date(), attempts: 1, body: taskBody(workspace.id, row.id) },
    ]);
    await consumeTaskBatch(batch, config, { router, logger: quietLogger, random: () => 0.5 });
    const result = await getQueueResult(batch, createExecutionContext());
    otherAnswers.open();
    await other;

    // Asked once: again under its settled key, the call reserved nothing and was counted nowhere in the budget.
    expect(taskAsked).toBe(1);
    expect(result.retryMessages.map((message) => message.msgId)).toEqual(["msg-held"]);
    const db = createDb(env.DB);
    const charged = await db.select().from(usageRecords).where(eq(usageRecords.taskId, row.id));
    expect(charged).toHaveLength(1);
    expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: charged[0].promptTokens + 29, reserved_tokens: 0 });
  });
});

/** Room for the agent's first prompt (its estimate: 440 tokens), but not for it twice. */
const TASK_BUDGET_TOKENS = 600;
