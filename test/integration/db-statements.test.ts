import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { type AuditEntryInput, auditInsert, auditStatement, sealChain, verifyChain } from "../../src/audit/index.ts";
import { createDb } from "../../src/db/client.ts";
import { auditLogs, tasks, workspaces } from "../../src/db/schema.ts";
import { insertStatement } from "../../src/db/statements.ts";
import { newId } from "../../src/lib/ids.ts";

/** The plain-statement inserts of hot paths write exactly what drizzle's builder writes. */

const db = createDb(env.DB);

async function newWorkspace(): Promise<string> {
  const id = newId("workspace");
  await db.insert(workspaces).values({
    id,
    name: "statements test",
    limits: { requests_per_second: 10, burst: 20, max_running_tasks: 5, max_pending_tasks: 100 },
  });
  return id;
}

const readTask = async (id: string) => (await db.select().from(tasks).where(eq(tasks.id, id)))[0];

describe("insertStatement", () => {
  it("stores a row, JSON columns and nulls included, as drizzle's insert does", async () => {
    const workspaceId = await newWorkspace();
    const row = {
      workspaceId,
      title: "plain statement",
      description: null,
      type: "testing" as const,
      priority: "high" as const,
      status: "queued" as const,
      agentConfig: { model: "simulated:sim-1", nested: { tools: ["write_file"], n: 1.5 } },
      estimatedTokens: 1_200,
      costUsd: 0.25,
      createdAt: "2026-11-26T00:00:00.000Z",
      updatedAt: "2026-11-26T00:00:00.000Z",
    };
    const [plainId, drizzleId] = [newId("task"), newId("task")];
    await env.DB.batch([insertStatement(env.DB, tasks, { id: plainId, ...row })]);
    await db.insert(tasks).values({ id: drizzleId, ...row });

    const [plain, viaDrizzle] = [await readTask(plainId), await readTask(drizzleId)];
    expect(plain.agentConfig).toEqual(row.agentConfig);
    expect({ ...plain, id: "x" }).toEqual({ ...viaDrizzle, id: "x" });
  });

  it("leaves columns the row does not set to their SQL defaults", async () => {
    const workspaceId = await newWorkspace();
    const id = newId("task");
    await insertStatement(env.DB, tasks, { id, workspaceId, title: "defaults", type: "refactoring" }).run();
    expect(await readTask(id)).toMatchObject({ priority: "medium", status: "pending", attempts: 0, costUsd: 0 });
    expect((await readTask(id)).createdAt).toMatch(/^\d{4}-\d\d-\d\dT/);
  });

  it("refuses a key that is not a column of the table", () => {
    expect(() =>
      insertStatement(env.DB, tasks, { id: "t", workspaceId: "w", title: "x", type: "testing", nope: 1 } as never),
    ).toThrow(/tasks has no column nope/);
  });
});

describe("auditStatement", () => {
  const entry = (workspaceId: string, resourceId: string): AuditEntryInput => ({
    workspaceId,
    actor: { type: "api_key", id: "key_test", display: "test key" },
    action: "task.create",
    resourceType: "task",
    resourceId,
    requestId: `req-${crypto.randomUUID()}`,
    changes: { after: { title: "t", status: "queued" } },
    metadata: { idempotency_key: "k-1" },
  });

  it("continues the chain exactly like auditInsert: next seq, same columns, and it seals and verifies", async () => {
    const workspaceId = await newWorkspace();
    await db.batch([auditInsert(db, entry(workspaceId, "task_a"))]);
    await env.DB.batch([auditStatement(env.DB, entry(workspaceId, "task_b"))]);
    await db.batch([auditInsert(db, entry(workspaceId, "task_c"))]);
    await sealChain(db, workspaceId);

    const rows = await db.select().from(auditLogs).where(eq(auditLogs.workspaceId, workspaceId));
    const sorted = rows.sort((a, b) => a.seq - b.seq);
    expect(sorted.map((row) => [row.seq, row.resourceId])).toEqual([
      [1, "task_a"],
      [2, "task_b"],
      [3, "task_c"],
    ]);
    const [viaBuilder, plain] = sorted;
    const comparable = (row: (typeof rows)[number]) => ({
      ...row,
      id: "x",
      seq: 0,
      resourceId: "x",
      requestId: "x",
      createdAt: "x",
      prevHash: "x",
      hash: "x",
    });
    expect(comparable(plain)).toEqual(comparable(viaBuilder));
    expect(plain.createdAt >= viaBuilder.createdAt).toBe(true);
    expect((await verifyChain(db, workspaceId)).ok).toBe(true);
  });
});
