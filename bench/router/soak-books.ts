/**
 * The soak's invariants on the books (bench/router/soak-checks.ts runs them): each budgeted limiter's spend
 * against the usage rows, what it still holds, how far over its limit it went, GET /api/v1/usage, and the
 * billing threshold events each step reached.
 */

import { costUsd } from "../../src/llm/prices.ts";
import { estimatePromptTokens } from "../../src/llm/tokens.ts";
import {
  type Attempt,
  allEvents,
  type CallRecord,
  get,
  type Invariant,
  isUnfinishedAttemptRow,
  near,
  promptOf,
  type SoakWorkspace,
  type UsageRow,
} from "./soak-lib.ts";

export async function checkBooks(run: {
  baseUrl: string;
  workspaces: SoakWorkspace[];
  budgeted: SoakWorkspace[];
  records: CallRecord[];
  rows: UsageRow[];
  attemptsOf: Map<number, Attempt[]>;
  held: string[];
  invariant: (name: string) => Invariant;
}): Promise<void> {
  const { baseUrl, workspaces, budgeted, records, rows, attemptsOf, held, invariant } = run;
  // 4. The books: the limiter's spend = the usage rows, nothing held, within the documented overshoot.
  const books = invariant("limiter spend = usage rows, nothing held, overshoot within the documented bound");
  const usageApi = invariant("GET /api/v1/usage totals = the workspace's usage rows");
  for (const workspace of workspaces) {
    const own = rows.filter((row) => row.workspace_id === workspace.id);
    const tokens = own.reduce((sum, row) => sum + row.total_tokens, 0);
    const cost = own.reduce((sum, row) => sum + row.cost_usd, 0);
    const calls = own.filter((row) => !isUnfinishedAttemptRow(row)).length;
    const summary = await get(baseUrl, "/api/v1/usage", workspace.headers);
    usageApi.checked++;
    if (
      summary.totals.total_tokens !== tokens ||
      !near(summary.totals.cost_usd, cost) ||
      summary.totals.calls !== calls
    )
      usageApi.violations.push(
        `${workspace.name}: usage says ${summary.totals.calls} calls ${summary.totals.total_tokens} tokens $${summary.totals.cost_usd}, rows ${calls} calls ${tokens} tokens $${cost}`,
      );
    if (!budgeted.includes(workspace)) continue;
    const status = await get(baseUrl, "/api/v1/budgets", workspace.headers);
    books.checked++;
    for (const period of ["daily", "monthly"] as const) {
      if (status[period].tokens !== tokens || Math.abs(status[period].cost_usd - cost) > 1e-7)
        books.violations.push(
          `${workspace.name} ${period}: limiter ${status[period].tokens} tokens $${status[period].cost_usd}, rows ${tokens} tokens $${cost}`,
        );
    }
    // Over the limit by no more than the documented overshoot: what each call (and each attempt of it that timed
    // out or broke, whose spend the router holds room for before another attempt) spent past what it reserved
    // because the provider counted its prompt longer than our estimate. The fakes also ignore `max_tokens` (a real
    // provider's answer is no longer than asked), so what a fake wrote past the length the router asked for, an
    // answer cut to fit the room, is the fake's overshoot, not the router's; an unfinished attempt's written part
    // counts as such, since which attempt's length it was asked is not in its row.
    let tokenSlack = 0;
    let costSlack = 0;
    for (const row of own) {
      const call = records.find((record) => record.requestId === row.request_id);
      // A call sent before the workspace had a budget was only counted: its charge may cross the new one.
      const unbudgeted =
        workspace.raise?.before?.daily_tokens === null && workspace.raise?.before?.daily_cost_usd === null;
      if (unbudgeted && (call?.startedAt ?? 0) < (workspace.raise?.atMs ?? 0)) {
        tokenSlack += row.total_tokens;
        costSlack += row.cost_usd;
        continue;
      }
      const estimate = call ? estimatePromptTokens([{ role: "user", content: promptOf(call.id) }]) : row.prompt_tokens;
      const asked = isUnfinishedAttemptRow(row) ? 0 : call ? attemptsOf.get(call.id)?.at(-1)?.maxTokens : null;
      const reserved = {
        prompt_tokens: Math.min(row.prompt_tokens, estimate),
        completion_tokens: Math.min(row.completion_tokens, asked ?? row.completion_tokens),
      };
      tokenSlack += row.total_tokens - reserved.prompt_tokens - reserved.completion_tokens;
      costSlack += row.cost_usd - costUsd(row.provider, row.model, reserved);
    }
    const limits: [string, number | null, number, number][] = [
      ["daily_tokens", workspace.budgets.daily_tokens, tokens, tokenSlack],
      ["monthly_tokens", workspace.budgets.monthly_tokens, tokens, tokenSlack],
      ["daily_cost_usd", workspace.budgets.daily_cost_usd, cost, costSlack],
    ];
    for (const [name, limit, used, slack] of limits)
      if (limit !== null && used > limit + slack + 1e-9)
        books.violations.push(`${workspace.name}: ${name} ${used} over ${limit} by more than ${slack}`);
    console.log(
      `  ${workspace.name}: ${tokens} tokens, $${cost.toFixed(6)} in ${own.length} rows; limiter daily ${status.daily.tokens} tokens $${status.daily.cost_usd}, exhausted_by ${JSON.stringify(status.exhausted_by.map((entry: { metric: string; period: string }) => `${entry.period} ${entry.metric}`))}`,
    );
  }
  for (const entry of held) books.violations.push(`still held after settling: ${entry}`);

  // 5. Threshold events: once per (period, metric, step), for exactly the steps reached.
  const thresholds = invariant("billing.threshold.reached / usage_alert once per threshold per period");
  for (const workspace of budgeted) {
    const events = await allEvents(baseUrl, workspace.headers, "billing.*");
    const status = await get(baseUrl, "/api/v1/budgets", workspace.headers);
    for (const type of ["billing.threshold.reached", "billing.usage_alert"]) {
      const counts = new Map<string, number>();
      for (const event of events.filter((entry) => entry.event_type === type)) {
        const key = `${event.data.threshold_type} ${event.data.metric} ${event.data.threshold_percent}`;
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
      const expected = new Map<string, number>();
      for (const period of ["daily", "monthly"] as const) {
        for (const metric of ["tokens", "cost_usd"] as const) {
          const limit = workspace.budgets[`${period}_${metric}`];
          if (limit === null || limit === undefined) continue;
          const used = metric === "tokens" ? status[period].tokens : status[period].cost_usd;
          for (const step of [50, 80, 100]) {
            const key = `${period} ${metric} ${step}`;
            const raise = workspace.raise;
            const before = raise?.before?.[`${period}_${metric}`];
            if (raise?.usedTokens !== undefined && metric === "tokens" && before) {
              // Reached under the first budget, then again under the raised one if the raise armed it again.
              const reachedBefore = raise.usedTokens >= (before * step) / 100 ? 1 : 0;
              const armedAgain = raise.usedTokens < (limit * step) / 100;
              const reachedAfter = armedAgain && used >= (limit * step) / 100 ? 1 : 0;
              if (reachedBefore + reachedAfter > 0) expected.set(key, reachedBefore + reachedAfter);
            } else if (used >= (limit * step) / 100) expected.set(key, 1);
          }
        }
      }
      thresholds.checked++;
      for (const key of new Set([...expected.keys(), ...counts.keys()]))
        if ((counts.get(key) ?? 0) !== (expected.get(key) ?? 0))
          thresholds.violations.push(
            `${workspace.name} ${type} ${key}: ${counts.get(key) ?? 0} events, expected ${expected.get(key) ?? 0}`,
          );
    }
  }
}
