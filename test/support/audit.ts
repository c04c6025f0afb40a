import { env } from "cloudflare:workers";
import { type AuditEntryInput, auditInsert } from "../../src/audit/index.ts";
import { createDb } from "../../src/db/client.ts";
import { workspaces } from "../../src/db/schema.ts";
import { newId } from "../../src/lib/ids.ts";

/** Audit-chain test fixtures written straight to D1: a workspace, and entries as the API writes them. */

const db = createDb(env.DB);

export async function newAuditWorkspace(retentionDays = 365): Promise<string> {
  const id = newId("workspace");
  await db.insert(workspaces).values({
    id,
    name: "audit test",
    limits: { requests_per_second: 10, burst: 20, max_running_tasks: 5, max_pending_tasks: 100 },
    auditRetentionDays: retentionDays,
  });
  return id;
}

/** A task.create entry by a test key, as the API writes one; `overrides` changes any part of it. */
export function auditEntry(workspaceId: string, overrides: Partial<AuditEntryInput> = {}): AuditEntryInput {
  return {
    workspaceId,
    actor: { type: "api_key", id: "key_test", display: "test key" },
    action: "task.create",
    resourceType: "task",
    resourceId: newId("task"),
    requestId: `req-${crypto.randomUUID()}`,
    ...overrides,
  };
}

/** `count` task.create entries, each in its own batch, as `count` requests would write them. */
export async function writeAuditEntries(workspaceId: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) await db.batch([auditInsert(db, auditEntry(workspaceId))]);
}
