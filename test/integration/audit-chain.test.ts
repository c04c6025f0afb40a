import { env } from "cloudflare:workers";
import { eq, sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { type ChainedRow, entryHash } from "../../src/audit/canonical.ts";
import { auditInsert, recordAudit, sealChain, verifyChain } from "../../src/audit/index.ts";
import { runAuditRetention } from "../../src/audit/retention.ts";
import { createDb } from "../../src/db/client.ts";
import { auditLogs, tasks } from "../../src/db/schema.ts";
import { newId } from "../../src/lib/ids.ts";
import { handleScheduled } from "../../src/scheduled.ts";
import { auditEntry, newAuditWorkspace, writeAuditEntries } from "../support/audit.ts";

const db = createDb(env.DB);
const silent = { info() {}, warn() {}, error() {} };

function taskInsert(workspaceId: string, id = newId("task")) {
  return db.insert(tasks).values({ id, workspaceId, title: "t", type: "testing" });
}

async function rows(workspaceId: string) {
  return db.select().from(auditLogs).where(eq(auditLogs.workspaceId, workspaceId)).orderBy(auditLogs.seq);
}

describe("atomic with the mutation", () => {
  it("the entry commits with its mutation in one batch", async () => {
    const ws = await newAuditWorkspace();
    const taskId = newId("task");
    await db.batch([taskInsert(ws, taskId), auditInsert(db, auditEntry(ws, { resourceId: taskId }))]);
    const written = await rows(ws);
    expect(written).toHaveLength(1);
    expect(written[0]).toMatchObject({ seq: 1, resourceId: taskId, hash: null });
  });

  it("a failing batch leaves neither the change nor its entry", async () => {
    const ws = await newAuditWorkspace();
    const taskId = newId("task");
    await expect(
      db.batch([taskInsert(ws, taskId), auditInsert(db, auditEntry(ws)), taskInsert(ws, taskId)]),
    ).rejects.toThrow();
    expect(await rows(ws)).toHaveLength(0);
    expect(await db.select().from(tasks).where(eq(tasks.id, taskId))).toHaveLength(0);
  });
});

describe("hash chain", () => {
  it("200 concurrent mutations form one line that verifies, however many sealers race", async () => {
    const ws = await newAuditWorkspace();
    await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        db.batch([taskInsert(ws), auditInsert(db, auditEntry(ws, { metadata: { writer: i } }))]),
      ),
    );
    const written = await rows(ws);
    expect(written.map((row) => row.seq)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    // created_at never decreases along seq.
    for (let i = 1; i < written.length; i++) expect(written[i].createdAt >= written[i - 1].createdAt).toBe(true);

    const sealed = await Promise.all(Array.from({ length: 5 }, () => sealChain(db, ws)));
    expect(Math.max(...sealed)).toBeGreaterThan(0);
    const report = await verifyChain(db, ws);
    expect(report).toMatchObject({ ok: true, checked_entries: 200, first_seq: 1, last_seq: 200, first_broken: null });
    expect(report.head.seq).toBe(200);
  });

  it("names an entry edited directly in D1", async () => {
    const ws = await newAuditWorkspace();
    await writeAuditEntries(ws, 10);
    expect((await verifyChain(db, ws)).ok).toBe(true);
    await env.DB.prepare("UPDATE audit_logs SET actor_id = 'someone_else' WHERE workspace_id = ? AND seq = 4")
      .bind(ws)
      .run();
    const report = await verifyChain(db, ws);
    expect(report.ok).toBe(false);
    const edited = (await rows(ws))[3];
    expect(report.first_broken).toMatchObject({ seq: 4, id: edited.id, reason: "hash_mismatch" });
  });

  it("names a deleted entry, in the middle or at the end", async () => {
    const ws = await newAuditWorkspace();
    await writeAuditEntries(ws, 8);
    await verifyChain(db, ws);
    await env.DB.prepare("DELETE FROM audit_logs WHERE workspace_id = ? AND seq = 5").bind(ws).run();
    expect((await verifyChain(db, ws)).first_broken).toMatchObject({ seq: 5, id: null, reason: "missing" });

    const tail = await newAuditWorkspace();
    await writeAuditEntries(tail, 6);
    await verifyChain(db, tail);
    await env.DB.prepare("DELETE FROM audit_logs WHERE workspace_id = ? AND seq >= 5").bind(tail).run();
    expect((await verifyChain(db, tail)).first_broken).toMatchObject({ seq: 5, reason: "missing" });
  });

  it("an edit whose hash was recomputed still breaks the link to the next entry", async () => {
    const ws = await newAuditWorkspace();
    await writeAuditEntries(ws, 5);
    await verifyChain(db, ws);
    await env.DB.prepare(
      "UPDATE audit_logs SET action = 'task.cancel', hash = 'f' || substr(hash, 2) WHERE workspace_id = ? AND seq = 2",
    )
      .bind(ws)
      .run();
    const report = await verifyChain(db, ws);
    expect(report.first_broken?.seq).toBe(2);
    // Forge the hash properly: the next entry's prev_hash no longer matches.
    const [first, second] = await env.DB.prepare(
      "SELECT * FROM audit_logs WHERE workspace_id = ? AND seq <= 2 ORDER BY seq",
    )
      .bind(ws)
      .all<ChainedRow & { hash: string }>()
      .then((result) => result.results);
    const forged = await entryHash(first.hash, second);
    await env.DB.prepare("UPDATE audit_logs SET hash = ? WHERE id = ?").bind(forged, second.id).run();
    expect((await verifyChain(db, ws)).first_broken).toMatchObject({ seq: 3, reason: "link_mismatch" });
  });

  it("walks a long chain in several calls from checkpoints, and notices what changed between them", async () => {
    const ws = await newAuditWorkspace();
    await writeAuditEntries(ws, 12);
    const first = await verifyChain(db, ws, { maxEntries: 5 });
    expect(first).toMatchObject({ ok: true, complete: false, checked_entries: 5, first_seq: 1, last_seq: 5 });
    const stored = await rows(ws);
    expect(first.next).toEqual({ after_seq: 5, after_hash: stored[4].hash });
    const second = await verifyChain(db, ws, { from: first.next!, maxEntries: 5 });
    expect(second).toMatchObject({ ok: true, complete: false, first_seq: 6, last_seq: 10 });
    // Exactly what is left: the walk knows it reached the head.
    const third = await verifyChain(db, ws, { from: second.next!, maxEntries: 2 });
    expect(third).toMatchObject({ ok: true, complete: true, next: null, first_seq: 11, last_seq: 12 });

    // The checkpoint's entry rewritten after it was verified: the next call says so.
    // A first hex digit that differs from the stored one ('f' || … alone was a no-op one time in sixteen).
    await env.DB.prepare(
      `UPDATE audit_logs SET hash = (CASE WHEN substr(hash, 1, 1) = 'f' THEN '0' ELSE 'f' END) || substr(hash, 2)
       WHERE workspace_id = ? AND seq = 10`,
    )
      .bind(ws)
      .run();
    expect(await verifyChain(db, ws, { from: second.next!, maxEntries: 5 })).toMatchObject({
      ok: false,
      complete: true,
      first_broken: { seq: 10, reason: "link_mismatch" },
    });
    await env.DB.prepare("DELETE FROM audit_logs WHERE workspace_id = ? AND seq = 5").bind(ws).run();
    expect((await verifyChain(db, ws, { from: first.next!, maxEntries: 5 })).first_broken).toMatchObject({
      seq: 5,
      reason: "missing",
    });
  });

  it("entries of different workspaces are separate chains", async () => {
    const [a, b] = [await newAuditWorkspace(), await newAuditWorkspace()];
    await db.batch([auditInsert(db, auditEntry(a)), auditInsert(db, auditEntry(b)), auditInsert(db, auditEntry(a))]);
    expect((await rows(a)).map((row) => row.seq)).toEqual([1, 2]);
    expect((await rows(b)).map((row) => row.seq)).toEqual([1]);
    expect((await verifyChain(db, a)).ok && (await verifyChain(db, b)).ok).toBe(true);
  });
});

describe("what an entry keeps", () => {
  it("redacts secrets in changes and metadata, and records the request's fields", async () => {
    const ws = await newAuditWorkspace();
    await recordAudit(db, {
      ...auditEntry(ws, { action: "api_key.create", resourceType: "api_key" }),
      ip: "203.0.113.9",
      userAgent: "curl/8.5",
      traceId: "0af7651916cd43dd8448eb211c80319c",
      changes: { before: null, after: { name: "ci", api_key: "mgx_abcdefghijklmnop", note: "Bearer abc.def" } },
      metadata: { token: "secret-value", scopes: ["tasks:read"] },
    });
    const [row] = await rows(ws);
    expect(JSON.parse(row.changes as string)).toEqual({
      before: null,
      after: { api_key: "[REDACTED]", name: "ci", note: "[REDACTED]" },
    });
    expect(JSON.parse(row.metadata as string)).toEqual({ scopes: ["tasks:read"], token: "[REDACTED]" });
    expect(row).toMatchObject({
      ip: "203.0.113.9",
      userAgent: "curl/8.5",
      traceId: "0af7651916cd43dd8448eb211c80319c",
    });
    // recordAudit seals right away.
    expect(row.hash).toMatch(/^[0-9a-f]{64}$/);
  });

  it("refuses an action outside the catalogue", () => {
    expect(() => auditInsert(db, auditEntry("ws_x", { action: "task.explode" as never }))).toThrow(
      /unknown audit action/,
    );
  });
});

describe("retention", () => {
  const DAY_MS = 86_400_000;

  async function backdate(workspaceId: string, seqs: number, startMs: number): Promise<void> {
    // Written before sealing, as if these entries were made long ago, one hour apart.
    for (let seq = 1; seq <= seqs; seq++) {
      await env.DB.prepare("UPDATE audit_logs SET created_at = ? WHERE workspace_id = ? AND seq = ?")
        .bind(new Date(startMs + seq * 3_600_000).toISOString(), workspaceId, seq)
        .run();
    }
  }

  it("archives expired entries to R2 as NDJSON, deletes them, and the chain verifies across the cut", async () => {
    const ws = await newAuditWorkspace(30);
    const nowMs = Date.now();
    await writeAuditEntries(ws, 12);
    await backdate(ws, 7, nowMs - 60 * DAY_MS);
    await runAuditRetention(env, silent, nowMs);

    const left = await rows(ws);
    // 8..12 stay; the cut is recorded as entry 13.
    expect(left.map((row) => row.seq)).toEqual([8, 9, 10, 11, 12, 13]);
    expect(left.at(-1)).toMatchObject({ action: "audit.archive", actorType: "system" });
    expect(JSON.parse(left.at(-1)?.metadata as string)).toMatchObject({ archived_entries: 7, retention_days: 30 });

    const listed = await env.ARTIFACTS.list({ prefix: `audit-archive/${ws}/` });
    expect(listed.objects.map((object) => object.key)).toEqual([
      `audit-archive/${ws}/000000000001-000000000007.ndjson`,
    ]);
    const archived = (await (await env.ARTIFACTS.get(listed.objects[0].key))?.text())?.trim().split("\n") ?? [];
    expect(archived.map((line) => JSON.parse(line).seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(JSON.parse(archived[6]).hash).toBe(left[0].prevHash);

    const report = await verifyChain(db, ws);
    expect(report).toMatchObject({ ok: true, first_seq: 8, last_seq: 13, anchor: { seq: 7 } });

    // A later deletion right after the anchor is still noticed.
    await env.DB.prepare("DELETE FROM audit_logs WHERE workspace_id = ? AND seq = 8").bind(ws).run();
    expect((await verifyChain(db, ws)).first_broken).toMatchObject({ seq: 8, reason: "missing" });
  });

  it("when every entry expires, new entries continue the chain after the anchor", async () => {
    const ws = await newAuditWorkspace(1);
    const nowMs = Date.now();
    await writeAuditEntries(ws, 3);
    await backdate(ws, 3, nowMs - 10 * DAY_MS);
    await runAuditRetention(env, silent, nowMs);
    await env.DB.prepare("DELETE FROM audit_logs WHERE workspace_id = ? AND action = 'audit.archive'").bind(ws).run();
    await db.run(sql`UPDATE audit_chains SET head_seq = 3 WHERE workspace_id = ${ws}`);
    await writeAuditEntries(ws, 2);
    expect((await rows(ws)).map((row) => row.seq)).toEqual([4, 5]);
    expect(await verifyChain(db, ws)).toMatchObject({ ok: true, anchor: { seq: 3 }, first_seq: 4, last_seq: 5 });
  });

  it("runs from the daily cron trigger", async () => {
    const ws = await newAuditWorkspace(30);
    await writeAuditEntries(ws, 3);
    await backdate(ws, 2, Date.now() - 45 * DAY_MS);
    const waits: Promise<unknown>[] = [];
    const ctx = { waitUntil: (work: Promise<unknown>) => waits.push(work), passThroughOnException() {} };
    await handleScheduled(
      { cron: "17 3 * * *", scheduledTime: Date.now(), noRetry() {} } as ScheduledController,
      env,
      ctx as unknown as ExecutionContext,
    );
    await Promise.all(waits);
    expect((await rows(ws)).map((row) => [row.seq, row.action])).toEqual([
      [3, "task.create"],
      [4, "audit.archive"],
    ]);
  });

  it("does not archive past a broken link", async () => {
    const ws = await newAuditWorkspace(30);
    const nowMs = Date.now();
    await writeAuditEntries(ws, 6);
    await backdate(ws, 6, nowMs - 90 * DAY_MS);
    await sealChain(db, ws);
    await env.DB.prepare("UPDATE audit_logs SET resource_id = 'forged' WHERE workspace_id = ? AND seq = 3")
      .bind(ws)
      .run();
    await runAuditRetention(env, silent, nowMs);
    // Nothing was cut: the evidence stays where verify can name it.
    expect((await rows(ws)).map((row) => row.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    expect((await verifyChain(db, ws)).first_broken).toMatchObject({ seq: 3, reason: "hash_mismatch" });
  });
});
