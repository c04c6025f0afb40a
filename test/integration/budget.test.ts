import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import type { ApiError } from "../../src/lib/problem.ts";
import { BudgetBook } from "../../src/limits/budgets.ts";
import { LimiterCore } from "../../src/limits/limiter-core.ts";
import { llmErrorToApiError } from "../../src/llm/http-errors.ts";
import { BudgetExhaustedError, createLlmRouter } from "../../src/llm/index.ts";
import {
  BASE,
  budgetUsed,
  eventsOf,
  fetcher,
  limiterOutboxDrained,
  llmConfig,
  quietLogger,
  workspaceWith,
} from "../support/llm.ts";
import { createTestKey } from "../support/workspaces.ts";

/** Budgets: the WorkspaceLimiter's counters, the router's reserve/settle, the HTTP routes. */

const NONE = { daily_tokens: null, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null };

function inLimiter(body: (book: BudgetBook, sql: SqlStorage) => void): Promise<void> {
  const stub = env.WORKSPACE_LIMITER.getByName(`budget-test:${crypto.randomUUID()}`);
  return runInDurableObject(stub, (_instance, state) => body(new BudgetBook(state.storage), state.storage.sql));
}

const NOW = Date.parse("2026-11-25T10:00:00Z");

describe("BudgetBook", () => {
  it("reserves, settles once per charge key, and frees what a call did not use", () =>
    inLimiter((book) => {
      const limits = { ...NONE, daily_tokens: 1_000 };
      expect(book.reserve({ chargeKey: "a", limits, tokens: 900, costUsd: 0, nowMs: NOW })).toEqual({
        ok: true,
        lease: null,
      });
      expect(book.status(NOW).daily).toMatchObject({ tokens: 0, reserved_tokens: 900 });
      book.settle({ chargeKey: "a", limits, tokens: 100, costUsd: 0.5, nowMs: NOW });
      expect(book.status(NOW).daily).toMatchObject({ tokens: 100, reserved_tokens: 0, cost_usd: 0.5 });
      // A retried consumer settling the same charge again changes nothing.
      expect(book.settle({ chargeKey: "a", limits, tokens: 100, costUsd: 0.5, nowMs: NOW })).toEqual({
        duplicate: true,
        crossings: [],
      });
      expect(book.status(NOW).monthly).toMatchObject({ period: "2026-11", tokens: 100 });
    }));

  it("counts a call that spans midnight on the day it ends, as its usage row is dated, and frees its hold on the day it began", () =>
    inLimiter((book) => {
      const limits = { ...NONE, daily_tokens: 1_000, monthly_tokens: 10_000 };
      const lastSecond = Date.parse("2026-11-30T23:59:59Z");
      const nextMonth = Date.parse("2026-12-01T00:00:02Z");
      book.reserve({ chargeKey: "late", limits, tokens: 500, costUsd: 0, nowMs: lastSecond });
      book.settle({ chargeKey: "late", limits, tokens: 120, costUsd: 0.25, nowMs: nextMonth });
      expect(book.status(lastSecond)).toMatchObject({
        daily: { period: "2026-11-30", tokens: 0, reserved_tokens: 0, cost_usd: 0 },
        monthly: { period: "2026-11", tokens: 0, reserved_tokens: 0 },
      });
      expect(book.status(nextMonth)).toMatchObject({
        daily: { period: "2026-12-01", tokens: 120, reserved_tokens: 0, cost_usd: 0.25 },
        monthly: { period: "2026-12", tokens: 120, reserved_tokens: 0 },
      });
    }));

  it("releases a reservation its call never settled after 30 minutes (at the next sweep), and still charges the call if it ends later", () =>
    inLimiter((book) => {
      const limits = { ...NONE, daily_tokens: 1_000 };
      // A call whose client went away: the runtime cancelled its request before it could settle or release.
      book.reserve({ chargeKey: "abandoned", limits, tokens: 1_000, costUsd: 0.2, nowMs: NOW });
      const stillHeld = NOW + 30 * 60_000 - 1;
      expect(book.reserve({ chargeKey: "next", limits, tokens: 10, costUsd: 0, nowMs: stillHeld })).toMatchObject({
        ok: false,
        used: 1_000,
      });
      // Sweeps run at most once a minute.
      const released = NOW + 31 * 60_000;
      expect(book.reserve({ chargeKey: "next", limits, tokens: 10, costUsd: 0, nowMs: released })).toEqual({
        ok: true,
        lease: null,
      });
      expect(book.status(released).daily).toMatchObject({ tokens: 0, reserved_tokens: 10, reserved_cost_usd: 0 });
      expect(book.status(released).monthly).toMatchObject({ reserved_tokens: 10, reserved_cost_usd: 0 });
      // The abandoned call did end after all: its actual use counts, and nothing is released twice.
      book.settle({ chargeKey: "abandoned", limits, tokens: 300, costUsd: 0.05, nowMs: released });
      expect(book.status(released).daily).toMatchObject({ tokens: 300, cost_usd: 0.05, reserved_tokens: 10 });
    }));

  it("releases reservations made before they could expire at the first sweep after the upgrade", () =>
    runInDurableObject(env.WORKSPACE_LIMITER.getByName(`budget-test:${crypto.randomUUID()}`), (_instance, state) => {
      const { storage } = state;
      const limits = { ...NONE, daily_tokens: 1_000 };
      new BudgetBook(storage).reserve({ chargeKey: "before", limits, tokens: 1_000, costUsd: 0, nowMs: NOW });
      // Back to the schema of step 4, which had no expiry (nor step 6's alert reporters, nor step 7's outbox), and up again.
      storage.sql.exec("DROP TABLE limiter_event_outbox");
      storage.sql.exec("DROP INDEX limiter_budget_alerts_reported_by");
      storage.sql.exec("ALTER TABLE limiter_budget_alerts DROP COLUMN reported_by");
      storage.sql.exec("ALTER TABLE limiter_budget_alerts DROP COLUMN crossing");
      storage.sql.exec("DROP INDEX limiter_budget_charges_reserved_until");
      storage.sql.exec("ALTER TABLE limiter_budget_charges DROP COLUMN reserved_until_ms");
      storage.sql.exec("UPDATE limiter_meta SET value = 4 WHERE key = 'schema_version'");
      new LimiterCore(storage);
      const book = new BudgetBook(storage);
      expect(book.status(NOW + 1_000).daily).toMatchObject({ reserved_tokens: 0 });
      expect(book.reserve({ chargeKey: "after", limits, tokens: 10, costUsd: 0, nowMs: NOW + 1_000 })).toEqual({
        ok: true,
        lease: null,
      });
    }));

  it("counts calls of a workspace without budgets once per charge key, with short-lived keys", () =>
    runInDurableObject(env.WORKSPACE_LIMITER.getByName(`budget-test:${crypto.randomUUID()}`), (_instance, state) => {
      const book = new BudgetBook(state.storage);
      book.countUnbudgeted(
        Array.from({ length: 50 }, (_, index) => ({ chargeKey: `call-${index}`, tokens: 120, costUsd: 0.001 })),
        NOW,
      );
      // A settlement sent again (and a new call with it, itself twice in the call) counts the new call once.
      book.countUnbudgeted(
        [
          { chargeKey: "call-7", tokens: 120, costUsd: 0.001 },
          { chargeKey: "call-50", tokens: 30, costUsd: 0.0005 },
          { chargeKey: "call-50", tokens: 30, costUsd: 0.0005 },
        ],
        NOW,
      );
      expect(book.status(NOW).daily).toMatchObject({ tokens: 6_030, cost_usd: 0.0505, reserved_tokens: 0 });
      expect(book.status(NOW).monthly).toMatchObject({ tokens: 6_030 });
      // Their keys are kept for two days, not the 40 of budgeted charges.
      const kept = state.storage.sql
        .exec<{ n: number; until: number }>(
          "SELECT count(*) AS n, max(expires_at_ms) AS until FROM limiter_budget_charges",
        )
        .one();
      expect(kept).toEqual({ n: 51, until: NOW + 2 * 86_400_000 });
      // Budgets set later start from these figures.
      const limits = { ...NONE, daily_tokens: 6_000 };
      expect(book.reserve({ chargeKey: "later", limits, tokens: 10, costUsd: 0, nowMs: NOW })).toMatchObject({
        ok: false,
        used: 6_030,
      });
    }));

  it("counts charges settled once by construction without keeping their keys", () =>
    runInDurableObject(env.WORKSPACE_LIMITER.getByName(`budget-test:${crypto.randomUUID()}`), (_instance, state) => {
      const book = new BudgetBook(state.storage);
      book.countUnbudgeted(
        [
          { chargeKey: "api:req_1:01A", tokens: 100, costUsd: 0.001, once: true },
          { chargeKey: "api:req_2:01B", tokens: 50, costUsd: 0.0005, once: true },
          { chargeKey: "run_1:1", tokens: 10, costUsd: 0.0001 },
        ],
        NOW,
      );
      // The task's key is kept (a retried consumer may settle it again), the endpoint's are not.
      book.countUnbudgeted([{ chargeKey: "run_1:1", tokens: 10, costUsd: 0.0001 }], NOW);
      expect(book.status(NOW).daily).toMatchObject({ tokens: 160, cost_usd: 0.0016 });
      const keys = state.storage.sql
        .exec<{ charge_key: string }>("SELECT charge_key FROM limiter_budget_charges ORDER BY charge_key")
        .toArray();
      expect(keys).toEqual([{ charge_key: "run_1:1" }]);
    }));

  it("refuses when a budget has nothing left, until the period resets", () =>
    inLimiter((book) => {
      const limits = { ...NONE, daily_cost_usd: 1 };
      book.settle({ chargeKey: "spent", limits, tokens: 10, costUsd: 1, nowMs: NOW });
      const refused = book.reserve({ chargeKey: "next", limits, tokens: 10, costUsd: 0.01, nowMs: NOW });
      expect(refused).toEqual({
        ok: false,
        period: "daily",
        metric: "cost_usd",
        limit: 1,
        used: 1,
        retryAfterMs: 14 * 3_600_000,
      });
      const tomorrow = Date.parse("2026-11-26T00:00:01Z");
      expect(book.reserve({ chargeKey: "next", limits, tokens: 10, costUsd: 0.01, nowMs: tomorrow })).toEqual({
        ok: true,
        lease: null,
      });
    }));

  it("refuses a call whose day and month are both spent until the month resets, naming the month's budget", () =>
    inLimiter((book) => {
      const limits = { ...NONE, daily_tokens: 100, monthly_tokens: 100 };
      book.settle({ chargeKey: "spent", limits, tokens: 100, costUsd: 0, nowMs: NOW });
      // Told to come back at midnight, a client would only meet the month's refusal then.
      expect(book.reserve({ chargeKey: "next", limits, tokens: 10, costUsd: 0, nowMs: NOW })).toEqual({
        ok: false,
        period: "monthly",
        metric: "tokens",
        limit: 100,
        used: 100,
        retryAfterMs: Date.parse("2026-12-01T00:00:00Z") - NOW,
      });
    }));

  it("reports 50, 80 and 100% once per period, including steps passed when a budget was lowered", () =>
    inLimiter((book) => {
      const limits = { ...NONE, daily_tokens: 100 };
      const steps = (crossings: { thresholdPercent: number }[]) => crossings.map((c) => c.thresholdPercent);
      expect(steps(book.settle({ chargeKey: "1", limits, tokens: 40, costUsd: 0, nowMs: NOW }).crossings)).toEqual([]);
      expect(steps(book.settle({ chargeKey: "2", limits, tokens: 45, costUsd: 0, nowMs: NOW }).crossings)).toEqual([
        50, 80,
      ]);
      expect(steps(book.settle({ chargeKey: "3", limits, tokens: 1, costUsd: 0, nowMs: NOW }).crossings)).toEqual([]);
      const full = book.settle({ chargeKey: "4", limits, tokens: 20, costUsd: 0, nowMs: NOW }).crossings;
      expect(full).toEqual([
        { period: "daily", metric: "tokens", thresholdPercent: 100, limit: 100, used: 106, percentage: 106 },
      ]);
      expect(steps(book.settle({ chargeKey: "5", limits, tokens: 20, costUsd: 0, nowMs: NOW }).crossings)).toEqual([]);
      const reachedAt = new Date(NOW).toISOString();
      expect(book.status(NOW).daily.thresholds_reached).toEqual(
        [50, 80, 100].map((threshold_percent) => ({
          metric: "tokens",
          threshold_percent,
          reached_at: reachedAt,
        })),
      );
      // A new day starts over.
      const nextDay = NOW + 86_400_000;
      expect(steps(book.settle({ chargeKey: "6", limits, tokens: 60, costUsd: 0, nowMs: nextDay }).crossings)).toEqual([
        50,
      ]);
      // The month's budget set later: every step already passed is reported once.
      const monthly = { ...limits, monthly_tokens: 150 };
      expect(
        book
          .settle({ chargeKey: "7", limits: monthly, tokens: 1, costUsd: 0, nowMs: nextDay })
          .crossings.map((c) => [c.period, c.thresholdPercent]),
      ).toEqual([
        ["monthly", 50],
        ["monthly", 80],
        ["monthly", 100],
      ]);
      const status = book.status(nextDay);
      expect(status.daily.thresholds_reached.map((alert) => alert.threshold_percent)).toEqual([50]);
      expect(status.monthly.thresholds_reached.map((alert) => alert.threshold_percent)).toEqual([50, 80, 100]);
    }));

  it("reports a cost threshold reached exactly, though the division lands a hair under it", () =>
    inLimiter((book) => {
      const events = { workspaceId: "ws_exact" };
      // Eight calls at $0.03405 of a $0.3405 day are 80% of it; 0.2724 / 0.3405 * 100 is 79.99999999999999.
      const limits = { ...NONE, daily_cost_usd: 0.3405 };
      const crossings = book.settle({ chargeKey: "eight", limits, tokens: 0, costUsd: 0.2724, nowMs: NOW }).crossings;
      expect(crossings.map((crossing) => [crossing.thresholdPercent, crossing.percentage])).toEqual([
        [50, 80],
        [80, 80],
      ]);
      // Set again as it was, the budget neither arms the 80% step again nor reports it twice.
      expect(book.review({ limits, events, nowMs: NOW }).crossings).toEqual([]);
      expect(book.status(NOW).daily.thresholds_reached.map((alert) => alert.threshold_percent)).toEqual([50, 80]);
    }));

  it("arms again the thresholds a budget set anew no longer reaches, so a raised budget alerts at 80 and 100% of itself", () =>
    inLimiter((book) => {
      const events = { workspaceId: "ws_rearm" };
      const steps = (crossings: { thresholdPercent: number }[]) => crossings.map((c) => c.thresholdPercent);
      const reached = (nowMs: number) => book.status(nowMs).daily.thresholds_reached.map((a) => a.threshold_percent);
      const tight = { ...NONE, daily_tokens: 100 };
      expect(
        steps(book.settle({ chargeKey: "1", limits: tight, tokens: 120, costUsd: 0, nowMs: NOW }).crossings),
      ).toEqual([50, 80, 100]);
      // Raised to 200: 120 is 60%, so 50% stays reported and 80 and 100% may come again.
      const raised = { ...NONE, daily_tokens: 200 };
      expect(book.review({ limits: raised, events, nowMs: NOW }).crossings).toEqual([]);
      expect(reached(NOW)).toEqual([50]);
      expect(
        steps(book.settle({ chargeKey: "2", limits: raised, tokens: 50, costUsd: 0, nowMs: NOW }).crossings),
      ).toEqual([80]);
      expect(
        steps(book.settle({ chargeKey: "3", limits: raised, tokens: 40, costUsd: 0, nowMs: NOW }).crossings),
      ).toEqual([100]);
      // Set again unchanged: nothing is armed again, nothing reported twice.
      expect(book.review({ limits: raised, events, nowMs: NOW }).crossings).toEqual([]);
      expect(reached(NOW)).toEqual([50, 80, 100]);
      // Removed, every threshold is armed again; a budget set later reports what the use already reaches, once.
      book.review({ limits: NONE, events, nowMs: NOW });
      expect(reached(NOW)).toEqual([]);
      expect(steps(book.review({ limits: { ...NONE, daily_tokens: 250 }, events, nowMs: NOW }).crossings)).toEqual([
        50, 80,
      ]);
    }));

  it("lends a lease with a reservation only while there is ample room, and holds it like one", () =>
    inLimiter((book) => {
      const limits = { ...NONE, daily_tokens: 100_000, monthly_cost_usd: 10 };
      const call = { limits, tokens: 100, costUsd: 0.01, nowMs: NOW };
      // At most 100 calls like this one, and at most a quarter of the room (24,975 tokens, 2.4975 USD).
      expect(book.reserve({ ...call, chargeKey: "a", leaseKey: "lease:1" })).toEqual({
        ok: true,
        lease: { key: "lease:1", tokens: 10_000, costUsd: 1 },
      });
      expect(book.status(NOW).daily).toMatchObject({ tokens: 0, reserved_tokens: 10_100 });
      // Calls charged against it draw it down, each key once.
      const charges = [
        { chargeKey: "b", tokens: 60, costUsd: 0.002 },
        { chargeKey: "c", tokens: 70, costUsd: 0.003 },
      ];
      book.settleLeased({ leaseKey: "lease:1", limits, charges, close: false, nowMs: NOW });
      book.settleLeased({ leaseKey: "lease:1", limits, charges: charges.slice(0, 1), close: false, nowMs: NOW });
      expect(book.status(NOW).daily).toMatchObject({ tokens: 130, reserved_tokens: 10_100 - 130 });
      expect(book.status(NOW).monthly).toMatchObject({ cost_usd: 0.005, reserved_cost_usd: 1.005 });
      // Closed, it gives back what it still holds; the call's own reservation stays until it settles.
      book.settleLeased({ leaseKey: "lease:1", limits, charges: [], close: true, nowMs: NOW });
      expect(book.status(NOW).daily).toMatchObject({ tokens: 130, reserved_tokens: 100 });
      expect(book.status(NOW).monthly).toMatchObject({ reserved_cost_usd: 0.01 });

      // Near the limit no lease is lent: 20 more calls like this one would not fit.
      const tight = { ...NONE, daily_tokens: 2_000 };
      expect(
        book.reserve({ limits: tight, tokens: 100, costUsd: 0, nowMs: NOW, chargeKey: "d", leaseKey: "lease:2" }),
      ).toEqual({ ok: true, lease: null });

      // The isolate says how many calls the lease should cover; the limiter caps that at 10,000 and by the room.
      const asked = (leaseCalls: number, chargeKey: string, dailyTokens: number) =>
        book.reserve({
          ...call,
          limits: { ...NONE, daily_tokens: dailyTokens },
          chargeKey,
          leaseKey: chargeKey,
          leaseCalls,
        });
      expect(asked(30, "lease:30", 10_000_000)).toMatchObject({ lease: { tokens: 3_000, costUsd: null } });
      expect(asked(1e9, "lease:max", 10_000_000)).toMatchObject({ lease: { tokens: 1_000_000 } });
      const before = book.status(NOW).daily;
      const roomAfterCall = 2_000_000 - before.tokens - before.reserved_tokens - 100;
      expect(asked(1e9, "lease:room", 2_000_000)).toMatchObject({ lease: { tokens: Math.floor(roomAfterCall / 4) } });
    }));

  it("keeps holding what a retired lease's calls in flight took from it past the sweep, and gives back the rest at once", () =>
    inLimiter((book) => {
      const limits = { ...NONE, daily_tokens: 1_000_000 };
      book.reserve({ chargeKey: "a", limits, tokens: 1_000, costUsd: 0, nowMs: NOW, leaseKey: "lease:busy" });
      book.settle({ chargeKey: "a", limits, tokens: 900, costUsd: 0, nowMs: NOW });
      expect(book.status(NOW).daily).toMatchObject({ reserved_tokens: 100_000 });
      // Its five seconds over, the isolate lends no more from it: three calls still run on it, holding 3,000 tokens.
      const retiredMs = NOW + 5_000;
      book.settleLeased({
        leaseKey: "lease:busy",
        limits,
        charges: [],
        close: false,
        keep: { tokens: 3_000, costUsd: 0 },
        nowMs: retiredMs,
      });
      expect(book.status(retiredMs).daily).toMatchObject({ reserved_tokens: 3_000 });
      // A long stream outlives the minute after which a lease is presumed gone: its hold stays, so no other
      // call can reserve that room and the budget end over its limit when the stream settles.
      const afterSweepMs = NOW + 5 * 60_000;
      expect(book.status(afterSweepMs).daily).toMatchObject({ reserved_tokens: 3_000 });
      book.settleLeased({
        leaseKey: "lease:busy",
        limits,
        charges: [{ chargeKey: "long", tokens: 2_500, costUsd: 0 }],
        close: true,
        nowMs: afterSweepMs,
      });
      expect(book.status(afterSweepMs).daily).toMatchObject({ tokens: 3_400, reserved_tokens: 0 });
      // An isolate that died with calls on it: their hold goes as an abandoned reservation's does, after 30 minutes.
      book.reserve({ chargeKey: "b", limits, tokens: 1_000, costUsd: 0, nowMs: afterSweepMs, leaseKey: "lease:dead" });
      book.settle({ chargeKey: "b", limits, tokens: 1_000, costUsd: 0, nowMs: afterSweepMs });
      book.settleLeased({
        leaseKey: "lease:dead",
        limits,
        charges: [],
        close: false,
        keep: { tokens: 2_000, costUsd: 0 },
        nowMs: afterSweepMs,
      });
      expect(book.status(afterSweepMs + 29 * 60_000).daily).toMatchObject({ reserved_tokens: 2_000 });
      expect(book.status(afterSweepMs + 31 * 60_000).daily).toMatchObject({ reserved_tokens: 0 });
    }));

  it("gives back a lease its isolate never closed at the sweep after a minute, and still counts its late charges", () =>
    inLimiter((book, sql) => {
      const limits = { ...NONE, daily_tokens: 1_000_000 };
      book.reserve({ chargeKey: "a", limits, tokens: 1_000, costUsd: 0, nowMs: NOW, leaseKey: "lease:gone" });
      book.settle({ chargeKey: "a", limits, tokens: 900, costUsd: 0, nowMs: NOW });
      expect(book.status(NOW).daily).toMatchObject({ tokens: 900, reserved_tokens: 100_000 });
      const later = NOW + 61_000;
      expect(book.status(later).daily).toMatchObject({ tokens: 900, reserved_tokens: 0 });
      const lateCharge = (chargeKey: string, tokens: number, nowMs: number) =>
        book.settleLeased({
          leaseKey: "lease:gone",
          limits,
          charges: [{ chargeKey, tokens, costUsd: 0 }],
          close: true,
          nowMs,
        });
      lateCharge("b", 50, later);
      expect(book.status(later).daily).toMatchObject({ tokens: 950, reserved_tokens: 0 });
      // Its row goes after ten minutes, not with the charge keys' weeks; a charge after that still counts.
      const leaseRows = () =>
        sql.exec("SELECT count(*) AS n FROM limiter_budget_charges WHERE charge_key = 'lease:gone'").one().n;
      expect(leaseRows()).toBe(1);
      const muchLater = NOW + 11 * 60_000;
      book.status(muchLater);
      expect(leaseRows()).toBe(0);
      lateCharge("c", 5, muchLater);
      expect(book.status(muchLater).daily).toMatchObject({ tokens: 955, reserved_tokens: 0 });
    }));

  it("charges a key that had reserved by itself as that reservation's settlement, and reports thresholds its batch crosses", () =>
    inLimiter((book) => {
      const limits = { ...NONE, daily_tokens: 10_000 };
      book.reserve({ chargeKey: "lease-grantor", limits, tokens: 10, costUsd: 0, nowMs: NOW, leaseKey: "lease:1" });
      book.reserve({ chargeKey: "retried", limits, tokens: 500, costUsd: 0, nowMs: NOW });
      const { crossings } = book.settleLeased({
        leaseKey: "lease:1",
        limits,
        charges: [
          { chargeKey: "retried", tokens: 400, costUsd: 0 },
          { chargeKey: "big", tokens: 4_700, costUsd: 0, once: true },
        ],
        close: true,
        nowMs: NOW,
      });
      expect(crossings.map((crossing) => crossing.thresholdPercent)).toEqual([50]);
      expect(book.status(NOW).daily).toMatchObject({ tokens: 5_100, reserved_tokens: 10 });
    }));

  it("counts a batch tried again under the same key once, though its charges are settled once by construction", () =>
    inLimiter((book) => {
      const limits = { ...NONE, daily_tokens: 100_000 };
      const { lease } = book.reserve({
        chargeKey: "grantor",
        limits,
        tokens: 100,
        costUsd: 0,
        nowMs: NOW,
        leaseKey: "lease:1",
      }) as { lease: { tokens: number } };
      // The isolate's write landed but its answer was lost: it sends the same batch again, under the same key.
      const leased = {
        leaseKey: "lease:1",
        limits,
        charges: [{ chargeKey: "api:req_1:01A", tokens: 40, costUsd: 0.01, once: true }],
        close: false,
        batchKey: "batch:1",
        nowMs: NOW,
      };
      book.settleLeased(leased);
      expect(book.settleLeased(leased)).toEqual({ crossings: [] });
      const unbudgeted = [{ chargeKey: "api:req_2:01B", tokens: 7, costUsd: 0.001, once: true }];
      book.countUnbudgeted(unbudgeted, NOW, "batch:2");
      book.countUnbudgeted(unbudgeted, NOW, "batch:2");
      expect(book.status(NOW).daily).toMatchObject({
        tokens: 47,
        cost_usd: 0.011,
        reserved_tokens: 100 + lease.tokens - 40,
      });
      // Another batch with the same charges is new work (these keys are unique by construction).
      book.countUnbudgeted(unbudgeted, NOW, "batch:3");
      expect(book.status(NOW).daily).toMatchObject({ tokens: 54 });
    }));

  it("gives a batch sent again the thresholds it crossed the first time, so they are still published, and only to it", () =>
    inLimiter((book) => {
      const limits = { ...NONE, daily_tokens: 10_000 };
      book.reserve({ chargeKey: "grantor", limits, tokens: 10, costUsd: 0, nowMs: NOW, leaseKey: "lease:1" });
      const batch = (batchKey: string, tokens: number) => ({
        leaseKey: "lease:1",
        limits,
        charges: [{ chargeKey: `api:${batchKey}`, tokens, costUsd: 0, once: true }],
        close: false,
        batchKey,
        nowMs: NOW,
      });
      const first = book.settleLeased(batch("batch:1", 5_500));
      expect(first.crossings.map((crossing) => crossing.thresholdPercent)).toEqual([50]);
      // Its answer was lost: the resend is not counted again, and gets the same crossing to publish.
      expect(book.settleLeased(batch("batch:1", 5_500))).toEqual(first);
      expect(book.status(NOW).daily).toMatchObject({ tokens: 5_500 });
      // Another batch crossing nothing new reports nothing; 80 % goes to the batch that reaches it.
      expect(book.settleLeased(batch("batch:2", 100)).crossings).toEqual([]);
      expect(book.settleLeased(batch("batch:3", 2_500)).crossings.map((crossing) => crossing.thresholdPercent)).toEqual(
        [80],
      );
      expect(book.settleLeased(batch("batch:2", 100)).crossings).toEqual([]);
    }));
});

describe("budget exhaustion mid-task", () => {
  it("ends the task's calls with a non-retryable budget error and emits the 100% threshold event once", async () => {
    const workspace = await workspaceWith(
      { strategy: "fallback", chain: [{ provider: "simulated", model: "sim-1?completion_tokens=40" }] },
      { ...NONE, daily_tokens: 100 },
    );
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const messages = [{ role: "user" as const, content: "Write the docs." }];
    const context = (step: number) => ({
      workspaceId: workspace.id,
      taskId: "task_budget",
      runId: "run_budget",
      chargeKey: `run_budget:${step}`,
    });
    const outcomes: string[] = [];
    let error: unknown;
    for (let step = 0; step < 6; step++) {
      try {
        const result = await router.chat({ messages }, context(step));
        outcomes.push(`ok:${result.usage.total_tokens}`);
      } catch (caught) {
        error = caught;
        outcomes.push("refused");
        break;
      }
    }
    // 48 tokens a call: 48, 96 (≥50, ≥80); the third, near the limit, has its answer cut to the room left,
    // though its prompt (8 tokens) alone goes over it: 105 (≥100). Then nothing is left.
    expect(outcomes).toEqual(["ok:48", "ok:48", "ok:9", "refused"]);
    expect(error).toBeInstanceOf(BudgetExhaustedError);
    expect(error).toMatchObject({ kind: "budget_exhausted", retryable: false, period: "daily", metric: "tokens" });
    // Later calls are refused too, and report nothing new.
    await expect(router.chat({ messages }, context(9))).rejects.toBeInstanceOf(BudgetExhaustedError);

    const reached = await eventsOf(workspace, "billing.threshold.reached", 3);
    expect(reached.map((event) => event.data.threshold_percent)).toEqual([50, 80, 100]);
    const full = reached.filter((event) => event.data.threshold_percent === 100);
    expect(full).toHaveLength(1);
    expect(full[0]).toMatchObject({
      task_id: "task_budget",
      data: {
        workspace_id: workspace.id,
        threshold_type: "daily",
        current_usage: 105,
        threshold: 100,
        percentage: 105,
        alert_level: "critical",
      },
    });
    const alerts = await eventsOf(workspace, "billing.usage_alert", 3);
    expect(alerts.map((event) => event.data.alert_level)).toEqual(["info", "warning", "critical"]);
  });
});

describe("a budget counter that does not answer", () => {
  it("refuses the call as retryable budget_unavailable, a 503 that blames no provider, and asks none", async () => {
    const workspace = await workspaceWith(
      { strategy: "fallback", chain: [{ provider: "simulated", model: "sim-1" }] },
      { ...NONE, daily_tokens: 10_000 },
    );
    const unreachable = {
      getByName: () => ({
        reserveBudget: async () => {
          throw new Error("Durable Object reset because its code was updated.");
        },
      }),
    };
    const router = createLlmRouter(llmConfig({ WORKSPACE_LIMITER: unreachable }), { logger: quietLogger });
    const refusal = await router
      .chat({ messages: [{ role: "user", content: "hi" }] }, { workspaceId: workspace.id, chargeKey: "counter-down" })
      .catch((error: unknown) => error);
    expect(refusal).toMatchObject({ kind: "budget_unavailable", retryable: true, failures: [] });
    const answered = llmErrorToApiError(refusal) as ApiError;
    expect(answered).toMatchObject({ status: 503, extensions: { reason: "budget_unavailable", retryable: true } });
    expect(answered.headers).toMatchObject({ "Retry-After": "1" });
  });

  it("gives back a reservation the counter took though its answer was lost, rather than hold it 30 minutes", async () => {
    const workspace = await workspaceWith(
      { strategy: "fallback", chain: [{ provider: "simulated", model: "sim-1" }] },
      { ...NONE, daily_tokens: 10_000 },
    );
    // The limiter takes the reservation, but its answer is lost on the way back (a reset by a deploy).
    const answerLost = {
      getByName(name: string) {
        const stub = env.WORKSPACE_LIMITER.getByName(name);
        return {
          reserveBudget: async (input: Parameters<typeof stub.reserveBudget>[0]) => {
            await stub.reserveBudget(input);
            throw new Error("Network connection lost.");
          },
          settleBudget: (input: Parameters<typeof stub.settleBudget>[0]) => stub.settleBudget(input),
        };
      },
    };
    const router = createLlmRouter(llmConfig({ WORKSPACE_LIMITER: answerLost }), { logger: quietLogger });
    const refusal = await router
      .chat(
        { messages: [{ role: "user", content: "hi" }], max_tokens: 500 },
        { workspaceId: workspace.id, chargeKey: "answer-lost" },
      )
      .catch((error: unknown) => error);
    expect(refusal).toMatchObject({ kind: "budget_unavailable", retryable: true });
    await vi.waitFor(async () =>
      expect(await budgetUsed(workspace.id)).toMatchObject({ tokens: 0, reserved_tokens: 0 }),
    );
  });
});

interface BudgetStatusBody {
  daily: { tokens: number; thresholds_reached: { threshold_percent: number }[] };
  exhausted: boolean;
}

/** POST /api/v1/llm/chat/completions as the workspace, routed by its chain (`model: auto`). */
function helloCompletion(workspace: { headers: Record<string, string> }): Promise<Response> {
  return fetcher(`${BASE}/api/v1/llm/chat/completions`, {
    method: "POST",
    headers: { ...workspace.headers, "Content-Type": "application/json" },
    body: JSON.stringify({ model: "auto", messages: [{ role: "user", content: "hello" }] }),
  });
}

async function budgetOf(workspace: { headers: Record<string, string> }): Promise<BudgetStatusBody> {
  return (await (await fetcher(`${BASE}/api/v1/budgets`, { headers: workspace.headers })).json()) as BudgetStatusBody;
}

describe("budget routes", () => {
  it("PUT replaces the budgets (audited), GET shows them with the period's use, and the chat endpoint answers 429 when nothing is left", async () => {
    const workspace = await workspaceWith(null);
    const put = await fetcher(`${BASE}/api/v1/budgets`, {
      method: "PUT",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ daily_tokens: 60, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: 25 }),
    });
    expect(put.status).toBe(200);
    expect(await put.json()).toMatchObject({
      budgets: { daily_tokens: 60, monthly_cost_usd: 25 },
      daily: { tokens: 0, thresholds_reached: [] },
      exhausted: false,
      retry_after_seconds: null,
    });
    const audit = (await (
      await fetcher(`${BASE}/api/v1/audit-logs?action=budget.update`, { headers: workspace.headers })
    ).json()) as {
      data: { action: string; changes: unknown }[];
    };
    expect(audit.data).toHaveLength(1);

    // PUT replaces all four: one left out is named as missing (null means no budget).
    const partial = await fetcher(`${BASE}/api/v1/budgets`, {
      method: "PUT",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ daily_tokens: 60, monthly_tokens: null, daily_cost_usd: null }),
    });
    expect(partial.status).toBe(422);
    expect(((await partial.json()) as { errors: unknown }).errors).toEqual([
      { path: "monthly_cost_usd", message: "is required: a number, or null for no budget" },
    ]);

    const chat = () => helloCompletion(workspace);
    expect((await chat()).status).toBe(200);
    expect((await chat()).status).toBe(200);
    const refused = await chat();
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get("Retry-After"))).toBeGreaterThan(0);
    // Until the period resets: SDKs that retry every 429 are told not to.
    expect(refused.headers.get("X-Should-Retry")).toBe("false");
    expect(await refused.json()).toMatchObject({
      code: "RATE_LIMITED",
      reason: "budget_exhausted",
      period: "daily",
      metric: "tokens",
    });
    const status = (await (await fetcher(`${BASE}/api/v1/budgets`, { headers: workspace.headers })).json()) as Record<
      string,
      unknown
    >;
    expect(status).toMatchObject({ exhausted: true, daily: { reserved_tokens: 0 } });
    const spent = (status.daily as { tokens: number }).tokens;
    expect(status.exhausted_by).toEqual([{ period: "daily", metric: "tokens", used: spent, limit: 60 }]);

    // Nothing left: a task is refused at submission, in the chat refusal's terms, rather than failing later.
    const task = await fetcher(`${BASE}/api/v1/tasks`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ type: "code_generation", title: "Add a parser", description: "Write it." }),
    });
    expect(task.status).toBe(429);
    expect(task.headers.get("X-Should-Retry")).toBe("false");
    const retryAfter = Number(task.headers.get("Retry-After"));
    expect(retryAfter).toBeGreaterThan(0);
    expect(await task.json()).toMatchObject({
      code: "RATE_LIMITED",
      reason: "budget_exhausted",
      period: "daily",
      metric: "tokens",
      retryable: false,
      detail: `The daily token budget is exhausted (${spent} of 60 tokens used); it resets in ${retryAfter} s, or raise it with PUT /api/v1/budgets.`,
    });
    // Two calls spent the 60-token day: every step of it is listed, once.
    expect((status.daily as { thresholds_reached: { threshold_percent: number }[] }).thresholds_reached).toEqual(
      [50, 80, 100].map((threshold_percent) => expect.objectContaining({ metric: "tokens", threshold_percent })),
    );
    expect(status.retry_after_seconds).toBeGreaterThan(0);
  });

  it("refuses a call and a task with the month's reset when the day's and the month's budgets are both spent", async () => {
    const workspace = await workspaceWith(null);
    const put = await fetcher(`${BASE}/api/v1/budgets`, {
      method: "PUT",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ daily_tokens: 30, monthly_tokens: 30, daily_cost_usd: null, monthly_cost_usd: null }),
    });
    expect(put.status).toBe(200);
    const chat = () => helloCompletion(workspace);
    let refused = await chat();
    for (let calls = 0; calls < 5 && refused.status === 200; calls++) refused = await chat();
    expect(refused.status).toBe(429);
    // Both budgets are spent: the day's resets first, but the month's keeps refusing until the month ends.
    const monthEndsInSeconds =
      (Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth() + 1, 1) - Date.now()) / 1000;
    const retryAfter = Number(refused.headers.get("Retry-After"));
    expect(retryAfter).toBeGreaterThanOrEqual(Math.floor(monthEndsInSeconds) - 5);
    expect(await refused.json()).toMatchObject({ reason: "budget_exhausted", period: "monthly", metric: "tokens" });

    const task = await fetcher(`${BASE}/api/v1/tasks`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ type: "code_generation", title: "Add a parser", description: "Write it." }),
    });
    expect(task.status).toBe(429);
    const taskRetryAfter = Number(task.headers.get("Retry-After"));
    expect(taskRetryAfter).toBeGreaterThanOrEqual(Math.floor(monthEndsInSeconds) - 5);
    const body = (await task.json()) as { period: string; detail: string };
    // The budget named is the one whose reset the answer gives.
    expect(body.period).toBe("monthly");
    expect(body.detail).toMatch(
      new RegExp(
        `^The monthly token budget is exhausted .*resets in ${taskRetryAfter} s, or raise it with PUT /api/v1/budgets\\.$`,
      ),
    );
  });

  it("reports the thresholds a call in flight when the first budget was set crossed, at the refusal they cause", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "simulated", model: "sim-1?latency_ms=400&completion_tokens=200" }],
    });
    const chat = () => helloCompletion(workspace);
    // A call starts before the workspace has budgets: nothing is reserved, its charge is only counted.
    const inFlight = chat();
    await new Promise((wake) => setTimeout(wake, 100));
    const put = await fetcher(`${BASE}/api/v1/budgets`, {
      method: "PUT",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ daily_tokens: 100, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null }),
    });
    // Nothing spent yet when the budget was set: nothing to report then.
    expect(((await put.json()) as BudgetStatusBody).daily.thresholds_reached).toEqual([]);
    const answered = await inFlight;
    expect(answered.status).toBe(200);
    const spent = ((await answered.json()) as { usage: { total_tokens: number } }).usage.total_tokens;
    expect(spent).toBeGreaterThan(100);
    await expect.poll(async () => (await budgetOf(workspace)).daily.tokens, { timeout: 5_000 }).toBe(spent);

    // The budget is spent, and the next call is refused: no call will settle to cross its thresholds.
    const refused = await chat();
    expect(refused.status).toBe(429);
    expect(await refused.json()).toMatchObject({ reason: "budget_exhausted" });
    const reached = await eventsOf(workspace, "billing.threshold.reached", 3, 2_000);
    expect(reached.map((event) => [event.data.threshold_percent, event.data.current_usage])).toEqual([
      [50, spent],
      [80, spent],
      [100, spent],
    ]);
    // Told once: further refusals report nothing again.
    expect((await chat()).status).toBe(429);
    await limiterOutboxDrained(workspace.id);
    expect(await eventsOf(workspace, "billing.threshold.reached")).toHaveLength(3);
    expect((await budgetOf(workspace)).daily.thresholds_reached).toHaveLength(3);
  }, 15_000);

  it("reports them at a task submission the spent budget refuses, when no call came first", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "simulated", model: "sim-1?latency_ms=400&completion_tokens=200" }],
    });
    const inFlight = fetcher(`${BASE}/api/v1/llm/chat/completions`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ model: "auto", messages: [{ role: "user", content: "hello" }] }),
    });
    await new Promise((wake) => setTimeout(wake, 100));
    await fetcher(`${BASE}/api/v1/budgets`, {
      method: "PUT",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ daily_tokens: 100, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null }),
    });
    const spent = ((await (await inFlight).json()) as { usage: { total_tokens: number } }).usage.total_tokens;
    await expect.poll(async () => (await budgetOf(workspace)).daily.tokens, { timeout: 5_000 }).toBe(spent);

    const task = await fetcher(`${BASE}/api/v1/tasks`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ type: "code_generation", title: "Add a parser", description: "Write it." }),
    });
    expect(task.status).toBe(429);
    const reached = await eventsOf(workspace, "billing.threshold.reached", 3, 2_000);
    expect(reached.map((event) => event.data.threshold_percent)).toEqual([50, 80, 100]);
    expect(await eventsOf(workspace, "billing.usage_alert", 3, 2_000)).toHaveLength(3);
  }, 15_000);

  it("judges a call in flight when its budget was raised against the raised budget, so the new one's steps are told", async () => {
    const workspace = await workspaceWith(
      { strategy: "fallback", chain: [{ provider: "simulated", model: "sim-1?latency_ms=400&completion_tokens=200" }] },
      { ...NONE, daily_tokens: 250 },
    );
    const put = (daily_tokens: number) =>
      fetcher(`${BASE}/api/v1/budgets`, {
        method: "PUT",
        headers: { ...workspace.headers, "Content-Type": "application/json" },
        body: JSON.stringify({ daily_tokens, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null }),
      });
    const chat = () => helloCompletion(workspace);
    // A call that will spend over 80% of the 250-token day starts; the budget is raised to 400 while it runs (as
    // after an 80% alert, with the task that caused it still running).
    const inFlight = chat();
    await new Promise((wake) => setTimeout(wake, 100));
    expect((await put(400)).status).toBe(200);
    const spent = ((await (await inFlight).json()) as { usage: { total_tokens: number } }).usage.total_tokens;
    expect(spent).toBeGreaterThanOrEqual(200);
    await expect.poll(async () => (await budgetOf(workspace)).daily.tokens, { timeout: 5_000 }).toBe(spent);
    await limiterOutboxDrained(workspace.id);
    // Half of 400 and more: the 50% step of the budget in force, not the 50 and 80% of the one it replaced.
    const reached = await eventsOf(workspace, "billing.threshold.reached");
    expect(reached.map((event) => [event.data.threshold_percent, event.data.threshold])).toEqual([[50, 400]]);
    // Its 80% step is still to come, and is told when the use reaches it: marked for the old budget, it was never told.
    expect((await budgetOf(workspace)).daily.thresholds_reached.map((step) => step.threshold_percent)).toEqual([50]);
    expect((await chat()).status).toBe(200);
    await limiterOutboxDrained(workspace.id);
    expect(
      (await eventsOf(workspace, "billing.threshold.reached", 3, 2_000)).map((event) => [
        event.data.threshold_percent,
        event.data.threshold,
      ]),
    ).toEqual([
      [50, 400],
      [80, 400],
      [100, 400],
    ]);
  }, 15_000);

  it("PUT under what the period has used reports the thresholds reached at once, each once", async () => {
    const workspace = await workspaceWith(null);
    const put = (daily_tokens: number) =>
      fetcher(`${BASE}/api/v1/budgets`, {
        method: "PUT",
        headers: { ...workspace.headers, "Content-Type": "application/json" },
        body: JSON.stringify({ daily_tokens, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null }),
      });
    const chat = await fetcher(`${BASE}/api/v1/llm/chat/completions`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ model: "auto", messages: [{ role: "user", content: "hello" }] }),
    });
    expect(chat.status).toBe(200);
    const spent = ((await chat.json()) as { usage: { total_tokens: number } }).usage.total_tokens;
    await expect.poll(async () => (await budgetOf(workspace)).daily.tokens, { timeout: 5_000 }).toBe(spent);

    // Lowered to 60% of what is spent, so every threshold is passed: no call will come to cross them now.
    const lowered = await put(Math.floor(spent * 0.6));
    const afterFirst = (await lowered.json()) as BudgetStatusBody;
    expect(afterFirst.daily.thresholds_reached.map((reached) => reached.threshold_percent)).toEqual([50, 80, 100]);
    expect(afterFirst.exhausted).toBe(true);
    const reached = await eventsOf(workspace, "billing.threshold.reached", 3);
    expect(reached.map((event) => [event.data.threshold_percent, event.data.current_usage])).toEqual([
      [50, spent],
      [80, spent],
      [100, spent],
    ]);
    // Not reported twice in the period: set again, and lower still.
    await put(Math.floor(spent * 0.6));
    const again = (await (await put(1)).json()) as BudgetStatusBody;
    expect(again).toMatchObject({ exhausted: true });
    expect(again.daily.thresholds_reached).toHaveLength(3);
    await limiterOutboxDrained(workspace.id);
    expect(await eventsOf(workspace, "billing.threshold.reached")).toHaveLength(3);
    expect(await eventsOf(workspace, "billing.usage_alert")).toHaveLength(3);

    // Raised so the use is 2/3 of it: 50% stays reached, 80 and 100% are armed for the new budget.
    const raised = (await (await put(Math.ceil(spent * 1.5))).json()) as BudgetStatusBody;
    expect(raised).toMatchObject({ exhausted: false });
    expect(raised.daily.thresholds_reached.map((reached) => reached.threshold_percent)).toEqual([50]);
  });

  it("validates the body and needs the admin scope to change budgets", async () => {
    const workspace = await workspaceWith(null);
    const invalid = await fetcher(`${BASE}/api/v1/budgets`, {
      method: "PUT",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ daily_tokens: -1, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null }),
    });
    expect(invalid.status).toBe(422);
    // Dollars are counted to 1e-8, and a budget past a trillion is a slip: both named at their path.
    const put = (budgets: object) =>
      fetcher(`${BASE}/api/v1/budgets`, {
        method: "PUT",
        headers: { ...workspace.headers, "Content-Type": "application/json" },
        body: JSON.stringify({ ...NONE, ...budgets }),
      });
    const tiny = await put({ daily_cost_usd: 1e-308 });
    expect(tiny.status).toBe(422);
    expect(((await tiny.json()) as { errors: unknown }).errors).toEqual([
      { path: "daily_cost_usd", message: "must be 0 or at least 0.00000001: dollars are counted to 1e-8" },
    ]);
    const huge = await put({ monthly_cost_usd: 1e308 });
    expect(huge.status).toBe(422);
    expect(((await huge.json()) as { errors: { path: string }[] }).errors.map((error) => error.path)).toEqual([
      "monthly_cost_usd",
    ]);
    expect((await put({ daily_cost_usd: 0.00000001, monthly_cost_usd: 0 })).status).toBe(200);
    const reader = await createTestKey(fetcher, BASE, workspace.key, ["tasks:read"]);
    expect((await fetcher(`${BASE}/api/v1/budgets`, { headers: reader.headers })).status).toBe(200);
    const forbidden = await fetcher(`${BASE}/api/v1/budgets`, {
      method: "PUT",
      headers: { ...reader.headers, "Content-Type": "application/json" },
      body: JSON.stringify(NONE),
    });
    expect(forbidden.status).toBe(403);
  });
});
