import { and, eq, inArray, sql } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { type LlmRouting, type Plan, tasks, type WorkspaceLimits, workspaces } from "../db/schema.ts";
import { newId } from "../lib/ids.ts";
import { PLAN_LIMITS } from "./plans.ts";

/** Workspaces: plan, limits, budgets and LLM routing. */

export type WorkspaceRow = typeof workspaces.$inferSelect;

export interface QueueDepth {
  pending: number;
  queued: number;
  running: number;
}

export function toWorkspaceView(row: WorkspaceRow, queue?: QueueDepth) {
  return {
    id: row.id,
    name: row.name,
    plan: row.plan,
    limits: row.limits,
    budgets: row.budgets ?? { daily_tokens: null, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null },
    llm: row.llm ?? null,
    audit_retention_days: row.auditRetentionDays,
    created_at: row.createdAt,
    updated_at: row.updatedAt,
    ...(queue ? { queue } : {}),
  };
}

/** Limits as a PATCH names them: absent is unchanged, null (the optional `key_*` ones only) is taken away. */
export type LimitsPatch = { [Name in keyof WorkspaceLimits]?: WorkspaceLimits[Name] | null };

function patchLimits(base: WorkspaceLimits, patch: LimitsPatch = {}): WorkspaceLimits {
  const limits: Record<string, number> = { ...base };
  for (const [name, value] of Object.entries(patch)) {
    if (value === null) delete limits[name];
    else if (value !== undefined) limits[name] = value;
  }
  return limits as unknown as WorkspaceLimits;
}

export function newWorkspaceRow(input: { name: string; plan: Plan; limits?: LimitsPatch }) {
  const nowIso = new Date().toISOString();
  return {
    id: newId("workspace"),
    name: input.name,
    plan: input.plan,
    limits: patchLimits(PLAN_LIMITS[input.plan], input.limits),
    createdAt: nowIso,
    updatedAt: nowIso,
  } satisfies typeof workspaces.$inferInsert;
}

export async function findWorkspace(db: Database, workspaceId: string): Promise<WorkspaceRow | null> {
  const rows = await db.select().from(workspaces).where(eq(workspaces.id, workspaceId)).limit(1);
  return rows[0] ?? null;
}

/** Tasks waiting and running, from the (workspace_id, status, created_at) index. */
export async function queueDepth(db: Database, workspaceId: string): Promise<QueueDepth> {
  const rows = await db
    .select({ status: tasks.status, count: sql<number>`count(*)` })
    .from(tasks)
    .where(and(eq(tasks.workspaceId, workspaceId), inArray(tasks.status, ["pending", "queued", "running"])))
    .groupBy(tasks.status);
  const depth: QueueDepth = { pending: 0, queued: 0, running: 0 };
  for (const row of rows) depth[row.status as keyof QueueDepth] = Number(row.count);
  return depth;
}

export interface WorkspaceChanges {
  name?: string;
  plan?: Plan;
  limits?: LimitsPatch;
  llm?: LlmRouting | null;
}

/** The row after applying changes; a new plan resets limits to its defaults before explicit overrides. */
export function applyWorkspaceChanges(row: WorkspaceRow, changes: WorkspaceChanges): WorkspaceRow {
  const plan = changes.plan ?? row.plan;
  const baseLimits = changes.plan && changes.plan !== row.plan ? PLAN_LIMITS[changes.plan] : row.limits;
  return {
    ...row,
    name: changes.name ?? row.name,
    plan,
    limits: patchLimits(baseLimits, changes.limits),
    llm: changes.llm === undefined ? row.llm : changes.llm,
    updatedAt: new Date().toISOString(),
  };
}

/**
 * Writes what `changes` names (and updated_at), returning the stored row. Writing every field put back what another
 * PATCH had changed since the row was read: a rename by the workspace undid the operator's plan change made meanwhile.
 */
export function updateWorkspaceStatement(db: Database, next: WorkspaceRow, changes: WorkspaceChanges) {
  return db
    .update(workspaces)
    .set({
      ...(changes.name === undefined ? {} : { name: next.name }),
      ...(changes.plan === undefined && changes.limits === undefined ? {} : { plan: next.plan, limits: next.limits }),
      ...(changes.llm === undefined ? {} : { llm: next.llm }),
      updatedAt: next.updatedAt,
    })
    .where(eq(workspaces.id, next.id))
    .returning();
}
