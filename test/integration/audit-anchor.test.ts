import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { anchorBookOf, anchorChain, anchorRecentChains } from "../../src/audit/anchor.ts";
import { type ChainedRow, entryHash, GENESIS_HASH } from "../../src/audit/canonical.ts";
import { auditInsert, sealChain, verifyChain } from "../../src/audit/index.ts";
import { createDb } from "../../src/db/client.ts";
import { createTestWorkspace } from "../support/workspaces.ts";

/** The audit chain anchored outside D1, in the workspace's WorkspaceLimiter. */

const BASE = "http://edge.test";
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));
const db = createDb(env.DB);
const quiet = { info() {}, warn() {}, error() {} };

async function chainWith(entries: number): Promise<string> {
  const workspaceId = `ws_anchor_${crypto.randomUUID().slice(0, 8)}`;
  const statements = Array.from({ length: entries }, (_, i) =>
    auditInsert(db, {
      workspaceId,
      actor: { type: "api_key", id: "key_test" },
      action: "task.create",
      resourceType: "task",
      resourceId: `task_${i}`,
    }),
  );
  await db.batch(statements as [never, ...never[]]);
  await sealChain(db, workspaceId);
  return workspaceId;
}

/** What someone with write access to D1 alone can do: change an entry and recompute every hash and the head. */
async function rewriteD1(workspaceId: string, seq: number): Promise<void> {
  await env.DB.prepare("UPDATE audit_logs SET actor_id = 'someone_else' WHERE workspace_id = ? AND seq = ?")
    .bind(workspaceId, seq)
    .run();
  const { results } = await env.DB.prepare("SELECT * FROM audit_logs WHERE workspace_id = ? ORDER BY seq")
    .bind(workspaceId)
    .all<ChainedRow>();
  let prevHash = GENESIS_HASH;
  for (const row of results) {
    const hash = await entryHash(prevHash, row);
    await env.DB.prepare("UPDATE audit_logs SET prev_hash = ?, hash = ? WHERE id = ?")
      .bind(prevHash, hash, row.id)
      .run();
    prevHash = hash;
  }
  await env.DB.prepare("UPDATE audit_chains SET head_hash = ? WHERE workspace_id = ?")
    .bind(prevHash, workspaceId)
    .run();
}

describe("the audit chain's anchor outside D1", () => {
  it("moves forward only, to sealed heads", async () => {
    const workspaceId = await chainWith(4);
    const book = anchorBookOf(env, workspaceId);
    expect(await book.get()).toBeNull();
    expect(await anchorChain(db, workspaceId, book, quiet)).toBe("advanced");
    const head = (await verifyChain(db, workspaceId)).head;
    expect(await book.get()).toMatchObject({ seq: 4, hash: head.hash });
    expect(await anchorChain(db, workspaceId, book, quiet)).toBe("current");
    // A slower sealer reporting an older head changes nothing.
    expect(await book.advance(2, "a".repeat(64))).toMatchObject({ seq: 4, hash: head.hash });
    await expect(book.advance(5, "not a hash")).rejects.toThrow();
    expect(await anchorChain(db, `ws_anchor_empty_${crypto.randomUUID()}`, book, quiet)).toBe("empty");
  });

  it("catches a D1 rewrite with recomputed hashes that the chain alone cannot", async () => {
    const workspaceId = await chainWith(6);
    const book = anchorBookOf(env, workspaceId);
    await anchorChain(db, workspaceId, book, quiet);
    const anchor = await book.get();
    await rewriteD1(workspaceId, 3);

    // The rewritten chain is consistent in itself…
    expect((await verifyChain(db, workspaceId)).ok).toBe(true);
    // …but no longer passes through the anchored entry.
    const report = await verifyChain(db, workspaceId, { externalAnchor: anchor });
    expect(report).toMatchObject({
      ok: false,
      external_anchor: { seq: 6, hash: anchor?.hash },
      first_broken: { seq: 6, reason: "anchor_mismatch" },
    });
    // Nor is the rewrite adopted when the next entry is sealed and anchored.
    await db.batch([
      auditInsert(db, {
        workspaceId,
        actor: { type: "system", id: "test" },
        action: "task.create",
        resourceType: "task",
      }),
    ]);
    await sealChain(db, workspaceId);
    expect(await anchorChain(db, workspaceId, book, { error() {} })).toBe("refused");
    expect(await book.get()).toEqual(anchor);
  });

  it("names the anchored entry when it was deleted with everything after it, head row included", async () => {
    const workspaceId = await chainWith(5);
    const book = anchorBookOf(env, workspaceId);
    await anchorChain(db, workspaceId, book, quiet);
    const { results } = await env.DB.prepare("SELECT hash FROM audit_logs WHERE workspace_id = ? AND seq = 3")
      .bind(workspaceId)
      .all<{ hash: string }>();
    await env.DB.prepare("DELETE FROM audit_logs WHERE workspace_id = ? AND seq >= 4").bind(workspaceId).run();
    await env.DB.prepare("UPDATE audit_chains SET head_seq = 3, head_hash = ? WHERE workspace_id = ?")
      .bind(results[0].hash, workspaceId)
      .run();
    expect((await verifyChain(db, workspaceId)).ok).toBe(true);
    expect((await verifyChain(db, workspaceId, { externalAnchor: await book.get() })).first_broken).toMatchObject({
      seq: 5,
      reason: "missing",
    });
  });

  it("is advanced after a request writes entries, and checked by GET /verify", async () => {
    const ws = await createTestWorkspace(fetcher, BASE);
    // Creating a key writes an audit entry; the seal after the response anchors it.
    const created = await fetcher(`${BASE}/api/v1/api-keys`, {
      method: "POST",
      headers: { ...ws.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ name: "anchored", scopes: ["tasks:read"] }),
    });
    expect(created.status).toBe(201);
    const book = anchorBookOf(env, ws.id);
    const { results } = await env.DB.prepare("SELECT max(seq) AS seq FROM audit_logs WHERE workspace_id = ?")
      .bind(ws.id)
      .all<{ seq: number }>();
    await expect.poll(async () => (await book.get())?.seq ?? 0, { timeout: 5_000 }).toBe(results[0].seq);

    const verify = await fetcher(`${BASE}/api/v1/audit-logs/verify`, { headers: ws.headers });
    expect(await verify.json()).toMatchObject({ ok: true, external_anchor: { seq: results[0].seq } });
  });

  it("is kept current by the five-minute job for chains sealed without anchoring", async () => {
    const workspaceId = await chainWith(3);
    const book = anchorBookOf(env, workspaceId);
    expect(await book.get()).toBeNull();
    await anchorRecentChains(env, quiet);
    expect(await book.get()).toMatchObject({ seq: 3 });
  });
});
