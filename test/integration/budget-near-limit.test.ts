import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { BudgetBook } from "../../src/limits/budgets.ts";
import { BudgetExhaustedError, createLlmRouter } from "../../src/llm/index.ts";
import {
  BASE,
  fakeUpstreams,
  fetcher,
  llmConfig,
  openAiCompletion,
  quietLogger,
  workspaceWith,
} from "../support/llm.ts";

/**
 * Near a budget's limit, a call that could spend more than the room left
 * (its prompt and its longest answer) reserves all the room and has its
 * answer cut to fit, so neither it nor a call alongside takes the budget past
 * its limit by more than a prompt. Far from the limit, calls reserve their
 * estimate as before.
 */

afterEach(() => vi.restoreAllMocks());

const NONE = { daily_tokens: null, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null };
const NOW = Date.parse("2026-11-25T10:00:00Z");

function inLimiter(body: (book: BudgetBook) => void): Promise<void> {
  const stub = env.WORKSPACE_LIMITER.getByName(`near-limit:${crypto.randomUUID()}`);
  return runInDurableObject(stub, (_instance, state) => body(new BudgetBook(state.storage)));
}

describe("BudgetBook near a limit", () => {
  it("reserves all the room for a call whose ceiling the budget cannot hold, and the estimate otherwise", () =>
    inLimiter((book) => {
      const limits = { ...NONE, daily_tokens: 10_000, daily_cost_usd: 1 };
      const ceiling = { tokens: 4_000, costUsd: 0.1 };
      expect(book.reserve({ chargeKey: "far", limits, tokens: 1_000, costUsd: 0.01, ceiling, nowMs: NOW })).toEqual({
        ok: true,
        lease: null,
      });
      book.settle({ chargeKey: "far", limits, tokens: 7_000, costUsd: 0.02, nowMs: NOW });
      // 3,000 tokens left, less than the ceiling: all of it is this call's.
      expect(book.reserve({ chargeKey: "near", limits, tokens: 1_000, costUsd: 0.01, ceiling, nowMs: NOW })).toEqual({
        ok: true,
        lease: null,
        nearLimit: { tokens: 3_000, costUsd: 0.98 },
      });
      expect(book.status(NOW).daily).toMatchObject({ reserved_tokens: 3_000, reserved_cost_usd: 0.1 });
      // A call alongside finds nothing left until the first settles: the budget is not spent but held, so it is
      // told to come back in seconds, not when the day ends.
      expect(book.reserve({ chargeKey: "beside", limits, tokens: 10, costUsd: 0, ceiling, nowMs: NOW })).toEqual({
        ok: false,
        period: "daily",
        metric: "tokens",
        limit: 10_000,
        used: 10_000,
        held: { spent: 7_000, reserved: 3_000 },
        retryAfterMs: 5_000,
      });
      book.settle({ chargeKey: "near", limits, tokens: 500, costUsd: 0.001, nowMs: NOW });
      expect(book.reserve({ chargeKey: "after", limits, tokens: 10, costUsd: 0, ceiling, nowMs: NOW })).toMatchObject({
        ok: true,
        nearLimit: { tokens: 2_500 },
      });
    }));

  it("lends an isolate budget only with room for a few calls at their ceiling, as well as many at their estimate", () =>
    inLimiter((book) => {
      const limits = { ...NONE, daily_tokens: 100_000 };
      const call = { limits, tokens: 1_000, costUsd: 0, leaseKey: "lease:1", nowMs: NOW };
      // Room for 100 estimates but only 3 ceilings of 30,000 tokens: no lease.
      expect(book.lend({ ...call, ceiling: { tokens: 30_000, costUsd: 0 } })).toBeNull();
      expect(book.lend({ ...call, ceiling: { tokens: 20_000, costUsd: 0 } })).toMatchObject({ key: "lease:1" });
    }));
});

describe("the router near a limit", () => {
  const OPENAI = "openai.test";
  // "Refactor the parser." is about 9 tokens with its framing (src/llm/tokens.ts).
  const messages = [{ role: "user" as const, content: "Refactor the parser." }];

  async function setup(daily_tokens: number) {
    const workspace = await workspaceWith(
      { strategy: "fallback", chain: [{ provider: "openai", model: "gpt-4o-mini" }] },
      { ...NONE, daily_tokens },
    );
    const asked: (number | undefined)[] = [];
    let release: () => void = () => {};
    let holdNext = false;
    vi.spyOn(globalThis, "fetch").mockImplementation(
      fakeUpstreams({
        [OPENAI]: async (request) => {
          const body = (await request.json()) as { max_completion_tokens?: number };
          asked.push(body.max_completion_tokens);
          if (holdNext) {
            holdNext = false;
            await new Promise<void>((resolve) => {
              release = resolve;
            });
          }
          return openAiCompletion("done", { prompt_tokens: 9, completion_tokens: 141 });
        },
      }).impl,
    );
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const chat = (chargeKey: string, extra: { max_tokens?: number } = {}) =>
      router.chat({ messages, ...extra }, { workspaceId: workspace.id, chargeKey });
    return { asked, chat, holdNextAnswer: () => (holdNext = true), release: () => release() };
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

  it("holds the room for the call that was cut, so a call alongside is refused rather than going over", async () => {
    // 5,000 tokens a day: room for several estimates (1,033 tokens without max_tokens), not for a ceiling.
    const { asked, chat, holdNextAnswer, release } = await setup(5_000);
    await chat("first");
    holdNextAnswer();
    const second = chat("second");
    await vi.waitFor(() => expect(asked).toHaveLength(2));
    const beside = await chat("beside", { max_tokens: 10 }).catch((error: unknown) => error);
    expect(beside).toBeInstanceOf(BudgetExhaustedError);
    // Not spent, only held until the call in flight settles: a task is tried again in seconds, not failed.
    expect(beside).toMatchObject({ held: true, retryable: true, retryAfterSeconds: 5, retryAfterMs: 5_000 });
    expect((beside as Error).message).toContain("held by calls in flight (150 of 5000 tokens spent, 4850 reserved)");
    release();
    await second;
  });

  it("refuses a call beside a spent budget until the period resets, even while calls hold what is left", () =>
    inLimiter((book) => {
      const limits = { ...NONE, daily_tokens: 10_000, daily_cost_usd: 1 };
      const ceiling = { tokens: 40_000, costUsd: 0.1 };
      book.settle({ chargeKey: "spent", limits, tokens: 1_000, costUsd: 0.5, nowMs: NOW });
      // The day's tokens left are all held by this call; then the day's dollars are spent by another.
      book.reserve({ chargeKey: "near", limits, tokens: 100, costUsd: 0.01, ceiling, nowMs: NOW });
      book.settle({ chargeKey: "more", limits, tokens: 0, costUsd: 0.5, nowMs: NOW });
      const refusal = book.reserve({ chargeKey: "beside", limits, tokens: 10, costUsd: 0, ceiling, nowMs: NOW });
      expect(refusal).toMatchObject({ ok: false, period: "daily", metric: "cost_usd" });
      expect((refusal as { retryAfterMs: number }).retryAfterMs).toBeGreaterThan(60_000);
      expect(refusal).not.toHaveProperty("held");
    }));

  it("leaves the answer uncut far from the limit", async () => {
    const { asked, chat } = await setup(1_000_000);
    await chat("first");
    await chat("second");
    expect(asked).toEqual([undefined, undefined]);
  });
});

describe("POST /api/v1/llm/chat/completions beside a call that holds the room left", () => {
  it("answers 429 worth a retry in seconds (budget_held), not a spent budget until tomorrow", async () => {
    // 5,000 tokens a day cannot hold a call's ceiling: the first call holds all of it for its 1.5 s.
    const workspace = await workspaceWith(
      { strategy: "fallback", chain: [{ provider: "simulated", model: "sim-1?latency_ms=1500" }] },
      { ...NONE, daily_tokens: 5_000 },
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
    expect((await first).status).toBe(200);
    // Once the first call settles, what it did not spend is free again.
    expect((await post()).status).toBe(200);
  });
});
