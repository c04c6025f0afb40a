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

export function newWorkspaceRow(input: { name: string; plan: Plan; limits?: Partial<WorkspaceLimits> }) {
  const nowIso = new Date().toISOString();
  return {
    id: newId("workspace"),
    name: input.name,
    plan: input.plan,
    limits: { ...PLAN_LIMITS[input.plan], ...input.limits },
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
  limits?: Partial<WorkspaceLimits>;
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
    limits: { ...baseLimits, ...changes.limits },
    llm: changes.llm === undefined ? row.llm : changes.llm,
    updatedAt: new Date().toISOString(),
  };
}

export function updateWorkspaceStatement(db: Database, next: WorkspaceRow) {
  return db
    .update(workspaces)
    .set({ name: next.name, plan: next.plan, limits: next.limits, llm: next.llm, updatedAt: next.updatedAt })
    .where(eq(workspaces.id, next.id));
}
