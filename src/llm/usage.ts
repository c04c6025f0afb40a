import { and, eq, gte, lte, sql } from "drizzle-orm";
import { type AuditEntryInput, auditInsert } from "../audit/index.ts";
import type { Database } from "../db/client.ts";
import { usageRecords } from "../db/schema.ts";
import type { TenantDb } from "../db/tenant.ts";
import { newId } from "../lib/ids.ts";
import type { UsageRecord, UsageSink } from "./router.ts";

/** Usage rows in D1: one per (workspace, chargeKey), so a retried consumer never charges twice. */

export function d1UsageSink(db: Database, metrics?: AnalyticsEngineDataset): UsageSink {
  return {
    async record(row: UsageRecord, audit?: AuditEntryInput): Promise<void> {
      const insert = db
        .insert(usageRecords)
        .values({
          id: newId("usage"),
          workspaceId: row.workspaceId,
          chargeKey: row.chargeKey,
          taskId: row.taskId,
          runId: row.runId,
          provider: row.provider,
          model: row.model,
          promptTokens: row.usage.prompt_tokens,
          completionTokens: row.usage.completion_tokens,
          totalTokens: row.usage.total_tokens,
          costUsd: row.costUsd,
          simulated: row.simulated,
          day: new Date().toISOString().slice(0, 10),
          requestId: row.requestId,
        })
        .onConflictDoNothing({ target: [usageRecords.workspaceId, usageRecords.chargeKey] });
      if (audit) await db.batch([insert, auditInsert(db, audit)]);
      else await insert;
      // Raw points for dashboards; the `simulated` label travels with every point.
      metrics?.writeDataPoint({
        indexes: [row.workspaceId],
        blobs: ["llm.call", row.provider, row.model, row.simulated ? "simulated" : "real"],
        doubles: [row.latencyMs, row.usage.prompt_tokens, row.usage.completion_tokens, row.costUsd],
      });
    },
  };
}

export interface UsageSummaryRow {
  day: string;
  provider: string;
  model: string;
  simulated: boolean;
  calls: number;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  cost_usd: number;
}

/** Tokens and cost by day, provider and model over [fromDay, toDay], from the (workspace, day, provider, model) index. */
export async function usageSummary(tenant: TenantDb, fromDay: string, toDay: string): Promise<UsageSummaryRow[]> {
  const rows = await tenant.db
    .select({
      day: usageRecords.day,
      provider: usageRecords.provider,
      model: usageRecords.model,
      simulated: usageRecords.simulated,
      calls: sql<number>`count(*)`,
      promptTokens: sql<number>`sum(${usageRecords.promptTokens})`,
      completionTokens: sql<number>`sum(${usageRecords.completionTokens})`,
      totalTokens: sql<number>`sum(${usageRecords.totalTokens})`,
      costUsd: sql<number>`sum(${usageRecords.costUsd})`,
    })
    .from(usageRecords)
    .where(tenant.owns(usageRecords, gte(usageRecords.day, fromDay), lte(usageRecords.day, toDay)))
    .groupBy(usageRecords.day, usageRecords.provider, usageRecords.model, usageRecords.simulated)
    .orderBy(usageRecords.day, usageRecords.provider, usageRecords.model);
  return rows.map((row) => ({
    day: row.day,
    provider: row.provider,
    model: row.model,
    simulated: Boolean(row.simulated),
    calls: Number(row.calls),
    prompt_tokens: Number(row.promptTokens),
    completion_tokens: Number(row.completionTokens),
    total_tokens: Number(row.totalTokens),
    cost_usd: Math.round(Number(row.costUsd) * 1e8) / 1e8,
  }));
}

/** The usage row of one charge, for tests and idempotency checks. */
export async function findCharge(db: Database, workspaceId: string, chargeKey: string) {
  const rows = await db
    .select()
    .from(usageRecords)
    .where(and(eq(usageRecords.workspaceId, workspaceId), eq(usageRecords.chargeKey, chargeKey)))
    .limit(1);
  return rows[0] ?? null;
}
