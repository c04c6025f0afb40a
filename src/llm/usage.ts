import { and, eq, gte, lte } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { insertJsonRowsSql, jsonRowsSql } from "../db/json-rows.ts";
import { usageDaily, usageRecords } from "../db/schema.ts";
import type { TenantDb } from "../db/tenant.ts";
import { Coalescer } from "./coalesce.ts";
import type { UsageRecord, UsageSink } from "./router.ts";
import type { RouteTarget } from "./routing.ts";

/**
 * Usage in D1: a row per (workspace, chargeKey), so a retried consumer never
 * charges twice, and the daily sums GET /api/v1/usage reads (usage_daily),
 * written together per batch.
 */

/**
 * Rows written within this long of each other share one D1 batch. Nothing
 * waits on a usage row (it is written after the response, and budgets are
 * counted by WorkspaceLimiter, not from these rows), and each batch costs a
 * D1 round trip on the isolate's thread. Measured in a loop of 3,000 calls
 * inside the Worker under `wrangler dev` (local D1), a call cost 250 µs of
 * CPU with batches of 100 rows, 233 with 250 and 230 with 500; under
 * bench:router's load, batches of ~45 rows every 100 ms cost about 0.1 ms
 * per call. A row lands within about this long.
 */
const USAGE_FLUSH_DELAY_MS = 500;
/** All the rows go as one statement (one JSON parameter, ~50 KB at this many rows). */
const USAGE_MAX_ROWS_PER_BATCH = 250;

/**
 * A row with the UTC day it was recorded on, taken when the call is charged: its batch goes out up to
 * USAGE_FLUSH_DELAY_MS later (and again on a retry), which near midnight is the next day, while the budget
 * counted the call on this one.
 */
type DatedUsageRecord = UsageRecord & { day: string };

const coalescers = new WeakMap<object, Coalescer<DatedUsageRecord>>();

export function d1UsageSink(d1: D1Database, metrics?: AnalyticsEngineDataset): UsageSink {
  let coalescer = coalescers.get(d1);
  if (!coalescer) {
    coalescer = new Coalescer<DatedUsageRecord>((rows) => writeRows(d1, rows, metrics), {
      delayMs: USAGE_FLUSH_DELAY_MS,
      maxItems: USAGE_MAX_ROWS_PER_BATCH,
    });
    coalescers.set(d1, coalescer);
  }
  const sink = coalescer;
  return { record: (row) => sink.add({ ...row, day: new Date().toISOString().slice(0, 10) }) };
}

const USAGE_COLUMNS = [
  "workspace_id",
  "charge_key",
  "task_id",
  "run_id",
  "provider",
  "model",
  "prompt_tokens",
  "cached_prompt_tokens",
  "completion_tokens",
  "total_tokens",
  "cost_usd",
  "simulated",
  "estimated",
  "day",
  "request_id",
] as const;

/**
 * A batch's rows as bound: usage_records' columns, then whether the row is an attempt's that timed out
 * (UsageRecord.timedOut) or broke mid-answer (UsageRecord.interrupted), which the daily sums count in
 * `timed_out_attempts` or `interrupted_attempts` instead of `calls`. usage_records has no such columns and its insert
 * reads the columns by position, so it ignores the last two. Flags from charging.ts rather than a match on the charge
 * key's `:timed-out:<n>` suffix: a completion's key carries the client's X-Request-Id (`api:<request id>:<call id>`),
 * which may itself contain ":timed-out:", and the sums should not depend on how charging.ts spells a key.
 */
const ROW_COLUMNS = [...USAGE_COLUMNS, "timed_out", "interrupted"] as const;

/** Every row of a batch in one statement (src/db/json-rows.ts); a duplicate charge key, in the table or within the batch, is skipped. */
const INSERT_USAGE_ROWS_SQL = insertJsonRowsSql(
  "usage_records",
  USAGE_COLUMNS,
  "ON CONFLICT (workspace_id, charge_key) DO NOTHING",
);

/**
 * The same rows added to the daily sums, before they are inserted: only those
 * whose charge key is not in the table yet, each key once. A timed-out
 * attempt's row counts in `timed_out_attempts` (one that broke mid-answer in
 * `interrupted_attempts`), not in `calls` or `estimated_calls` (a call
 * retried after a timeout was one call), and its tokens and cost in the
 * sums, as it was charged.
 */
const ADD_TO_DAILY_SQL = `INSERT INTO usage_daily
    (workspace_id, day, provider, model, simulated, calls, estimated_calls, timed_out_attempts, interrupted_attempts,
      prompt_tokens, cached_prompt_tokens, completion_tokens, total_tokens, cost_usd)
  SELECT workspace_id, day, provider, model, simulated, sum(NOT timed_out AND NOT interrupted),
    sum(estimated AND NOT timed_out AND NOT interrupted), sum(timed_out), sum(interrupted), sum(prompt_tokens),
    sum(cached_prompt_tokens), sum(completion_tokens), sum(total_tokens), sum(cost_usd)
  FROM (
    SELECT * FROM ${jsonRowsSql(ROW_COLUMNS)} AS row
    WHERE NOT EXISTS (
      SELECT 1 FROM usage_records AS written
      WHERE written.workspace_id = row.workspace_id AND written.charge_key = row.charge_key
    )
    GROUP BY row.workspace_id, row.charge_key
  )
  WHERE true
  GROUP BY workspace_id, day, provider, model, simulated
  ON CONFLICT (workspace_id, day, provider, model, simulated) DO UPDATE SET
    calls = calls + excluded.calls,
    estimated_calls = estimated_calls + excluded.estimated_calls,
    timed_out_attempts = timed_out_attempts + excluded.timed_out_attempts,
    interrupted_attempts = interrupted_attempts + excluded.interrupted_attempts,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    cached_prompt_tokens = cached_prompt_tokens + excluded.cached_prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens,
    total_tokens = total_tokens + excluded.total_tokens,
    cost_usd = cost_usd + excluded.cost_usd`;

/** One transaction for the batch: its new rows' sums, then the rows, each skipped if its charge key was written before. */
async function writeRows(d1: D1Database, rows: DatedUsageRecord[], metrics?: AnalyticsEngineDataset): Promise<void> {
  const values = rows.map((row) => [
    row.workspaceId,
    row.chargeKey,
    row.taskId,
    row.runId,
    row.provider,
    row.model,
    row.usage.prompt_tokens,
    row.usage.cached_prompt_tokens ?? 0,
    row.usage.completion_tokens,
    row.usage.total_tokens,
    row.costUsd,
    row.simulated ? 1 : 0,
    row.estimated ? 1 : 0,
    row.day,
    row.requestId,
    row.timedOut ? 1 : 0,
    row.interrupted ? 1 : 0,
  ]);
  const json = JSON.stringify(values);
  await d1.batch([d1.prepare(ADD_TO_DAILY_SQL).bind(json), d1.prepare(INSERT_USAGE_ROWS_SQL).bind(json)]);
  for (const row of rows) {
    // Raw points for dashboards; the `simulated` label travels with every point.
    metrics?.writeDataPoint({
      indexes: [row.workspaceId],
      blobs: [
        "llm.call",
        row.provider,
        row.model,
        row.simulated ? "simulated" : "real",
        row.estimated ? "estimated" : "reported",
        // An unfinished attempt's charge is a point of its own, not a call (see ROW_COLUMNS).
        row.timedOut ? "timed_out_attempt" : row.interrupted ? "interrupted_attempt" : "call",
      ],
      doubles: [row.latencyMs, row.usage.prompt_tokens, row.usage.completion_tokens, row.costUsd],
    });
  }
}

export interface UsageSummaryRow {
  day: string;
  provider: string;
  model: string;
  simulated: boolean;
  calls: number;
  estimated_calls: number;
  timed_out_attempts: number;
  interrupted_attempts: number;
  prompt_tokens: number;
  cached_prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  cost_usd: number;
}

export interface UsageQuery {
  fromDay: string;
  toDay: string;
  provider?: string;
  model?: string;
}

/** Tokens and cost by day, provider and model over [fromDay, toDay]: a range of the workspace's daily sums. */
export async function usageSummary(tenant: TenantDb, query: UsageQuery): Promise<UsageSummaryRow[]> {
  const rows = await tenant.db
    .select()
    .from(usageDaily)
    .where(
      tenant.owns(
        usageDaily,
        gte(usageDaily.day, query.fromDay),
        lte(usageDaily.day, query.toDay),
        query.provider === undefined ? undefined : eq(usageDaily.provider, query.provider),
        query.model === undefined ? undefined : eq(usageDaily.model, query.model),
      ),
    )
    .orderBy(usageDaily.day, usageDaily.provider, usageDaily.model, usageDaily.simulated);
  return rows.map((row) => ({
    day: row.day,
    provider: row.provider,
    model: row.model,
    simulated: row.simulated,
    calls: row.calls,
    estimated_calls: row.estimatedCalls,
    timed_out_attempts: row.timedOutAttempts,
    interrupted_attempts: row.interruptedAttempts,
    prompt_tokens: row.promptTokens,
    cached_prompt_tokens: row.cachedPromptTokens,
    completion_tokens: row.completionTokens,
    total_tokens: row.totalTokens,
    cost_usd: Math.round(row.costUsd * 1e8) / 1e8,
  }));
}

/** The models a workspace was charged for from `sinceDay` (YYYY-MM-DD, UTC) on. */
export async function modelsUsedSince(tenant: TenantDb, sinceDay: string): Promise<RouteTarget[]> {
  return tenant.db
    .selectDistinct({ provider: usageDaily.provider, model: usageDaily.model })
    .from(usageDaily)
    .where(tenant.owns(usageDaily, gte(usageDaily.day, sinceDay)));
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
