import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { auditInsert } from "../../src/audit/index.ts";
import { createDb } from "../../src/db/client.ts";
import { createTestKey, createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";

const BASE = "http://edge.test";
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));
const db = createDb(env.DB);

function get(path: string, headers: Record<string, string>) {
  return fetcher(`${BASE}${path}`, { headers });
}

async function json<T = any>(response: Response, status = 200): Promise<T> {
  const text = await response.text();
  expect(response.status, text).toBe(status);
  return JSON.parse(text) as T;
}

/** A workspace whose log holds `count` task entries (plus the two from its creation). */
async function workspaceWithEntries(count: number): Promise<TestWorkspace> {
  const ws = await createTestWorkspace(fetcher, BASE);
  const statements = Array.from({ length: count }, (_, i) =>
    auditInsert(db, {
      workspaceId: ws.id,
      actor: { type: "api_key", id: i % 2 ? "key_odd" : "key_even" },
      action: i % 3 === 0 ? "task.cancel" : "task.create",
      resourceType: "task",
      resourceId: `task_${i}`,
      requestId: `req-${ws.id}-${i}`,
      metadata: { i },
    }),
  );
  if (statements.length) await db.batch(statements as [never, ...never[]]);
  return ws;
}

describe("GET /api/v1/audit-logs", () => {
  it("names an API key actor by its key's name and display prefix, and never holds the key", async () => {
    const ws = await createTestWorkspace(fetcher, BASE);
    const created = await fetcher(`${BASE}/api/v1/api-keys`, {
      method: "POST",
      headers: { ...ws.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ name: "deploy", scopes: ["tasks:read"] }),
    });
    expect(created.status).toBe(201);
    const page = await json<{ data: { action: string; actor: { display: string } }[] }>(
      await get("/api/v1/audit-logs?action=api_key.create", ws.headers),
    );
    const raw = JSON.stringify(page);
    // Newest first: this key's creation, then the workspace's first key, made by the operator.
    expect(page.data.map((entry) => entry.actor.display)).toEqual([`test key (${ws.key.slice(0, 12)}…)`, "operator"]);
    expect(raw).not.toContain(ws.key);
    expect(raw).not.toContain("[REDACTED]");
  });

  it("needs credentials, and the audit:read scope", async () => {
    const ws = await createTestWorkspace(fetcher, BASE);
    expect((await get("/api/v1/audit-logs", {})).status).toBe(401);
    const reader = await createTestKey(fetcher, BASE, ws.key, ["tasks:read"]);
    const refused = await json(await get("/api/v1/audit-logs", reader.headers), 403);
    expect(refused.code).toBe("FORBIDDEN");
    const auditor = await createTestKey(fetcher, BASE, ws.key, ["audit:read"]);
    expect((await get("/api/v1/audit-logs", auditor.headers)).status).toBe(200);
  });

  it("shows the workspace's own trail, newest first, and nothing of another workspace", async () => {
    const ws = await createTestWorkspace(fetcher, BASE);
    const other = await workspaceWithEntries(3);
    const page = await json(await get("/api/v1/audit-logs", ws.headers));
    expect(page.data.map((item: any) => item.action)).toEqual(["api_key.create", "workspace.create"]);
    expect(page.data[0]).toMatchObject({
      seq: 2,
      workspace_id: ws.id,
      actor: { type: "operator", id: "operator" },
      resource_type: "api_key",
      resource_id: ws.keyId,
    });
    expect(page.next_cursor).toBeNull();
    const everything = JSON.stringify(page);
    expect(everything).not.toContain(other.id);
  });

  it("filters by action, actor, resource, request id and time; pages with a cursor", async () => {
    const ws = await workspaceWithEntries(30);
    const cancels = await json(await get("/api/v1/audit-logs?action=task.cancel&limit=4", ws.headers));
    expect(cancels.data.map((item: any) => item.resource_id)).toEqual(["task_27", "task_24", "task_21", "task_18"]);
    const rest = await json(
      await get(`/api/v1/audit-logs?action=task.cancel&limit=100&cursor=${cancels.next_cursor}`, ws.headers),
    );
    expect(rest.data.map((item: any) => item.resource_id)).toEqual([
      "task_15",
      "task_12",
      "task_9",
      "task_6",
      "task_3",
      "task_0",
    ]);
    expect(rest.next_cursor).toBeNull();

    const odd = await json(await get("/api/v1/audit-logs?actor=key_odd&actor_type=api_key&limit=100", ws.headers));
    expect(odd.data).toHaveLength(15);
    const one = await json(await get("/api/v1/audit-logs?resource_type=task&resource_id=task_7", ws.headers));
    expect(one.data.map((item: any) => item.metadata)).toEqual([{ i: 7 }]);
    const byRequest = await json(await get(`/api/v1/audit-logs?request_id=req-${ws.id}-9`, ws.headers));
    expect(byRequest.data.map((item: any) => item.resource_id)).toEqual(["task_9"]);

    const future = new Date(Date.now() + 60_000).toISOString();
    const past = new Date(Date.now() - 3_600_000).toISOString();
    expect((await json(await get(`/api/v1/audit-logs?from=${future}`, ws.headers))).data).toEqual([]);
    const inRange = await json(await get(`/api/v1/audit-logs?from=${past}&to=${future}&limit=100`, ws.headers));
    expect(inRange.data).toHaveLength(32);
    expect((await json(await get(`/api/v1/audit-logs?to=${past}`, ws.headers))).data).toEqual([]);
  });

  it("invalid filters are 422 problems", async () => {
    const ws = await createTestWorkspace(fetcher, BASE);
    for (const [query, path] of [
      ["limit=0", "limit"],
      ["limit=101", "limit"],
      ["limit=ten", "limit"],
      ["action=task.explode", "action"],
      ["actor_type=robot", "actor_type"],
      ["resource_id=task_1", "resource_id"],
      ["from=yesterday", "from"],
      ["from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to"],
      ["cursor=not-a-cursor", "cursor"],
    ]) {
      const response = await get(`/api/v1/audit-logs?${query}`, ws.headers);
      const body = await json(response, 422);
      expect(response.headers.get("Content-Type")).toBe("application/problem+json");
      expect(body.code).toBe("VALIDATION_FAILED");
      expect(body.errors.map((error: any) => error.path)).toContain(path);
    }
  });
});

describe("export, stats and verify", () => {
  it("writes U+2028 and U+2029 escaped, so a reader splitting lines on them (Python's splitlines) sees one entry per line", async () => {
    const ws = await workspaceWithEntries(0);
    const note = "first\u2028second\u2029third";
    await db.batch([
      auditInsert(db, {
        workspaceId: ws.id,
        actor: { type: "user", id: "user_1" },
        action: "workspace.update",
        resourceType: "workspace",
        resourceId: ws.id,
        metadata: { note },
      }),
    ]);
    const text = new TextDecoder().decode(
      await (await get("/api/v1/audit-logs/export?format=json&action=workspace.update", ws.headers)).arrayBuffer(),
    );
    const lines = text.split(/\r\n|\n|\u2028|\u2029/).filter((line) => line !== "");
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]).metadata).toEqual({ note });
  });

  it("exports NDJSON and CSV, oldest first, with formula cells neutralised, and records the export", async () => {
    const ws = await workspaceWithEntries(3);
    await db.batch([
      auditInsert(db, {
        workspaceId: ws.id,
        actor: { type: "user", id: '=HYPERLINK("http://evil")', display: "+cmd|' /C calc'!A0" },
        action: "workspace.update",
        resourceType: "workspace",
        resourceId: "-2+3",
        metadata: { note: 'a "quoted", multi\nline value' },
      }),
    ]);
    const ndjsonResponse = await get("/api/v1/audit-logs/export?format=json", ws.headers);
    expect(ndjsonResponse.headers.get("Content-Type")).toContain("application/x-ndjson");
    const lines = new TextDecoder()
      .decode(await ndjsonResponse.arrayBuffer())
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    expect(lines.map((line) => line.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(lines.at(-1)).toMatchObject({ action: "audit.export", metadata: { format: "json" } });

    const csvResponse = await get("/api/v1/audit-logs/export?format=csv&action=workspace.update", ws.headers);
    expect(csvResponse.headers.get("Content-Type")).toContain("text/csv");
    expect(csvResponse.headers.get("Content-Disposition")).toContain("attachment");
    const csv = new TextDecoder().decode(await csvResponse.arrayBuffer());
    const [header, record] = csv.split("\r\n");
    expect(header.split(",").slice(0, 7)).toEqual([
      "id",
      "seq",
      "created_at",
      "actor_type",
      "actor_id",
      "actor_display",
      "action",
    ]);
    expect(record).toContain(`"'=HYPERLINK(""http://evil"")"`);
    expect(record).toContain(`'+cmd|' /C calc'!A0`);
    expect(record).toContain(",'-2+3,");
    expect(csv.endsWith("\r\n")).toBe(true);
  });

  it("answers HEAD of an export with its headers, and records no export (found by fuzz: it recorded one)", async () => {
    const ws = await workspaceWithEntries(3);
    const exportEntries = async () =>
      (
        await env.DB.prepare("SELECT count(*) AS n FROM audit_logs WHERE workspace_id = ? AND action = 'audit.export'")
          .bind(ws.id)
          .first<{ n: number }>()
      )?.n;
    const head = await fetcher(`${BASE}/api/v1/audit-logs/export?format=csv`, { method: "HEAD", headers: ws.headers });
    expect(head.status).toBe(200);
    expect(head.headers.get("Content-Type")).toMatch(/^text\/csv/);
    expect(head.headers.get("Content-Disposition")).toMatch(/^attachment; filename="audit-ws_.*\.csv"$/);
    expect(await head.text()).toBe("");
    expect(await exportEntries()).toBe(0);
    await (await get("/api/v1/audit-logs/export?format=csv", ws.headers)).text();
    expect(await exportEntries()).toBe(1);
  });

  it("counts by action, actor and day", async () => {
    const ws = await workspaceWithEntries(9);
    const stats = await json(await get("/api/v1/audit-logs/stats", ws.headers));
    expect(stats.total).toBe(11);
    expect(stats.by_action).toEqual([
      { action: "task.create", count: 6 },
      { action: "task.cancel", count: 3 },
      { action: "api_key.create", count: 1 },
      { action: "workspace.create", count: 1 },
    ]);
    expect(stats.by_actor[0]).toMatchObject({ actor_type: "api_key", actor_id: "key_even", count: 5 });
    expect(stats.by_day).toEqual([{ day: new Date().toISOString().slice(0, 10), count: 11 }]);
    const filtered = await json(await get("/api/v1/audit-logs/stats?action=task.cancel", ws.headers));
    expect(filtered.total).toBe(3);
    await json(
      await get("/api/v1/audit-logs/stats?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", ws.headers),
      422,
    );
  });

  it("verifies the chain and names an entry edited behind the API's back", async () => {
    const ws = await workspaceWithEntries(5);
    const good = await json(await get("/api/v1/audit-logs/verify", ws.headers));
    expect(good).toMatchObject({ ok: true, checked_entries: 7, first_seq: 1, last_seq: 7, first_broken: null });
    await env.DB.prepare("UPDATE audit_logs SET metadata = '{\"i\":99}' WHERE workspace_id = ? AND seq = 5")
      .bind(ws.id)
      .run();
    const bad = await json(await get("/api/v1/audit-logs/verify", ws.headers));
    expect(bad).toMatchObject({ ok: false, first_broken: { seq: 5, reason: "hash_mismatch" } });
  });

  it("verifies in steps with limit and the checkpoint it returns, and refuses half a checkpoint", async () => {
    const ws = await workspaceWithEntries(5);
    const first = await json(await get("/api/v1/audit-logs/verify?limit=4", ws.headers));
    expect(first).toMatchObject({ ok: true, complete: false, checked_entries: 4, last_seq: 4 });
    const { after_seq, after_hash } = first.next;
    const rest = await json(
      await get(`/api/v1/audit-logs/verify?after_seq=${after_seq}&after_hash=${after_hash}`, ws.headers),
    );
    expect(rest).toMatchObject({ ok: true, complete: true, next: null, first_seq: 5, last_seq: 7 });
    for (const bad of ["after_seq=4", `after_hash=${after_hash}`, "after_seq=4&after_hash=nothex", "limit=0"]) {
      await json(await get(`/api/v1/audit-logs/verify?${bad}`, ws.headers), 422);
    }
  });

  it("entries written by a request are sealed after its response", async () => {
    const ws = await createTestWorkspace(fetcher, BASE);
    await createTestKey(fetcher, BASE, ws.key, ["tasks:read"]);
    // The api_key.create entry was written by a workspace request: sealAfterResponse hashes it.
    await expect
      .poll(async () => {
        const row = await env.DB.prepare("SELECT hash FROM audit_logs WHERE workspace_id = ? AND seq = 3")
          .bind(ws.id)
          .first<{ hash: string | null }>();
        return row?.hash ?? null;
      })
      .toMatch(/^[0-9a-f]{64}$/);
  });
});
