import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { archiveExpired, runAuditRetention } from "../../src/audit/retention.ts";
import { createDb } from "../../src/db/client.ts";
import { auditLogs } from "../../src/db/schema.ts";
import { newAuditWorkspace, writeAuditEntries } from "../support/audit.ts";

/**
 * The daily audit retention walks every workspace. One workspace whose
 * archive cannot be written (R2 failing for it) must keep all its entries,
 * and must not cost every workspace after it its retention for the day.
 */

const db = createDb(env.DB);
const DAY_MS = 86_400_000;

async function seqs(workspaceId: string): Promise<number[]> {
  const rows = await db
    .select({ seq: auditLogs.seq })
    .from(auditLogs)
    .where(eq(auditLogs.workspaceId, workspaceId))
    .orderBy(auditLogs.seq);
  return rows.map((row) => row.seq);
}

async function backdate(workspaceId: string, count: number, startMs: number): Promise<void> {
  for (let seq = 1; seq <= count; seq++) {
    await env.DB.prepare("UPDATE audit_logs SET created_at = ? WHERE workspace_id = ? AND seq = ?")
      .bind(new Date(startMs + seq * 3_600_000).toISOString(), workspaceId, seq)
      .run();
  }
}

/** The real bucket, except that writes under `failingPrefix` fail. */
function bucketFailingFor(failingPrefix: string): R2Bucket {
  return new Proxy(env.ARTIFACTS, {
    get(target, property) {
      if (property === "put") {
        return (key: string, ...rest: unknown[]) => {
          if (key.startsWith(failingPrefix)) return Promise.reject(new Error("R2 put failed: internal error"));
          return (target.put as (...args: unknown[]) => Promise<unknown>).call(target, key, ...rest);
        };
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

describe("audit retention when one workspace's archive fails", () => {
  it("keeps that workspace's entries, archives the others', and fails the run naming the workspace", async () => {
    const broken = await newAuditWorkspace(30);
    const fine = await newAuditWorkspace(30);
    const nowMs = Date.now();
    for (const ws of [broken, fine]) {
      await writeAuditEntries(ws, 4);
      await backdate(ws, 3, nowMs - 60 * DAY_MS);
    }
    const errors: { msg: string; fields?: Record<string, unknown> }[] = [];
    const logger = {
      info() {},
      warn() {},
      error(msg: string, fields?: Record<string, unknown>) {
        errors.push({ msg, fields });
      },
    };

    const failure = await runAuditRetention(
      { DB: env.DB, ARTIFACTS: bucketFailingFor(`audit-archive/${broken}/`) },
      logger,
      nowMs,
    ).then(
      () => null,
      (error: unknown) => error,
    );

    // Nothing of the failing workspace was deleted without its archive.
    expect(await seqs(broken)).toEqual([1, 2, 3, 4]);
    expect((await env.ARTIFACTS.list({ prefix: `audit-archive/${broken}/` })).objects).toEqual([]);
    // The workspace after it got its retention all the same.
    expect((await env.ARTIFACTS.list({ prefix: `audit-archive/${fine}/` })).objects.map((o) => o.key)).toEqual([
      `audit-archive/${fine}/000000000001-000000000003.ndjson`,
    ]);
    expect(await seqs(fine)).toEqual([4, 5]);
    // The run still fails, for the cron to report, and the log says which workspace and why.
    expect(failure).toBeInstanceOf(Error);
    expect((failure as Error).message).toContain(broken);
    expect(errors).toContainEqual(
      expect.objectContaining({
        msg: "audit retention failed for a workspace",
        fields: expect.objectContaining({ workspace_id: broken }),
      }),
    );
  });

  it("stops at entries not sealed yet with a warning, not an error claiming the chain is broken", async () => {
    const ws = await newAuditWorkspace(30);
    const nowMs = Date.now();
    // Written as requests write them: unsealed until a sealer runs (here none has).
    await writeAuditEntries(ws, 3);
    await backdate(ws, 3, nowMs - 60 * DAY_MS);
    const lines: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
    const logger = {
      info(msg: string, fields?: Record<string, unknown>) {
        lines.push({ level: "info", msg, fields });
      },
      warn(msg: string, fields?: Record<string, unknown>) {
        lines.push({ level: "warn", msg, fields });
      },
      error(msg: string, fields?: Record<string, unknown>) {
        lines.push({ level: "error", msg, fields });
      },
    };

    const result = await archiveExpired(db, env.ARTIFACTS, ws, new Date(nowMs - 30 * DAY_MS).toISOString(), logger);

    expect(result).toMatchObject({ archived: 0, stoppedAt: "seq 1" });
    expect(await seqs(ws)).toEqual([1, 2, 3]);
    expect(lines.filter((line) => line.level === "error")).toEqual([]);
    expect(lines).toContainEqual(
      expect.objectContaining({ level: "warn", fields: expect.objectContaining({ workspace_id: ws, seq: 1 }) }),
    );
  });
});
