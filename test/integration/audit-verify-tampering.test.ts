import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { verifyChain } from "../../src/audit/index.ts";
import { runAuditRetention } from "../../src/audit/retention.ts";
import { createDb } from "../../src/db/client.ts";
import { auditLogs } from "../../src/db/schema.ts";
import { newId } from "../../src/lib/ids.ts";
import { newAuditWorkspace, writeAuditEntries } from "../support/audit.ts";
import { createTestWorkspace } from "../support/workspaces.ts";
import { BASE, fetcher } from "../unit/tasks/fakes.ts";

const db = createDb(env.DB);
const silent = { info() {}, warn() {}, error() {} };

async function row(workspaceId: string, seq: number) {
  const found = await db.select().from(auditLogs).where(eq(auditLogs.workspaceId, workspaceId));
  return found.find((r) => r.seq === seq);
}

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

describe("an entry edited behind the API's back with its hash cleared", () => {
  it("is named itself, and the sealer does not give the edited content a fresh hash", async () => {
    const ws = await newAuditWorkspace();
    await writeAuditEntries(ws, 6);
    expect((await verifyChain(db, ws)).ok).toBe(true);
    const original = await row(ws, 3);
    await env.DB.prepare(
      "UPDATE audit_logs SET resource_id = 'forged', hash = NULL, prev_hash = NULL WHERE workspace_id = ? AND seq = 3",
    )
      .bind(ws)
      .run();

    const report = await verifyChain(db, ws);
    expect(report.ok).toBe(false);
    expect(report.first_broken).toMatchObject({ seq: 3, id: original?.id, reason: "unsealed" });
    // Still no hash: verify (or any sealer) did not launder the edit into a valid-looking entry.
    expect((await row(ws, 3))?.hash).toBeNull();
    // And again: the verdict does not change on a second call.
    expect((await verifyChain(db, ws)).first_broken).toMatchObject({ seq: 3, reason: "unsealed" });
  });

  it("the newest sealed entry too, and entries written after it stay unsealed behind it", async () => {
    const ws = await newAuditWorkspace();
    await writeAuditEntries(ws, 4);
    expect((await verifyChain(db, ws)).ok).toBe(true);
    await env.DB.prepare(
      "UPDATE audit_logs SET resource_id = 'forged', hash = NULL, prev_hash = NULL WHERE workspace_id = ? AND seq = 4",
    )
      .bind(ws)
      .run();
    await writeAuditEntries(ws, 2);
    const report = await verifyChain(db, ws);
    expect(report.first_broken).toMatchObject({ seq: 4, reason: "unsealed" });
    expect((await row(ws, 4))?.hash).toBeNull();
  });

  it("retention keeps the edited entry, and verify still names it afterwards", async () => {
    const ws = await newAuditWorkspace(30);
    const nowMs = Date.now();
    await writeAuditEntries(ws, 5);
    for (let seq = 1; seq <= 5; seq++)
      await env.DB.prepare("UPDATE audit_logs SET created_at = ? WHERE workspace_id = ? AND seq = ?")
        .bind(new Date(nowMs - 90 * 86_400_000 + seq * 1000).toISOString(), ws, seq)
        .run();
    expect((await verifyChain(db, ws)).ok).toBe(true);
    await env.DB.prepare(
      "UPDATE audit_logs SET resource_id = 'forged', hash = NULL, prev_hash = NULL WHERE workspace_id = ? AND seq = 2",
    )
      .bind(ws)
      .run();
    await runAuditRetention(env, silent, nowMs);
    const left = await db.select().from(auditLogs).where(eq(auditLogs.workspaceId, ws));
    // The chunk holding the edit does not verify, so nothing of it is archived.
    expect(left.map((r) => r.seq).sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5]);
    expect((await verifyChain(db, ws)).first_broken).toMatchObject({ seq: 2, reason: "unsealed" });
  });
});

describe("an entry inserted behind the API's back before the chain's first entry", () => {
  it("at seq 0 or below: listed by GET /audit-logs, so verify names it", async () => {
    const ws = await createTestWorkspace(fetcher, BASE);
    await writeAuditEntries(ws.id, 3);
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
    const ws = await newAuditWorkspace(30);
    const nowMs = Date.now();
    await writeAuditEntries(ws, 6);
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
