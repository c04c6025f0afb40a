import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { auditInsert } from "../../src/audit/index.ts";
import { createDb } from "../../src/db/client.ts";
import { createTestWorkspace } from "../support/workspaces.ts";

const BASE = "http://edge.test";
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));
const db = createDb(env.DB);

describe("token counts in an audit entry's changes", () => {
  it("a budget.update entry shows the token budgets it changed, before and after (counts, not secrets)", async () => {
    const ws = await createTestWorkspace(fetcher, BASE);
    const put = (budgets: Record<string, number | null>) =>
      fetcher(`${BASE}/api/v1/budgets`, {
        method: "PUT",
        headers: { ...ws.headers, "Content-Type": "application/json" },
        body: JSON.stringify(budgets),
      });
    expect(
      (await put({ daily_tokens: 60, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: 25 })).status,
    ).toBe(200);
    expect(
      (await put({ daily_tokens: 90, monthly_tokens: 5000, daily_cost_usd: 2, monthly_cost_usd: 25 })).status,
    ).toBe(200);

    const page = (await (
      await fetcher(`${BASE}/api/v1/audit-logs?action=budget.update`, { headers: ws.headers })
    ).json()) as { data: { changes: { before: unknown; after: unknown } }[] };
    expect(page.data).toHaveLength(2);
    // Newest first: the second PUT, from 60 daily tokens to 90.
    expect(page.data[0].changes).toEqual({
      before: { daily_tokens: 60, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: 25 },
      after: { daily_tokens: 90, monthly_tokens: 5000, daily_cost_usd: 2, monthly_cost_usd: 25 },
    });
    expect(JSON.stringify(page)).not.toContain("[REDACTED]");
  });

  it("still redacts secrets kept under a token-like key, and tokens that are not counts", async () => {
    const ws = await createTestWorkspace(fetcher, BASE);
    await db.batch([
      auditInsert(db, {
        workspaceId: ws.id,
        actor: { type: "system", id: "test" },
        action: "workspace.update",
        resourceType: "workspace",
        changes: {
          before: { access_token: "abc", refresh_tokens: ["def"], max_tokens: 100, api_key: 42 },
          after: { session_tokens: "ghi", password: 1234, nested: { daily_tokens: 7, token: 8 } },
        },
      }),
    ]);
    const page = (await (
      await fetcher(`${BASE}/api/v1/audit-logs?action=workspace.update`, { headers: ws.headers })
    ).json()) as { data: { changes: unknown }[] };
    expect(page.data[0].changes).toEqual({
      before: { access_token: "[REDACTED]", refresh_tokens: "[REDACTED]", max_tokens: 100, api_key: "[REDACTED]" },
      after: { session_tokens: "[REDACTED]", password: "[REDACTED]", nested: { daily_tokens: 7, token: "[REDACTED]" } },
    });
  });
});
