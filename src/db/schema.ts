import { sql } from "drizzle-orm";
import { index, integer, primaryKey, real, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

/**
 * The D1 schema. Timestamps are ISO 8601 UTC strings with milliseconds
 * (fixed width, so they sort and compare as text). Ids are prefixed ULIDs
 * (src/lib/ids.ts); usage rows, written once per LLM call, are keyed by
 * their natural key instead (see usageRecords). Every tenant-owned row
 * carries `workspace_id`, and every list index starts with it: queries are
 * always scoped to one workspace.
 * Change this file, then `npm run db:generate` for a new migration; never edit
 * an applied one.
 */

const now = sql`(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))`;
const createdAt = () => text("created_at").notNull().default(now);
const updatedAt = () => text("updated_at").notNull().default(now);

export type Plan = "free" | "team" | "enterprise";
export interface WorkspaceLimits {
  requests_per_second: number;
  burst: number;
  max_running_tasks: number;
  max_pending_tasks: number;
  /** A single key's (or user's) own bucket; defaults to the workspace's rate and burst. */
  key_requests_per_second?: number;
  key_burst?: number;
}
export interface WorkspaceBudgets {
  daily_tokens: number | null;
  monthly_tokens: number | null;
  daily_cost_usd: number | null;
  monthly_cost_usd: number | null;
}
export interface LlmRouting {
  strategy: "fallback" | "cost" | "latency" | "weighted";
  chain: { provider: string; model: string; weight?: number; price?: WorkspacePrice | null }[];
}

/**
 * A workspace's own rates (USD per million tokens) for one chain entry, in place of the price table's
 * (src/llm/prices.ts); without `cached_input_per_million_usd`, cached input costs as any input.
 */
export interface WorkspacePrice {
  input_per_million_usd: number;
  output_per_million_usd: number;
  cached_input_per_million_usd?: number | null;
}

export const workspaces = sqliteTable("workspaces", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  plan: text("plan").$type<Plan>().notNull().default("free"),
  limits: text("limits", { mode: "json" }).$type<WorkspaceLimits>().notNull(),
  budgets: text("budgets", { mode: "json" }).$type<WorkspaceBudgets>(),
  llm: text("llm", { mode: "json" }).$type<LlmRouting>(),
  auditRetentionDays: integer("audit_retention_days").notNull().default(365),
  createdAt: createdAt(),
  updatedAt: updatedAt(),
});

export type ApiKeyScope = "tasks:read" | "tasks:write" | "events:read" | "audit:read" | "admin";

export const apiKeys = sqliteTable(
  "api_keys",
  {
    id: text("id").primaryKey(),
    workspaceId: text("workspace_id")
      .notNull()
      .references(() => workspaces.id, { onDelete: "cascade" }),
    name: text("name").notNull(),
    /** SHA-256 of the whole key, hex. The key itself is shown once and never stored. */
    keyHash: text("key_hash").notNull(),
    /** The first characters of the key, so people can tell keys apart. */
    displayPrefix: text("display_prefix").notNull(),
    scopes: text("scopes", { mode: "json" }).$type<ApiKeyScope[]>().notNull(),
    createdBy: text("created_by"),
    createdAt: createdAt(),
    lastUsedAt: text("last_used_at"),
    expiresAt: text("expires_at"),
    revokedAt: text("revoked_at"),
  },
  (table) => [
    uniqueIndex("api_keys_key_hash_unique").on(table.keyHash),
    index("api_keys_workspace_created_idx").on(table.workspaceId, table.createdAt),
  ],
);

export const TASK_TYPES = ["code_generation", "refactoring", "testing", "documentation"] as const;
export const TASK_PRIORITIES = ["low", "medium", "high", "critical"] as const;
export const TASK_STATUSES = [
  "pending",
  "queued",
  "running",
  "completed",
  "failed",
  "cancelled",
  "dead_lettered",
] as const;
export type TaskType = (typeof TASK_TYPES)[number];
export type TaskPriority = (typeof TASK_PRIORITIES)[number];
export type TaskStatus = (typeof TASK_STATUSES)[number];

export const tasks = sqliteTable(
  "tasks",
  {
    id: text("id").primaryKey(),
    workspaceId: text("workspace_id")
      .notNull()
      .references(() => workspaces.id, { onDelete: "cascade" }),
    title: text("title").notNull(),
    description: text("description"),
    type: text("type").$type<TaskType>().notNull(),
    priority: text("priority").$type<TaskPriority>().notNull().default("medium"),
    status: text("status").$type<TaskStatus>().notNull().default("pending"),
    projectId: text("project_id"),
    agentConfig: text("agent_config", { mode: "json" }).$type<Record<string, unknown>>(),
    estimatedTokens: integer("estimated_tokens"),
    idempotencyKey: text("idempotency_key"),
    /** SHA-256 of the create request's body, to tell a replay from a conflicting reuse of the key. */
    requestHash: text("request_hash"),
    maxRetries: integer("max_retries").notNull().default(3),
    attempts: integer("attempts").notNull().default(0),
    createdBy: text("created_by"),
    promptTokens: integer("prompt_tokens").notNull().default(0),
    completionTokens: integer("completion_tokens").notNull().default(0),
    costUsd: real("cost_usd").notNull().default(0),
    result: text("result", { mode: "json" }).$type<Record<string, unknown>>(),
    error: text("error", { mode: "json" }).$type<{ type: string; message: string }>(),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
    queuedAt: text("queued_at"),
    startedAt: text("started_at"),
    finishedAt: text("finished_at"),
    cancelRequestedAt: text("cancel_requested_at"),
  },
  (table) => [
    index("tasks_workspace_created_idx").on(table.workspaceId, table.createdAt),
    index("tasks_workspace_status_created_idx").on(table.workspaceId, table.status, table.createdAt),
    index("tasks_workspace_type_created_idx").on(table.workspaceId, table.type, table.createdAt),
    index("tasks_workspace_priority_created_idx").on(table.workspaceId, table.priority, table.createdAt),
    uniqueIndex("tasks_workspace_idempotency_unique").on(table.workspaceId, table.idempotencyKey),
  ],
);

export const RUN_STATUSES = ["running", "succeeded", "failed", "cancelled", "timed_out"] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];

export const taskRuns = sqliteTable(
  "task_runs",
  {
    id: text("id").primaryKey(),
    workspaceId: text("workspace_id").notNull(),
    taskId: text("task_id")
      .notNull()
      .references(() => tasks.id, { onDelete: "cascade" }),
    attempt: integer("attempt").notNull(),
    /** The queue message that started this attempt: a redelivery finds its run and does not start another. */
    messageId: text("message_id").notNull(),
    status: text("status").$type<RunStatus>().notNull().default("running"),
    agentId: text("agent_id"),
    provider: text("provider"),
    model: text("model"),
    promptTokens: integer("prompt_tokens").notNull().default(0),
    completionTokens: integer("completion_tokens").notNull().default(0),
    costUsd: real("cost_usd").notNull().default(0),
    error: text("error", { mode: "json" }).$type<{ type: string; message: string; retryable: boolean }>(),
    startedAt: text("started_at").notNull().default(now),
    finishedAt: text("finished_at"),
  },
  (table) => [
    uniqueIndex("task_runs_task_attempt_unique").on(table.taskId, table.attempt),
    index("task_runs_message_idx").on(table.messageId),
    index("task_runs_workspace_started_idx").on(table.workspaceId, table.startedAt),
  ],
);

export const artifacts = sqliteTable(
  "artifacts",
  {
    id: text("id").primaryKey(),
    workspaceId: text("workspace_id").notNull(),
    taskId: text("task_id")
      .notNull()
      .references(() => tasks.id, { onDelete: "cascade" }),
    runId: text("run_id"),
    /** Sanitised, relative path inside the task's file space. */
    path: text("path").notNull(),
    r2Key: text("r2_key").notNull(),
    sizeBytes: integer("size_bytes").notNull(),
    mimeType: text("mime_type").notNull(),
    sha256: text("sha256").notNull(),
    version: integer("version").notNull().default(1),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (table) => [
    uniqueIndex("artifacts_task_path_unique").on(table.taskId, table.path),
    index("artifacts_workspace_task_idx").on(table.workspaceId, table.taskId, table.createdAt),
  ],
);

export const deadLetters = sqliteTable(
  "dead_letters",
  {
    id: text("id").primaryKey(),
    workspaceId: text("workspace_id").notNull(),
    taskId: text("task_id").notNull(),
    /** The dead-lettered message; unique so a redelivered DLQ message records one row. */
    messageId: text("message_id").notNull(),
    queue: text("queue").notNull(),
    attempts: integer("attempts").notNull(),
    errorType: text("error_type"),
    errorMessage: text("error_message"),
    payload: text("payload", { mode: "json" }).$type<Record<string, unknown>>().notNull(),
    createdAt: createdAt(),
    replayedAt: text("replayed_at"),
    replayCount: integer("replay_count").notNull().default(0),
  },
  (table) => [
    uniqueIndex("dead_letters_message_unique").on(table.messageId),
    index("dead_letters_workspace_created_idx").on(table.workspaceId, table.createdAt),
    index("dead_letters_workspace_task_idx").on(table.workspaceId, table.taskId),
  ],
);

export const ACTOR_TYPES = ["user", "api_key", "operator", "system"] as const;
export type ActorType = (typeof ACTOR_TYPES)[number];

/**
 * The audit log (src/audit). `seq` is assigned inside the writing batch and
 * `hash` is filled in afterwards by the sealer (src/audit/chain.ts), so rows
 * are written in the same transaction as their mutation without serialising
 * writers on the previous hash. Lists order by `seq`; every list index ends
 * with it so a filtered page is one index range, however long the log.
 * `created_at` never decreases along `seq` (the insert takes the later of now
 * and the previous entry's time), which lets a time range become a seq range.
 */
export const auditLogs = sqliteTable(
  "audit_logs",
  {
    id: text("id").primaryKey(),
    workspaceId: text("workspace_id").notNull(),
    /** Position in the workspace's hash chain, from 1, without gaps. */
    seq: integer("seq").notNull(),
    actorType: text("actor_type").$type<ActorType>().notNull(),
    actorId: text("actor_id").notNull(),
    actorDisplay: text("actor_display"),
    action: text("action").notNull(),
    resourceType: text("resource_type").notNull(),
    resourceId: text("resource_id"),
    requestId: text("request_id"),
    traceId: text("trace_id"),
    ip: text("ip"),
    userAgent: text("user_agent"),
    /** Redacted before/after summary of an update, canonical JSON. */
    changes: text("changes"),
    /** Canonical JSON object. */
    metadata: text("metadata"),
    createdAt: createdAt(),
    /** Null until sealed: the previous entry's hash (or the anchor's, or the genesis value). */
    prevHash: text("prev_hash"),
    /** Null until sealed: SHA-256 of the canonical entry and prev_hash. */
    hash: text("hash"),
  },
  (table) => [
    uniqueIndex("audit_logs_workspace_seq_unique").on(table.workspaceId, table.seq),
    index("audit_logs_workspace_created_seq_idx").on(table.workspaceId, table.createdAt, table.seq),
    index("audit_logs_workspace_action_seq_idx").on(table.workspaceId, table.action, table.seq),
    index("audit_logs_workspace_actor_seq_idx").on(table.workspaceId, table.actorId, table.seq),
    index("audit_logs_workspace_resource_seq_idx").on(
      table.workspaceId,
      table.resourceType,
      table.resourceId,
      table.seq,
    ),
    index("audit_logs_workspace_request_seq_idx").on(table.workspaceId, table.requestId, table.seq),
    // Only rows still waiting for the sealer: small, so finding them costs nothing.
    index("audit_logs_unsealed_idx").on(table.workspaceId, table.seq).where(sql`hash IS NULL`),
  ],
);

/**
 * Per workspace: where the chain starts after retention cut its older part
 * (the anchor: last archived seq and its hash), and the last sealed entry (the
 * head), so deleting the newest entries is noticed as well.
 */
export const auditChains = sqliteTable("audit_chains", {
  workspaceId: text("workspace_id").primaryKey(),
  anchorSeq: integer("anchor_seq").notNull().default(0),
  anchorHash: text("anchor_hash"),
  headSeq: integer("head_seq").notNull().default(0),
  headHash: text("head_hash"),
  archivedCount: integer("archived_count").notNull().default(0),
  updatedAt: updatedAt(),
});

/**
 * One row per charged LLM call. Keyed by (workspace, charge key), which makes
 * a retried settlement a no-op, and without an id of its own: in D1 each index
 * entry is a row written, and an id's index was a fourth write per call that
 * no query read.
 */
export const usageRecords = sqliteTable(
  "usage_records",
  {
    workspaceId: text("workspace_id").notNull(),
    /** Charges are written once: the caller's key for this charge (run + call number, or request id). */
    chargeKey: text("charge_key").notNull(),
    taskId: text("task_id"),
    runId: text("run_id"),
    provider: text("provider").notNull(),
    model: text("model").notNull(),
    promptTokens: integer("prompt_tokens").notNull(),
    /** Of `prompt_tokens`, those the provider read from its prompt cache, charged at its cached-input rate. */
    cachedPromptTokens: integer("cached_prompt_tokens").notNull().default(0),
    completionTokens: integer("completion_tokens").notNull(),
    totalTokens: integer("total_tokens").notNull(),
    costUsd: real("cost_usd").notNull(),
    /** True for the offline `simulated` provider, so its usage is never mistaken for real spend. */
    simulated: integer("simulated", { mode: "boolean" }).notNull().default(false),
    /**
     * True when the provider's own figures never came (a stream its client left, or that failed mid-answer):
     * the tokens are estimated from the prompt and the text delivered (src/llm/tokens.ts).
     */
    estimated: integer("estimated", { mode: "boolean" }).notNull().default(false),
    /** UTC day (YYYY-MM-DD) for per-day aggregation without date functions in the query. */
    day: text("day").notNull(),
    requestId: text("request_id"),
    createdAt: createdAt(),
  },
  (table) => [
    primaryKey({ columns: [table.workspaceId, table.chargeKey] }),
    // Only task calls' rows: most rows are OpenAI-compatible calls without a task, and each indexed row is a
    // write on the hot path (and a billed row written in D1). `task_id = ?` implies `IS NOT NULL`, so lookups use it.
    index("usage_records_workspace_task_idx")
      .on(table.workspaceId, table.taskId)
      .where(sql`${table.taskId} IS NOT NULL`),
  ],
);

/**
 * Usage summed per (workspace, day, provider, model, simulated): what
 * GET /api/v1/usage reads, a row per group instead of one per call (D1 bills
 * rows read). Each batch of usage rows adds what it newly writes, in the same
 * transaction (src/llm/usage.ts).
 */
export const usageDaily = sqliteTable(
  "usage_daily",
  {
    workspaceId: text("workspace_id").notNull(),
    /** UTC day (YYYY-MM-DD). */
    day: text("day").notNull(),
    provider: text("provider").notNull(),
    model: text("model").notNull(),
    simulated: integer("simulated", { mode: "boolean" }).notNull(),
    /** Calls charged: an answer, or the estimate of one cut short or cancelled in flight; not unfinished attempts. */
    calls: integer("calls").notNull(),
    /** Of `calls`, those charged from an estimate (usage_records.estimated). */
    estimatedCalls: integer("estimated_calls").notNull().default(0),
    /**
     * Attempts that timed out while the provider had the request, each charged its prompt (estimated) in a usage row
     * of its own (`<charge key>:timed-out:<n>`): in the tokens and cost, not in `calls` or `estimatedCalls`, so a call
     * retried after a timeout still counts once. Days summed before migration 0009 counted them as calls.
     */
    timedOutAttempts: integer("timed_out_attempts").notNull().default(0),
    /**
     * Attempts whose answer broke after it began (the connection dropped, the provider sent an error in its stream),
     * each charged its prompt and what it wrote (estimated) in a usage row of its own (`<charge key>:interrupted:<n>`),
     * counted as `timedOutAttempts` are. Days summed before migration 0010 charged them nothing.
     */
    interruptedAttempts: integer("interrupted_attempts").notNull().default(0),
    promptTokens: integer("prompt_tokens").notNull(),
    cachedPromptTokens: integer("cached_prompt_tokens").notNull().default(0),
    completionTokens: integer("completion_tokens").notNull(),
    totalTokens: integer("total_tokens").notNull(),
    costUsd: real("cost_usd").notNull(),
  },
  (table) => [primaryKey({ columns: [table.workspaceId, table.day, table.provider, table.model, table.simulated] })],
);

/**
 * Events the workspace's EventHub could not take, after publish()'s retries
 * (about 5 s): kept here rather than lost, and delivered by the every-minute cron
 * (src/events/parked.ts) in the order they were parked. Each keeps its
 * event_id and timestamp; the hub gives it a seq when it lands, and writes an
 * event_id once, so a delivery whose answer was lost does not land twice.
 */
export const parkedEvents = sqliteTable(
  "parked_events",
  {
    /** Parking order: delivery follows it. */
    id: integer("id").primaryKey({ autoIncrement: true }),
    eventId: text("event_id").notNull(),
    workspaceId: text("workspace_id").notNull(),
    /** The whole stamped event (JSON), as publish() would have sent it. */
    event: text("event").notNull(),
    parkedAt: text("parked_at").notNull(),
    attempts: integer("attempts").notNull().default(0),
    lastError: text("last_error"),
  },
  (table) => [
    uniqueIndex("parked_events_event_id_idx").on(table.eventId),
    // The queue consumer asks whether a batch's workspaces have events parked, to land those first.
    index("parked_events_workspace_idx").on(table.workspaceId, table.id),
  ],
);

/**
 * Responses of POST /api/v1/llm/responses stored with `store` true (its default, as OpenAI's): what
 * GET /api/v1/llm/responses/{id} answers, and what a later request continues with `previous_response_id`.
 * A row keeps its own items only, its input (item references resolved) and its output (in `response`): a
 * conversation is rebuilt by walking `previous_response_id` (src/llm/responses-store.ts), so no row holds a
 * conversation's earlier turns again. Kept 30 days, as OpenAI keeps them; a cron deletes expired rows.
 */
export const llmResponses = sqliteTable(
  "llm_responses",
  {
    workspaceId: text("workspace_id").notNull(),
    /** `resp_<call ulid>`. */
    id: text("id").notNull(),
    previousResponseId: text("previous_response_id"),
    /** The response object as it was answered (JSON), its output items in `output`. */
    response: text("response").notNull(),
    /** Its own input items (JSON), each with its id; item references replaced by the items they named. */
    inputItems: text("input_items").notNull(),
    createdAt: createdAt(),
    /** Past it the response is gone for every reader, whether or not the purge has deleted it yet. */
    expiresAt: text("expires_at").notNull(),
  },
  (table) => [
    primaryKey({ columns: [table.workspaceId, table.id] }),
    // The purge's only read: expired rows, oldest first, across workspaces.
    index("llm_responses_expires_idx").on(table.expiresAt),
  ],
);

/**
 * Where each stored item is, by its id (`msg_…`, `fc_…`, or the id a client gave an input item), so that an
 * `item_reference` input item finds it: in its response's `input_items` or `response.output`, at `position`.
 * An id is registered for each response that carries it (a client may send its items again), and deleted with
 * that response: a reference resolves to the newest unexpired response's, so one that carried it first may go.
 */
export const llmResponseItems = sqliteTable(
  "llm_response_items",
  {
    workspaceId: text("workspace_id").notNull(),
    itemId: text("item_id").notNull(),
    responseId: text("response_id").notNull(),
    source: text("source").$type<"input" | "output">().notNull(),
    position: integer("position").notNull(),
  },
  (table) => [primaryKey({ columns: [table.workspaceId, table.itemId, table.responseId] })],
);
