import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { AuditListQuerySchema, encodeCursor } from "../../src/audit/filters.ts";
import { listQuery } from "../../src/audit/query.ts";
import { createDb } from "../../src/db/client.ts";

/**
 * The list stays fast however long the log grows only if every filter is one
 * index range read in seq order: no full scan, no sort. SQLite's plan says so
 * (bench/audit measures it at 1,000,000 entries).
 */

const db = createDb(env.DB);

async function plan(query: Record<string, string>): Promise<string[]> {
  const { sql, params } = listQuery(db, "ws_plan", AuditListQuerySchema.parse(query)).toSQL();
  const result = await env.DB.prepare(`EXPLAIN QUERY PLAN ${sql}`)
    .bind(...params)
    .all<{ detail: string }>();
  return result.results.map((row) => row.detail);
}

describe("audit list query plans", () => {
  for (const [name, query, index] of [
    ["no filter", {}, "audit_logs_workspace_seq_unique"],
    ["action", { action: "task.create" }, "audit_logs_workspace_action_seq_idx"],
    ["actor", { actor: "key_1" }, "audit_logs_workspace_actor_seq_idx"],
    ["resource", { resource_type: "task", resource_id: "task_1" }, "audit_logs_workspace_resource_seq_idx"],
    ["request id", { request_id: "req-1" }, "audit_logs_workspace_request_seq_idx"],
    ["deep page", { action: "task.cancel", cursor: encodeCursor(5_000) }, "audit_logs_workspace_action_seq_idx"],
    ["time range", { from: "2026-01-01T00:00:00Z", to: "2026-02-01T00:00:00Z" }, "audit_logs_workspace_seq_unique"],
  ] as const) {
    it(`${name}: one index range in seq order, no scan, no sort`, async () => {
      const steps = await plan(query);
      const main = steps.filter((step) => step.includes("audit_logs") && !step.includes("created_at"));
      expect(main.join("\n")).toContain(index);
      for (const step of steps) {
        expect(step).not.toMatch(/^SCAN audit_logs$|USE TEMP B-TREE/);
      }
    });
  }
});
