import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { auditInsert } from "../../src/audit/index.ts";
import { createDb } from "../../src/db/client.ts";
import { createTestWorkspace } from "../support/workspaces.ts";

// bench/audit's memory baseline: the export's D1 reads and its stream, apart (ENABLE_DEBUG_ROUTES is on in tests).
const BASE = "http://edge.test";
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));

describe("/__debug/audit", () => {
  it("needs a workspace credential", async () => {
    expect((await fetcher(`${BASE}/__debug/audit/read`)).status).toBe(401);
    expect((await fetcher(`${BASE}/__debug/audit/synthetic-export?rows=1`)).status).toBe(401);
  });

  it("streams generated rows through the export's encoder, across page boundaries", async () => {
    const ws = await createTestWorkspace(fetcher, BASE);
    const json = await fetcher(`${BASE}/__debug/audit/synthetic-export?rows=1201`, { headers: ws.headers });
    expect(json.headers.get("content-type")).toContain("application/x-ndjson");
    const items = (await json.text())
      .trimEnd()
      .split("\n")
      .map((line) => JSON.parse(line));
    expect(items.map((item) => item.seq)).toEqual(Array.from({ length: 1201 }, (_, i) => i + 1));
    expect(items[2]).toMatchObject({ workspace_id: ws.id, changes: { after: { plan: "team" } } });

    const csv = await fetcher(`${BASE}/__debug/audit/synthetic-export?rows=3&format=csv`, { headers: ws.headers });
    const lines = (await csv.text()).trimEnd().split("\r\n");
    expect(lines).toHaveLength(4);
    expect(lines[0].startsWith("id,seq,")).toBe(true);

    const refused = await fetcher(`${BASE}/__debug/audit/synthetic-export?rows=-1`, { headers: ws.headers });
    expect(refused.status).toBe(422);
  });

  it("reads the caller's workspace page by page and returns only counts", async () => {
    const ws = await createTestWorkspace(fetcher, BASE);
    const db = createDb(env.DB);
    const statements = Array.from({ length: 600 }, (_, i) =>
      auditInsert(db, {
        workspaceId: ws.id,
        actor: { type: "api_key", id: "key_x" },
        action: "task.create",
        resourceType: "task",
        resourceId: `task_${i}`,
      }),
    );
    await db.batch(statements as [never, ...never[]]);
    const response = await fetcher(`${BASE}/__debug/audit/read`, { headers: ws.headers });
    // 600 plus the workspace's creation entries; two pages of 500.
    expect(await response.json()).toEqual({ rows: 602, pages: 2 });
  });
});
