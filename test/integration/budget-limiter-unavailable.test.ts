import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createApp } from "../../src/app.ts";
import { limiterFailing } from "../support/limiter.ts";
import { BASE, fetcher, workspaceWith } from "../support/llm.ts";

/**
 * GET and PUT /api/v1/budgets when the workspace's limiter fails to answer (overloaded, being reset): the budgets
 * live in D1 and their use in the WorkspaceLimiter, so the caller gets a retryable 503 saying what happened, not a
 * 500; a PUT's budgets are saved, and repeating it (it is idempotent) finishes the job.
 */

const app = createApp();
const LIMITS = { daily_tokens: 1_000, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null };

const budgetMethodsFail = limiterFailing(
  ["reviewBudgets", "budgetStatus"],
  "Durable Object reset because its code was updated.",
);

async function withFailingLimiter(path: string, init: RequestInit): Promise<Response> {
  const ctx = createExecutionContext();
  const response = await app.fetch(
    new Request(`${BASE}${path}`, init),
    { ...env, WORKSPACE_LIMITER: budgetMethodsFail },
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return response;
}

describe("budgets while the workspace's limiter fails", () => {
  it("PUT saves the budgets and answers a retryable 503 that says so; repeated, it answers 200", async () => {
    const workspace = await workspaceWith(null);
    const put = {
      method: "PUT",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify(LIMITS),
    };
    const failed = await withFailingLimiter("/api/v1/budgets", put);
    expect(failed.status).toBe(503);
    expect(failed.headers.get("Content-Type")).toBe("application/problem+json");
    expect(failed.headers.get("Retry-After")).toBe("1");
    const problem = (await failed.json()) as { code: string; detail: string };
    expect(problem.code).toBe("DEPENDENCY_UNAVAILABLE");
    expect(problem.detail).toContain("budgets were saved");

    const read = await fetcher(`${BASE}/api/v1/budgets`, { headers: workspace.headers });
    expect(read.status).toBe(200);
    expect(await read.json()).toMatchObject({ budgets: LIMITS });

    const repeated = await fetcher(`${BASE}/api/v1/budgets`, put);
    expect(repeated.status).toBe(200);
    expect(await repeated.json()).toMatchObject({ budgets: LIMITS, exhausted: false });
  });

  it("GET answers a retryable 503", async () => {
    const workspace = await workspaceWith(null, LIMITS);
    const failed = await withFailingLimiter("/api/v1/budgets", { headers: workspace.headers });
    expect(failed.status).toBe(503);
    expect(failed.headers.get("Retry-After")).toBe("1");
    expect(await failed.json()).toMatchObject({ code: "DEPENDENCY_UNAVAILABLE" });
  });
});
