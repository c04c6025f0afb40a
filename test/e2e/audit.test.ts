import { parse } from "csv-parse/sync";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bearer, createTestKey, createTestWorkspace, TEST_ADMIN_TOKEN } from "../support/workspaces.ts";
import { startWorker, type WorkerProcess } from "./harness.ts";

let worker: WorkerProcess;
beforeAll(async () => {
  worker = await startWorker({ vars: { ADMIN_TOKEN: TEST_ADMIN_TOKEN } });
});
afterAll(async () => {
  await worker?.stop();
});

interface Item {
  seq: number;
  action: string;
  actor: { type: string; id: string };
  resource_type: string;
  resource_id: string | null;
  request_id: string | null;
  user_agent: string | null;
  hash: string | null;
}

const USER_AGENT = "audit-e2e/1.0";

async function call(path: string, init: RequestInit & { headers?: Record<string, string> } = {}) {
  return fetch(`${worker.baseUrl}${path}`, {
    ...init,
    headers: {
      "User-Agent": USER_AGENT,
      ...(init.body ? { "Content-Type": "application/json" } : {}),
      ...init.headers,
    },
  });
}

async function hasRoute(method: string, path: string): Promise<boolean> {
  const document = (await (await call("/openapi.json")).json()) as { paths: Record<string, Record<string, unknown>> };
  return Boolean(document.paths[path]?.[method]);
}

describe("the audit trail of a scripted session, under wrangler dev", () => {
  it("records every step exactly, exports it as NDJSON and CSV, counts it and verifies it", async () => {
    const ws = await createTestWorkspace(fetch, worker.baseUrl, {
      name: "Audited",
      limits: { requests_per_second: 1000, burst: 1000, max_running_tasks: 10, max_pending_tasks: 100 },
    });
    const writer = await createTestKey(fetch, worker.baseUrl, ws.key, ["tasks:read", "tasks:write"]);
    const auditor = await createTestKey(fetch, worker.baseUrl, ws.key, ["audit:read"]);
    const expected: { action: string; actor: string; resource: string | null }[] = [
      { action: "workspace.create", actor: "operator", resource: ws.id },
      { action: "api_key.create", actor: "operator", resource: ws.keyId },
      { action: "api_key.create", actor: ws.keyId, resource: writer.id },
      { action: "api_key.create", actor: ws.keyId, resource: auditor.id },
    ];

    // Tasks, when the tasks routes are present in this build.
    if (await hasRoute("post", "/api/v1/tasks")) {
      const created = await call("/api/v1/tasks", {
        method: "POST",
        headers: writer.headers,
        body: JSON.stringify({ title: "audited task", type: "testing" }),
      });
      expect(created.status).toBe(202);
      const task = (await created.json()) as { id: string };
      const cancelled = await call(`/api/v1/tasks/${task.id}/cancel`, { method: "POST", headers: writer.headers });
      expect(cancelled.status).toBeLessThan(300);
      expected.push({ action: "task.create", actor: writer.id, resource: task.id });
      expected.push({ action: "task.cancel", actor: writer.id, resource: task.id });
    }

    const patched = await call(`/api/v1/workspaces/${ws.id}`, {
      method: "PATCH",
      headers: { ...bearer(TEST_ADMIN_TOKEN), "X-Request-Id": "e2e-audit-patch-0001" },
      body: JSON.stringify({ name: "Audited, renamed" }),
    });
    expect(patched.status).toBe(200);
    expected.push({ action: "workspace.update", actor: "operator", resource: ws.id });

    const revoked = await call(`/api/v1/api-keys/${writer.id}`, { method: "DELETE", headers: ws.headers });
    expect(revoked.status).toBe(200);
    expected.push({ action: "api_key.revoke", actor: ws.keyId, resource: writer.id });

    // The revoked key is refused; the failure names the workspace, so it is audited (once).
    // Revocation reaches every isolate within seconds (keys are cached briefly): wait for the refusal.
    let refused = false;
    for (const startedMs = Date.now(); !refused && Date.now() - startedMs < 8_000; ) {
      refused = (await call("/api/v1/whoami", { headers: writer.headers })).status === 401;
      if (!refused) await new Promise((wake) => setTimeout(wake, 200));
    }
    expect(refused).toBe(true);
    expect((await call("/api/v1/whoami", { headers: bearer("mgx_not_a_real_key_0000000000") })).status).toBe(401);
    expected.push({ action: "auth.failed", actor: writer.id, resource: null });

    // auth.failed is written in the background: wait for it.
    let trail: Item[] = [];
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const page = (await (await call("/api/v1/audit-logs?limit=100", { headers: auditor.headers })).json()) as {
        data: Item[];
      };
      trail = page.data.reverse();
      if (trail.some((item) => item.action === "auth.failed")) break;
      await new Promise((wake) => setTimeout(wake, 200));
    }
    expect(
      trail.map((item) => ({
        action: item.action,
        actor: item.actor.id,
        resource: item.action === "auth.failed" ? null : item.resource_id,
      })),
    ).toEqual(expected);
    expect(trail.map((item) => item.seq)).toEqual(expected.map((_, i) => i + 1));
    const update = trail.find((item) => item.action === "workspace.update");
    expect(update).toMatchObject({ request_id: "e2e-audit-patch-0001", user_agent: USER_AGENT });

    // NDJSON export: the same trail, oldest first, plus the export itself.
    const ndjson = await call("/api/v1/audit-logs/export?format=json", { headers: auditor.headers });
    expect(ndjson.headers.get("content-type")).toContain("application/x-ndjson");
    const exported = (await ndjson.text())
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as Item);
    expect(exported.map((item) => item.action)).toEqual([...expected.map((step) => step.action), "audit.export"]);

    // CSV export, parsed back by a real RFC 4180 parser.
    const csvResponse = await call("/api/v1/audit-logs/export?format=csv", { headers: auditor.headers });
    expect(csvResponse.headers.get("content-type")).toContain("text/csv");
    const records = parse(await csvResponse.text(), { columns: true }) as Record<string, string>[];
    expect(records.map((record) => record.action)).toEqual([
      ...expected.map((step) => step.action),
      "audit.export",
      "audit.export",
    ]);
    for (const [index, item] of exported.entries()) {
      expect(records[index]).toMatchObject({
        id: (item as Item & { id: string }).id,
        seq: String(item.seq),
        actor_id: item.actor.id,
        resource_type: item.resource_type,
      });
    }
    expect(JSON.parse(records[0].changes).after).toMatchObject({ name: "Audited" });

    const stats = (await (await call("/api/v1/audit-logs/stats", { headers: auditor.headers })).json()) as {
      total: number;
      by_action: { action: string; count: number }[];
      by_day: { day: string; count: number }[];
    };
    const total = expected.length + 2;
    expect(stats.total).toBe(total);
    expect(stats.by_action.find((row) => row.action === "api_key.create")?.count).toBe(3);
    expect(stats.by_day.reduce((sum, row) => sum + row.count, 0)).toBe(total);

    const verify = (await (await call("/api/v1/audit-logs/verify", { headers: auditor.headers })).json()) as {
      ok: boolean;
      checked_entries: number;
    };
    expect(verify).toMatchObject({ ok: true, checked_entries: total });

    // Only audit:read keys may read, and only their own workspace.
    expect((await call("/api/v1/audit-logs", { headers: ws.headers })).status).toBe(200);
    const other = await createTestWorkspace(fetch, worker.baseUrl, { scopes: ["tasks:read"] });
    expect((await call("/api/v1/audit-logs", { headers: other.headers })).status).toBe(403);
  });
});
