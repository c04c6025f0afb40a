import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { auditInsert, verifyChain } from "../../src/audit/index.ts";
import { runAuditRetention } from "../../src/audit/retention.ts";
import { createDb } from "../../src/db/client.ts";
import { workspaces } from "../../src/db/schema.ts";
import { newId } from "../../src/lib/ids.ts";
import { createTestWorkspace } from "../support/workspaces.ts";

const BASE = "http://edge.test";
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));
const db = createDb(env.DB);
const silent = { info() {}, warn() {}, error() {} };

/** A row written straight into D1, as someone with database access would: a plausible entry at `seq`. */
async function insertBehindTheApi(workspaceId: string, seq: number, createdAt: string): Promise<string> {
  const id = `aud_forged${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  await env.DB.prepare(
    `INSERT INTO audit_logs (id, workspace_id, seq, actor_type, actor_id, action, resource_type, resource_id, created_at)
     VALUES (?, ?, ?, 'operator', 'operator', 'api_key.revoke', 'api_key', 'key_forged', ?)`,
  )
    .bind(id, workspaceId, seq, createdAt)
    .run();
  return id;
}

async function writeEntries(workspaceId: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++)
    await db.batch([
      auditInsert(db, {
        workspaceId,
        actor: { type: "api_key", id: "key_test" },
        action: "task.create",
        resourceType: "task",
        resourceId: `task_${i}`,
      }),
    ]);
}

describe("an entry inserted behind the API's back before the chain's first entry", () => {
  it("at seq 0 or below: listed by GET /audit-logs, so verify names it", async () => {
    const ws = await createTestWorkspace(fetcher, BASE);
    await writeEntries(ws.id, 3);
    const before = (await (await fetcher(`${BASE}/api/v1/audit-logs/verify`, { headers: ws.headers })).json()) as {
      ok: boolean;
    };
    expect(before.ok).toBe(true);

    const forged = await insertBehindTheApi(ws.id, 0, "2020-01-01T00:00:00.000Z");
    const listed = (await (await fetcher(`${BASE}/api/v1/audit-logs?limit=100`, { headers: ws.headers })).json()) as {
      data: { id: string }[];
    };
    expect(listed.data.map((entry) => entry.id)).toContain(forged);

    const report = (await (await fetcher(`${BASE}/api/v1/audit-logs/verify`, { headers: ws.headers })).json()) as {
      ok: boolean;
      first_broken: unknown;
    };
    expect(report.ok).toBe(false);
    expect(report.first_broken).toMatchObject({ seq: 0, id: forged, reason: "link_mismatch" });

    const negative = await insertBehindTheApi(ws.id, -5, "2020-01-01T00:00:00.000Z");
    expect((await verifyChain(db, ws.id)).first_broken).toMatchObject({ seq: -5, id: negative });
  });

  it("at a seq retention archived: the anchor is where the chain starts, so the entry is on no chain", async () => {
    const ws = newId("workspace");
    await db.insert(workspaces).values({
      id: ws,
      name: "audit test",
      limits: { requests_per_second: 10, burst: 20, max_running_tasks: 5, max_pending_tasks: 100 },
      auditRetentionDays: 30,
    });
    const nowMs = Date.now();
    await writeEntries(ws, 6);
    // Entries 1..4 were written long ago (backdated before sealing); 5..6 are recent.
    for (let seq = 1; seq <= 4; seq++)
      await env.DB.prepare("UPDATE audit_logs SET created_at = ? WHERE workspace_id = ? AND seq = ?")
        .bind(new Date(nowMs - 60 * 86_400_000 + seq * 1000).toISOString(), ws, seq)
        .run();
    await runAuditRetention(env, silent, nowMs);
    const cut = await verifyChain(db, ws);
    expect(cut).toMatchObject({ ok: true, anchor: { seq: 4 }, first_seq: 5 });

    const forged = await insertBehindTheApi(ws, 2, new Date(nowMs - 60 * 86_400_000).toISOString());
    const report = await verifyChain(db, ws);
    expect(report.ok).toBe(false);
    expect(report.first_broken).toMatchObject({ seq: 2, id: forged, reason: "link_mismatch" });
  });

  it("an empty workspace still verifies", async () => {
    expect(await verifyChain(db, newId("workspace"))).toMatchObject({
      ok: true,
      checked_entries: 0,
      first_broken: null,
    });
  });
});
