import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { BudgetBook } from "../../src/limits/budgets.ts";

/**
 * A dollar budget whose room left is all held by a call cut to fit it: a call alongside is refused as held
 * (429 `budget_held`, retryable in seconds), not let through with no room to spend, whatever the float sum of
 * what is spent and what is held lands on.
 */

const NONE = { daily_tokens: null, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null };
const NOW = Date.parse("2026-11-25T10:00:00Z");

function inLimiter(body: (book: BudgetBook) => void): Promise<void> {
  const stub = env.WORKSPACE_LIMITER.getByName(`budget-held-rounding:${crypto.randomUUID()}`);
  return runInDurableObject(stub, (_instance, state) => body(new BudgetBook(state.storage)));
}

describe("a dollar budget whose room is all held", () => {
  it("refuses a call alongside as held, though spent plus held adds up to a hair under the limit", () =>
    inLimiter((book) => {
      const limits = { ...NONE, daily_cost_usd: 0.8 };
      // Spent so far: $0.11359234 of the $0.80 day. 0.11359234 + 0.68640766 is 0.7999999999999999 in floats.
      book.settle({ chargeKey: "spent", limits, tokens: 1_000, costUsd: 0.11359234, nowMs: NOW });
      // A call that may spend more than is left is cut to fit: it holds all the room, $0.68640766.
      const cut = book.reserve({ chargeKey: "cut", limits, tokens: 20_000, costUsd: 1, nowMs: NOW });
      expect(cut).toMatchObject({ ok: true, nearLimit: { costUsd: 0.68640766 } });
      expect(book.status(NOW).daily).toMatchObject({ cost_usd: 0.11359234, reserved_cost_usd: 0.68640766 });

      // Nothing is left: the next call must wait for the held room, not run with none (its answer cut to a token,
      // and its prompt spent past the limit).
      const next = book.reserve({ chargeKey: "next", limits, tokens: 500, costUsd: 0.001, nowMs: NOW });
      expect(next).toMatchObject({
        ok: false,
        period: "daily",
        metric: "cost_usd",
        limit: 0.8,
        used: 0.8,
        held: { spent: 0.11359234, reserved: 0.68640766 },
        retryAfterMs: 5_000,
      });
      expect(book.status(NOW).daily.reserved_cost_usd).toBe(0.68640766);
    }));

  it("counts a budget set to more decimals than dollars are counted in as spent once no room is left, not as room for a call", () =>
    inLimiter((book) => {
      // Dollars are counted to 1e-8: $0.12345678 spent of a $0.123456784 day leaves no room (it rounds to 0).
      const limits = { ...NONE, daily_cost_usd: 0.123456784 };
      book.settle({ chargeKey: "spent", limits, tokens: 1_000, costUsd: 0.12345678, nowMs: NOW });
      const next = book.reserve({ chargeKey: "next", limits, tokens: 500, costUsd: 0.001, nowMs: NOW });
      expect(next).toEqual({
        ok: false,
        period: "daily",
        metric: "cost_usd",
        limit: 0.123456784,
        used: 0.12345678,
        retryAfterMs: Date.parse("2026-11-26T00:00:00Z") - NOW,
      });
    }));
});
