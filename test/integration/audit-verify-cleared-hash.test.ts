import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { auditInsert, verifyChain } from "../../src/audit/index.ts";
import { runAuditRetention } from "../../src/audit/retention.ts";
import { createDb } from "../../src/db/client.ts";
import { auditLogs, workspaces } from "../../src/db/schema.ts";
import { newId } from "../../src/lib/ids.ts";

const db = createDb(env.DB);
const silent = { info() {}, warn() {}, error() {} };

async function newWorkspace(retentionDays = 365): Promise<string> {
  const id = newId("workspace");
  await db.insert(workspaces).values({
    id,
    name: "audit test",
    limits: { requests_per_second: 10, burst: 20, max_running_tasks: 5, max_pending_tasks: 100 },
    auditRetentionDays: retentionDays,
  });
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
        resourceId: newId("task"),
      }),
    ]);
}

async function row(workspaceId: string, seq: number) {
  const found = await db.select().from(auditLogs).where(eq(auditLogs.workspaceId, workspaceId));
  return found.find((r) => r.seq === seq);
}

describe("an entry edited behind the API's back with its hash cleared", () => {
  it("is named itself, and the sealer does not give the edited content a fresh hash", async () => {
    const ws = await newWorkspace();
    await writeEntries(ws, 6);
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
    const ws = await newWorkspace();
    await writeEntries(ws, 4);
    expect((await verifyChain(db, ws)).ok).toBe(true);
    await env.DB.prepare(
      "UPDATE audit_logs SET resource_id = 'forged', hash = NULL, prev_hash = NULL WHERE workspace_id = ? AND seq = 4",
    )
      .bind(ws)
      .run();
    await writeEntries(ws, 2);
    const report = await verifyChain(db, ws);
    expect(report.first_broken).toMatchObject({ seq: 4, reason: "unsealed" });
    expect((await row(ws, 4))?.hash).toBeNull();
  });

  it("retention keeps the edited entry, and verify still names it afterwards", async () => {
    const ws = await newWorkspace(30);
    const nowMs = Date.now();
    await writeEntries(ws, 5);
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
