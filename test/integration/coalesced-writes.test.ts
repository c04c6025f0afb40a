import { describe, expect, it } from "vitest";
import { BASE, budgetUsed, fetcher, NO_BUDGETS, workspaceWith } from "../support/llm.ts";

/**
 * An isolate coalesces the writes of many requests' LLM calls (usage rows, charges, lease settlements:
 * src/llm/coalesce.ts), each batch opened by one request and filled by the ones after it. Each call here is a
 * request of its own (exports.default.fetch), one after another, as a client's are: more than a batch holds, so
 * batches fill in requests that did not open them. Started there, a batch's write ran on the filling request's
 * behalf while its opener waited on it, which workerd refuses ("Cannot perform I/O on behalf of a different
 * request", "Promise will never complete": unhandled errors this file's run then reports).
 */

const CALLS = 600;

async function chatInTurn(workspace: Awaited<ReturnType<typeof workspaceWith>>): Promise<number[]> {
  const statuses: number[] = [];
  for (let call = 0; call < CALLS; call++) {
    const response = await fetcher(`${BASE}/api/v1/llm/chat/completions`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: `Call ${call}` }] }),
    });
    await response.arrayBuffer();
    statuses.push(response.status);
  }
  return statuses;
}

/** The workspace's usage totals once they show every call (the last batch goes at its timer, within a second). */
async function usageOfEveryCall(workspace: Awaited<ReturnType<typeof workspaceWith>>) {
  const totals = async () =>
    (
      (await (await fetcher(`${BASE}/api/v1/usage`, { headers: workspace.headers })).json()) as {
        totals: { calls: number; total_tokens: number };
      }
    ).totals;
  let shown = await totals();
  for (let tries = 0; tries < 50 && shown.calls !== CALLS; tries++) {
    await new Promise((wake) => setTimeout(wake, 50));
    shown = await totals();
  }
  return shown;
}

/** The limiter's count for the day once it reaches `tokens` (its batches go at their timers too), or after 2.5 s. */
async function limiterOnceAt(workspaceId: string, tokens: number) {
  let used = await budgetUsed(workspaceId);
  for (let tries = 0; tries < 50 && used.tokens !== tokens; tries++) {
    await new Promise((wake) => setTimeout(wake, 50));
    used = await budgetUsed(workspaceId);
  }
  return used;
}

describe("writes coalesced across requests, each request in turn", () => {
  it("land whole for a workspace without budgets: every usage row and charge, once", { timeout: 60_000 }, async () => {
    const workspace = await workspaceWith(null);
    expect(new Set(await chatInTurn(workspace))).toEqual(new Set([200]));
    const totals = await usageOfEveryCall(workspace);
    expect(totals).toMatchObject({ calls: CALLS });
    expect(await limiterOnceAt(workspace.id, totals.total_tokens)).toMatchObject({
      tokens: totals.total_tokens,
      reserved_tokens: 0,
    });
  });

  it("land whole for a budgeted workspace, whose calls settle against a lease", { timeout: 60_000 }, async () => {
    const workspace = await workspaceWith(null, { ...NO_BUDGETS, daily_tokens: 10_000_000 });
    expect(new Set(await chatInTurn(workspace))).toEqual(new Set([200]));
    const totals = await usageOfEveryCall(workspace);
    expect(totals).toMatchObject({ calls: CALLS });
    expect(await limiterOnceAt(workspace.id, totals.total_tokens)).toMatchObject({ tokens: totals.total_tokens });
  });
});
