import { describe, expect, it } from "vitest";
import { BASE, fetcher, workspaceWith } from "../support/llm.ts";

/** GET /api/v1/usage answers its range as calendar days, YYYY-MM-DD, whatever `to` it is given. */

describe("GET /api/v1/usage, its default range", () => {
  it("starts at the first day there is when the 30 days before `to` would go back past it, not at a year -1 month", async () => {
    const workspace = await workspaceWith(null);
    const usage = await fetcher(`${BASE}/api/v1/usage?to=0000-01-10`, { headers: workspace.headers });
    expect(usage.status).toBe(200);
    // The 30 days up to 0000-01-10 begin in year -1, which was answered as `from: "-000001-12"`: no YYYY-MM-DD.
    expect(await usage.json()).toMatchObject({ from: "0000-01-01", to: "0000-01-10", data: [] });
  });

  it("still answers the 30 days up to an early `to` that has them", async () => {
    const workspace = await workspaceWith(null);
    const usage = await fetcher(`${BASE}/api/v1/usage?to=0000-01-30`, { headers: workspace.headers });
    expect(await usage.json()).toMatchObject({ from: "0000-01-01", to: "0000-01-30" });
  });

  it("says which `to` a `from` after it was judged against, today's when the caller sent none", async () => {
    const workspace = await workspaceWith(null);
    const today = new Date().toISOString().slice(0, 10);
    const usage = await fetcher(`${BASE}/api/v1/usage?from=9999-01-01`, { headers: workspace.headers });
    expect(usage.status).toBe(422);
    const problem = (await usage.json()) as { errors: { path: string; message: string }[] };
    expect(problem.errors).toHaveLength(1);
    expect(problem.errors[0].path).toBe("from");
    expect(problem.errors[0].message).toContain(`today, ${today}, when not given`);
  });
});
