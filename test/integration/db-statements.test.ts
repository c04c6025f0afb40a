import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { type AuditEntryInput, auditInsert, auditStatement, sealChain, verifyChain } from "../../src/audit/index.ts";
import { createDb } from "../../src/db/client.ts";
import { auditLogs, taskRuns, tasks, workspaces } from "../../src/db/schema.ts";
import { insertStatement } from "../../src/db/statements.ts";
import { newId } from "../../src/lib/ids.ts";
import { claimRuns, endStatements } from "../../src/tasks/claims.ts";

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

describe("claims and ends as JSON parameters", () => {
  it("claims a hundred tasks in one batch and records their ends with costs and nulls exactly as given", async () => {
    const workspaceId = await newWorkspace();
    const ids = Array.from({ length: 100 }, () => newId("task"));
    await env.DB.batch(
      ids.map((id) =>
        insertStatement(env.DB, tasks, { id, workspaceId, title: "claim", type: "testing", status: "queued" }),
      ),
    );
    const rows = await Promise.all(ids.map(readTask));
    const claims = rows.map((task) => ({
      task,
      runId: newId("run"),
      messageId: `m-${task.id}`,
      agentId: "agent_testing",
    }));
    const nowIso = new Date().toISOString();
    // One of them was claimed meanwhile by someone else (its attempts moved on): not claimed here.
    await env.DB.prepare("UPDATE tasks SET attempts = 1 WHERE id = ?").bind(ids[0]).run();
    const claimed = await claimRuns(env.DB, claims, nowIso);
    expect(claimed.size).toBe(99);
    expect(claimed.has(ids[0])).toBe(false);
    expect(await readTask(ids[1])).toMatchObject({ status: "running", attempts: 1, startedAt: nowIso });

    // Costs that are not short decimals, and every kind of end.
    const costs = claims.map((_, index) => (index + 1) * 0.1 + 0.2 + index * 1e-9);
    const ends = claims.slice(1).map((claim, index) => ({
      taskId: claim.task.id,
      runId: claim.runId,
      end:
        index % 3 === 0
          ? ({ kind: "completed", result: { status: "success", note: 'quote " é' } } as const)
          : index % 3 === 1
            ? ({ kind: "retry", runStatus: "failed", error: { type: "llm_rate_limited", message: "later" } } as const)
            : ({ kind: "failed", runStatus: "failed", error: { type: "validation_error", message: "bad" } } as const),
      provider: index % 2 === 0 ? "simulated" : null,
      model: "sim-1",
      promptTokens: 100 + index,
      completionTokens: 7,
      costUsd: costs[index + 1],
    }));
    await env.DB.batch(endStatements(env.DB, ends, nowIso));

    const completed = await readTask(ends[0].taskId);
    expect(completed).toMatchObject({
      status: "completed",
      result: { status: "success", note: 'quote " é' },
      error: null,
      finishedAt: nowIso,
      promptTokens: 100,
      completionTokens: 7,
    });
    expect(completed.costUsd).toBe(costs[1]);
    expect(await readTask(ends[1].taskId)).toMatchObject({
      status: "queued",
      finishedAt: null,
      error: { type: "llm_rate_limited", message: "later" },
    });
    expect(await readTask(ends[2].taskId)).toMatchObject({ status: "failed", error: { type: "validation_error" } });
    const runs = await db.select().from(taskRuns).where(eq(taskRuns.workspaceId, workspaceId));
    expect(runs).toHaveLength(99);
    for (const [index, end] of ends.entries()) {
      const run = runs.find((row) => row.id === end.runId);
      expect(run?.costUsd).toBe(end.costUsd);
      expect(run?.provider).toBe(end.provider);
      expect(run?.status).toBe(index % 3 === 0 ? "succeeded" : "failed");
    }
  });
});
