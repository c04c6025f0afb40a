import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createApp } from "../../src/app.ts";
import { bearer, createTestWorkspace, TEST_ADMIN_TOKEN } from "../support/workspaces.ts";
import { BASE, fetcher } from "../unit/tasks/fakes.ts";

/**
 * PATCH /api/v1/workspace (the workspace's admin: name, LLM routing) and PATCH /api/v1/workspaces/{id} (the
 * operator: name, plan, limits) each read the row, then write it. Each wrote back every field, so one that read the
 * row before the other's write undid it: a workspace renamed while the operator moved it to another plan was put
 * back on the old plan and limits, its response and every later read saying so.
 */

const app = createApp();

/** D1, except that `beforeFirstBatch` runs just before the first batch of writes: another request's, in between. */
function dbWithWriteBetween(beforeFirstBatch: () => Promise<void>): D1Database {
  let pending: (() => Promise<void>) | null = beforeFirstBatch;
  return new Proxy(env.DB, {
    get(db, property) {
      if (property === "batch") {
        return async (statements: D1PreparedStatement[]) => {
          const run = pending;
          pending = null;
          if (run) await run();
          return db.batch(statements);
        };
      }
      const value = Reflect.get(db, property);
      return typeof value === "function" ? value.bind(db) : value;
    },
  });
}

async function send(db: D1Database, path: string, token: string, body: unknown): Promise<Response> {
  const ctx = createExecutionContext();
  const response = await app.fetch(
    new Request(`${BASE}${path}`, {
      method: "PATCH",
      headers: { ...bearer(token), "Content-Type": "application/json" },
      body: JSON.stringify(body),
    }),
    { ...env, DB: db },
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return response;
}

async function stored(workspaceId: string) {
  const response = await fetcher(`${BASE}/api/v1/workspaces/${workspaceId}`, { headers: bearer(TEST_ADMIN_TOKEN) });
  return (await response.json()) as { name: string; plan: string; limits: { max_running_tasks: number }; llm: unknown };
}

describe("concurrent PATCHes of a workspace's different fields", () => {
  it("a rename by the workspace does not undo the operator's plan change made meanwhile", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE, { plan: "free" });
    const db = dbWithWriteBetween(async () => {
      const upgrade = await send(env.DB, `/api/v1/workspaces/${workspace.id}`, TEST_ADMIN_TOKEN, { plan: "team" });
      expect(upgrade.status).toBe(200);
    });
    const renamed = await send(db, "/api/v1/workspace", workspace.key, { name: "Renamed" });
    expect(renamed.status).toBe(200);
    // The answer is the workspace as stored, too.
    expect(await renamed.json()).toMatchObject({ name: "Renamed", plan: "team" });
    expect(await stored(workspace.id)).toMatchObject({
      name: "Renamed",
      plan: "team",
      limits: { max_running_tasks: 10 },
    });
  });

  it("the operator's limit change does not undo the workspace's LLM routing set meanwhile", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE, { plan: "team" });
    const llm = { strategy: "fallback", chain: [{ provider: "simulated", model: "sim-small" }] };
    const db = dbWithWriteBetween(async () => {
      const routed = await send(env.DB, "/api/v1/workspace", workspace.key, { llm });
      expect(routed.status).toBe(200);
    });
    const limited = await send(db, `/api/v1/workspaces/${workspace.id}`, TEST_ADMIN_TOKEN, {
      limits: { max_running_tasks: 3 },
    });
    expect(limited.status).toBe(200);
    expect(await stored(workspace.id)).toMatchObject({ llm, limits: { max_running_tasks: 3 } });
  });
});
