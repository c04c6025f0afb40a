import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { BudgetBook } from "../../src/limits/budgets.ts";
import { BudgetExhaustedError, createLlmRouter } from "../../src/llm/index.ts";
import {
  anthropicMessage,
  BASE,
  fakeUpstreams,
  fetcher,
  llmConfig,
  openAiCompletion,
  quietLogger,
  workspaceWith,
} from "../support/llm.ts";

/**
 * A call reserves the most it may spend (its prompt and its max_tokens, or
 * without one the longest answer its target may give). Near a budget's limit, where the room
 * left cannot hold that, it reserves all the room and has its answer cut to
 * fit, so neither it nor a call alongside takes the budget past its limit by
 * more than a prompt's estimate.
 */

afterEach(() => vi.restoreAllMocks());

const NONE = { daily_tokens: null, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null };
const NOW = Date.parse("2026-11-25T10:00:00Z");

/** A promise held shut until `open` is called: an upstream's answer kept back while its call is in flight. */
function latch(): { opened: Promise<void>; open: () => void } {
  let open: () => void = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

const OPENAI = "openai.test";

/** OpenAI answering 9 + 100 tokens once `answer` opens: the calls that arrived are counted. */
function gatedOpenAi(): { arrived: number; answer: ReturnType<typeof latch> } {
  const upstream = { arrived: 0, answer: latch() };
  vi.spyOn(globalThis, "fetch").mockImplementation(
    fakeUpstreams({
      [OPENAI]: async () => {
        upstream.arrived++;
        await upstream.answer.opened;
        return openAiCompletion("done", { prompt_tokens: 9, completion_tokens: 100 });
      },
    }).impl,
  );
  return upstream;
}

function inLimiter(body: (book: BudgetBook) => void): Promise<void> {
  const stub = env.WORKSPACE_LIMITER.getByName(`near-limit:${crypto.randomUUID()}`);
  return runInDurableObject(stub, (_instance, state) => body(new BudgetBook(state.storage)));
}

describe("BudgetBook near a limit", () => {
  it("reserves all the room for a call the room cannot hold whole, and tells it so", () =>
    inLimiter((book) => {
      const limits = { ...NONE, daily_tokens: 10_000, daily_cost_usd: 1 };
      const call = { tokens: 4_000, costUsd: 0.1 };
      expect(book.reserve({ chargeKey: "far", limits, ...call, nowMs: NOW })).toEqual({
        ok: true,
        lease: null,
      });
      book.settle({ chargeKey: "far", limits, tokens: 7_000, costUsd: 0.02, nowMs: NOW });
      // 3,000 tokens left, less than the call may spend: all of it is this call's.
      expect(book.reserve({ chargeKey: "near", limits, ...call, nowMs: NOW })).toEqual({
        ok: true,
        lease: null,
        nearLimit: {
          tokens: 3_000,
          costUsd: 0.98,
          periods: { tokens: "daily", costUsd: "daily" },
          reserved: { tokens: 0, costUsd: 0 },
        },
      });
      expect(book.status(NOW).daily).toMatchObject({ reserved_tokens: 3_000, reserved_cost_usd: 0.1 });
      // A call alongside finds nothing left until the first settles: the budget is not spent but held, so it is
      // told to come back in seconds, not when the day ends.
      expect(book.reserve({ chargeKey: "beside", limits, tokens: 10, costUsd: 0, nowMs: NOW })).toEqual({
        ok: false,
        period: "daily",
        metric: "tokens",
        limit: 10_000,
        used: 10_000,
        held: { spent: 7_000, reserved: 3_000 },
        // Of both kinds: what a call lacks may be the dollars, which the limiter does not name.
        room: {
          tokens: 0,
          costUsd: 0.88,
          periods: { tokens: "daily", costUsd: "daily" },
          reserved: { tokens: 3_000, costUsd: 0.1 },
        },
        retryAfterMs: 5_000,
      });
      book.settle({ chargeKey: "near", limits, tokens: 500, costUsd: 0.001, nowMs: NOW });
      expect(book.reserve({ chargeKey: "after", limits, ...call, nowMs: NOW })).toMatchObject({
        ok: true,
        nearLimit: { tokens: 2_500 },
      });
    }));

  it("reserves only what a call cut near the limit may spend, where it says (ifCut) and the room holds it", () =>
    inLimiter((book) => {
      const limits = { ...NONE, daily_tokens: 10_000 };
      // A call without max_tokens: it may spend 32,777 tokens, or 4,105 once its answer is cut.
      const call = { limits, tokens: 32_777, costUsd: 0, ifCut: { tokens: 4_105, costUsd: 0 }, nowMs: NOW };
      expect(book.reserve({ chargeKey: "first", ...call })).toEqual({
        ok: true,
        lease: null,
        nearLimit: { tokens: 10_000, costUsd: null, periods: { tokens: "daily" }, reserved: { tokens: 0 } },
      });
      expect(book.status(NOW).daily).toMatchObject({ reserved_tokens: 4_105 });
      // The room it leaves is a second call's, then what is left a third's; only a fourth waits. Each is told
      // what the calls before it hold: room that comes back as they settle.
      expect(book.reserve({ chargeKey: "second", ...call })).toMatchObject({
        ok: true,
        nearLimit: { tokens: 5_895, reserved: { tokens: 4_105 } },
      });
      expect(book.reserve({ chargeKey: "third", ...call })).toMatchObject({
        ok: true,
        nearLimit: { tokens: 1_790, reserved: { tokens: 8_210 } },
      });
      expect(book.status(NOW).daily).toMatchObject({ reserved_tokens: 10_000 });
      expect(book.reserve({ chargeKey: "fourth", ...call })).toMatchObject({ ok: false, held: { reserved: 10_000 } });
    }));

  it("lends an isolate budget only with room for 20 calls at the most each may spend", () =>
    inLimiter((book) => {
      const limits = { ...NONE, daily_tokens: 600_000 };
      const call = { limits, costUsd: 0, leaseKey: "lease:1", nowMs: NOW };
      // A call without max_tokens may spend 32,768 tokens of answer: 600,000 holds 18 of those, no lease.
      expect(book.lend({ ...call, tokens: 32_778 })).toBeNull();
      expect(book.lend({ ...call, tokens: 1_034 })).toMatchObject({ key: "lease:1" });
    }));
});

describe("the router near a limit", () => {
  // "Refactor the parser." is about 9 tokens with its framing (src/llm/tokens.ts).
  const messages = [{ role: "user" as const, content: "Refactor the parser." }];

  async function setup(daily_tokens: number) {
    const workspace = await workspaceWith(
      { strategy: "fallback", chain: [{ provider: "openai", model: "gpt-4o-mini" }] },
      { ...NONE, daily_tokens },
    );
    const asked: (number | undefined)[] = [];
    vi.spyOn(globalThis, "fetch").mockImplementation(
      fakeUpstreams({
        [OPENAI]: async (request) => {
          const body = (await request.json()) as { max_completion_tokens?: number };
          asked.push(body.max_completion_tokens);
          return openAiCompletion("done", { prompt_tokens: 9, completion_tokens: 141 });
        },
      }).impl,
    );
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const chat = (chargeKey: string, extra: { max_tokens?: number } = {}) =>
      router.chat({ messages, ...extra }, { workspaceId: workspace.id, chargeKey });
    return { asked, chat };
  }

  it("cuts the answer of a call without max_tokens to the room left, and keeps a smaller max_tokens", async () => {
    const { asked, chat } = await setup(400);
    // A 400-token day cannot hold a call's ceiling: even the first answer is cut to 400 − 9 for the prompt.
    await chat("first");
    // 250 tokens left: the next answer may take 250 − 9.
    await chat("second");
    // 100 left: a max_tokens of 50 fits and is kept.
    await chat("third", { max_tokens: 50 });
    expect(asked).toEqual([391, 241, 50]);
  });

  it("holds for a call cut near the limit only what its cut answer may spend, so calls alongside share the rest", async () => {
    // 10,000 tokens a day: less than a gpt-4o-mini call without max_tokens may spend (16,393), so each is cut,
    // to 4,096 tokens of answer at most, and holds its prompt and that much; the third gets what is left.
    const workspace = await workspaceWith(
      { strategy: "fallback", chain: [{ provider: "openai", model: "gpt-4o-mini" }] },
      { ...NONE, daily_tokens: 10_000 },
    );
    const asked: (number | undefined)[] = [];
    const answer = latch();
    vi.spyOn(globalThis, "fetch").mockImplementation(
      fakeUpstreams({
        [OPENAI]: async (request) => {
          asked.push(((await request.json()) as { max_completion_tokens?: number }).max_completion_tokens);
          await answer.opened;
          return openAiCompletion("done", { prompt_tokens: 9, completion_tokens: 141 });
        },
      }).impl,
    );
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const chat = (chargeKey: string) => router.chat({ messages }, { workspaceId: workspace.id, chargeKey });
    const inFlight = [chat("first"), chat("second"), chat("third")];
    await vi.waitFor(() => expect(asked).toHaveLength(3));
    expect(asked).toEqual([4_096, 4_096, 10_000 - 2 * 4_105 - 9]);
    const limiter = env.WORKSPACE_LIMITER.getByName(workspace.id);
    expect((await limiter.budgetStatus()).daily.reserved_tokens).toBe(10_000);
    // The fourth finds all the room held by calls in flight: a task is tried again in seconds, not failed.
    const beside = await chat("beside").catch((error: unknown) => error);
    expect(beside).toBeInstanceOf(BudgetExhaustedError);
    expect(beside).toMatchObject({ held: true, retryable: true, retryAfterSeconds: 5, retryAfterMs: 5_000 });
    expect((beside as Error).message).toContain(
      "held by calls in flight or leases not yet given back (0 of 10000 tokens spent, 10000 reserved)",
    );
    answer.open();
    await Promise.all(inFlight);
    const status = (await limiter.budgetStatus()).daily;
    expect(status).toMatchObject({ tokens: 3 * 150, reserved_tokens: 0 });
  });

  it("refuses a call beside a spent budget until the period resets, even while calls hold what is left", () =>
    inLimiter((book) => {
      const limits = { ...NONE, daily_tokens: 10_000, daily_cost_usd: 1 };
      book.settle({ chargeKey: "spent", limits, tokens: 1_000, costUsd: 0.5, nowMs: NOW });
      // The day's tokens left are all held by this call; then the day's dollars are spent by another.
      book.reserve({ chargeKey: "near", limits, tokens: 40_000, costUsd: 0.1, nowMs: NOW });
      book.settle({ chargeKey: "more", limits, tokens: 0, costUsd: 0.5, nowMs: NOW });
      const refusal = book.reserve({ chargeKey: "beside", limits, tokens: 10, costUsd: 0, nowMs: NOW });
      // What was spent, not what the call near the limit holds besides ($0.10): the refusal's reason.
      expect(refusal).toMatchObject({ ok: false, period: "daily", metric: "cost_usd", limit: 1, used: 1 });
      expect((refusal as { retryAfterMs: number }).retryAfterMs).toBeGreaterThan(60_000);
      expect(refusal).not.toHaveProperty("held");
    }));

  it("keeps calls made at once within the budget: each holds the most it may spend, so the last are cut or wait", async () => {
    const workspace = await workspaceWith(
      { strategy: "fallback", chain: [{ provider: "openai", model: "gpt-4o-mini" }] },
      { ...NONE, daily_tokens: 100_000 },
    );
    // Every answer as long as it may be (gpt-4o-mini's 16,384 tokens unless cut), all held until the last call got in.
    let arrivals = 0;
    const allIn = latch();
    vi.spyOn(globalThis, "fetch").mockImplementation(
      fakeUpstreams({
        [OPENAI]: async (request) => {
          const body = (await request.json()) as { max_completion_tokens?: number };
          if (++arrivals === 1) setTimeout(allIn.open, 500);
          await allIn.opened;
          return openAiCompletion("long", {
            prompt_tokens: 9,
            completion_tokens: body.max_completion_tokens ?? 16_384,
          });
        },
      }).impl,
    );
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const outcomes = await Promise.allSettled(
      Array.from({ length: 8 }, (_, index) =>
        router.chat({ messages }, { workspaceId: workspace.id, chargeKey: `at-once:${index}` }),
      ),
    );
    const refused = outcomes.filter((outcome) => outcome.status === "rejected");
    for (const outcome of refused) expect(outcome.reason).toMatchObject({ kind: "budget_exhausted", held: true });
    // Six calls fit whole (16,393 tokens each at most); the seventh is cut to what is left; the eighth waits.
    expect(outcomes.length - refused.length).toBe(7);
    const status = await env.WORKSPACE_LIMITER.getByName(workspace.id).budgetStatus();
    expect(status.daily.tokens).toBe(100_000);
    expect(status.daily.reserved_tokens).toBe(0);
  });

  it("holds only the default answer length of a provider that sets one (Anthropic's 4,096 tokens)", async () => {
    const workspace = await workspaceWith(
      { strategy: "fallback", chain: [{ provider: "anthropic", model: "claude-3-5-haiku-latest" }] },
      { ...NONE, daily_tokens: 20_000 },
    );
    const firstAnswer = latch();
    const sent: number[] = [];
    vi.spyOn(globalThis, "fetch").mockImplementation(
      fakeUpstreams({
        "anthropic.test": async (request, call) => {
          sent.push(((await request.json()) as { max_tokens: number }).max_tokens);
          if (call === 1) await firstAnswer.opened;
          return anthropicMessage("done", { input_tokens: 9, output_tokens: 100 });
        },
      }).impl,
    );
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const chat = (chargeKey: string) => router.chat({ messages }, { workspaceId: workspace.id, chargeKey });
    const first = chat("anthropic-first");
    await vi.waitFor(() => expect(sent).toHaveLength(1));
    // The first holds its prompt and 4,096 tokens, not a 32,768-token answer it cannot get: room is left beside it.
    const status = await env.WORKSPACE_LIMITER.getByName(workspace.id).budgetStatus();
    expect(status.daily.reserved_tokens).toBe(9 + 4_096);
    await expect(chat("anthropic-beside")).resolves.toMatchObject({ provider: "anthropic" });
    firstAnswer.open();
    await first;
    expect(sent).toEqual([4_096, 4_096]);
  });

  it("holds the longest answer of the call's model: gpt-4o-mini's 16,384 tokens, o3's 100,000, Workers AI's 256", async () => {
    const upstream = gatedOpenAi();
    // Workers AI through its binding's interface (the binding itself needs a Cloudflare account).
    const AI = {
      async run() {
        upstream.arrived++;
        await upstream.answer.opened;
        return { response: "done", usage: { prompt_tokens: 9, completion_tokens: 100 } };
      },
    };
    const router = createLlmRouter(llmConfig({ AI }), { logger: quietLogger });
    // What the call in flight holds beside its 9-token prompt, in a budget with room for ten such calls
    // (too little for a lease, which would be held beside it) if it holds `answerTokens`.
    const heldFor = async (provider: string, model: string, answerTokens: number) => {
      const workspace = await workspaceWith(
        { strategy: "fallback", chain: [{ provider, model }] },
        { ...NONE, daily_tokens: 10 * (9 + answerTokens) },
      );
      const before = upstream.arrived;
      const call = router.chat({ messages }, { workspaceId: workspace.id, chargeKey: `${provider}:${model}` });
      await vi.waitFor(() => expect(upstream.arrived).toBe(before + 1));
      const status = await env.WORKSPACE_LIMITER.getByName(workspace.id).budgetStatus();
      upstream.answer.open();
      await call;
      upstream.answer = latch();
      return status.daily.reserved_tokens - 9;
    };
    expect(await heldFor("openai", "gpt-4o-mini", 16_384)).toBe(16_384);
    expect(await heldFor("openai", "o3", 100_000)).toBe(100_000);
    expect(await heldFor("workers-ai", "@cf/meta/llama-3.1-8b-instruct", 256)).toBe(256);
    // A model the table does not know: the 32,768 tokens assumed of any.
    expect(await heldFor("openai", "gpt-next-preview", 32_768)).toBe(32_768);
  });

  it("holds no more than the model may answer for a max_tokens above its ceiling, so calls alongside are not refused", async () => {
    const upstream = gatedOpenAi();
    // Room for three gpt-4o-mini calls at their longest (16,384 tokens of answer), not for one of 100,000.
    const workspace = await workspaceWith(
      { strategy: "fallback", chain: [{ provider: "openai", model: "gpt-4o-mini" }] },
      { ...NONE, daily_tokens: 3 * (9 + 16_384) },
    );
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    // Sent as 16,384 (the router asks no model for more than it answers), so that is the most each may spend.
    const call = (chargeKey: string) =>
      router.chat({ messages, max_tokens: 100_000 }, { workspaceId: workspace.id, chargeKey });
    const first = call("first");
    await vi.waitFor(() => expect(upstream.arrived).toBe(1));
    expect((await env.WORKSPACE_LIMITER.getByName(workspace.id).budgetStatus()).daily.reserved_tokens).toBe(9 + 16_384);
    const others = [call("second"), call("third")];
    await vi.waitFor(() => expect(upstream.arrived).toBe(3));
    upstream.answer.open();
    for (const result of await Promise.all([first, ...others])) expect(result.usage.total_tokens).toBe(109);
  });

  it("leaves the answer uncut far from the limit", async () => {
    const { asked, chat } = await setup(1_000_000);
    await chat("first");
    await chat("second");
    expect(asked).toEqual([undefined, undefined]);
  });
});

describe("POST /api/v1/llm/chat/completions beside a call that holds the room left", () => {
  it("answers 429 worth a retry in seconds (budget_held), not a spent budget until tomorrow", async () => {
    // 4,000 tokens a day cannot hold even a call cut to 4,096 tokens of answer: the first call holds all of it
    // for its 1.5 s.
    const workspace = await workspaceWith(
      { strategy: "fallback", chain: [{ provider: "simulated", model: "sim-1?latency_ms=1500" }] },
      { ...NONE, daily_tokens: 4_000 },
    );
    const post = () =>
      fetcher(`${BASE}/api/v1/llm/chat/completions`, {
        method: "POST",
        headers: { ...workspace.headers, "Content-Type": "application/json" },
        body: JSON.stringify({ model: "auto", messages: [{ role: "user", content: "Refactor the parser." }] }),
      });
    const first = post();
    await new Promise((resolve) => setTimeout(resolve, 500));
    const beside = await post();
    expect(beside.status).toBe(429);
    expect(beside.headers.get("Retry-After")).toBe("5");
    // OpenAI's SDKs retry it after Retry-After, as any rate limit.
    expect(beside.headers.get("X-Should-Retry")).toBeNull();
    expect(await beside.json()).toMatchObject({
      reason: "budget_held",
      period: "daily",
      metric: "tokens",
      retryable: true,
      retry_after_seconds: 5,
      error: { type: "rate_limit_error", code: "rate_limit_exceeded" },
    });
    // Held is not spent: the budget is not exhausted, and a task submitted meanwhile is queued, not refused
    // until the day ends (its calls wait as this one is told to).
    const status = await fetcher(`${BASE}/api/v1/budgets`, { headers: workspace.headers });
    expect(await status.json()).toMatchObject({ exhausted: false, exhausted_by: [], daily: { tokens: 0 } });
    const task = await fetcher(`${BASE}/api/v1/tasks`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ type: "code_generation", title: "Add a parser", description: "Write it." }),
    });
    expect(task.status).toBe(202);
    expect((await first).status).toBe(200);
    // Once the first call settles, what it did not spend is free again.
    expect((await post()).status).toBe(200);
  });
});
