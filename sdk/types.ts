import type { z } from "zod";
import type { AuditFilterSchema } from "../src/audit/filters.ts";
import type { AuditLogSchema, AuditLogStatsSchema, AuditVerificationSchema } from "../src/routes/audit-logs.ts";
import type { BudgetStatusSchema } from "../src/routes/budgets.ts";
import type { ProviderSchema } from "../src/routes/providers.ts";
import type { UsageSchema } from "../src/routes/usage.ts";
import type { WhoamiSchema } from "../src/routes/whoami.ts";
import type {
  CreatedWorkspaceSchema,
  NewWorkspaceSchema,
  WorkspaceOperatorPatchSchema,
} from "../src/routes/workspaces.ts";
import type {
  ArtifactSchema,
  DeadLetterSchema,
  NewTaskSchema,
  ReplayRequestSchema,
  ReplayResultSchema,
  RunSchema,
  TaskSchema,
} from "../src/tasks/schemas.ts";
import type {
  ApiKeySchema,
  BudgetsSchema,
  CreatedApiKeySchema,
  LlmRoutingSchema,
  NewApiKeySchema,
  WorkspaceSchema,
} from "../src/workspaces/schemas.ts";

/**
 * What MgxClient (rest.ts) sends and answers. The resources' types are inferred
 * from the schemas the server validates with and documents in /openapi.json, so
 * the two cannot drift apart; the queries are the list routes' parameters.
 */

export type Task = z.infer<typeof TaskSchema>;
/** What POST /api/v1/tasks takes: `title` and `type`, the rest optional. */
export type NewTask = z.input<typeof NewTaskSchema>;
export type TaskRun = z.infer<typeof RunSchema>;
export type Artifact = z.infer<typeof ArtifactSchema>;
export type Usage = z.infer<typeof UsageSchema>;
/** The four budgets; null is none. */
export type Budgets = z.infer<typeof BudgetsSchema>;
export type BudgetStatus = z.infer<typeof BudgetStatusSchema>;
export type Provider = z.infer<typeof ProviderSchema>;
export type Workspace = z.infer<typeof WorkspaceSchema>;
/** The calling credential: its kind, workspace, scopes and rate limits. */
export type Whoami = z.infer<typeof WhoamiSchema>;
/** What a workspace changes of itself: its name, its LLM routing (null: the deployment's default chain). */
export interface WorkspacePatch {
  name?: string;
  llm?: z.input<typeof LlmRoutingSchema> | null;
}
/** What the operator creates a workspace with: its name, plan (default `free`), limits and first key. */
export type NewWorkspace = z.input<typeof NewWorkspaceSchema>;
/** A new workspace and its first key, whose secret `key` is in this answer only. */
export type CreatedWorkspace = z.infer<typeof CreatedWorkspaceSchema>;
/** What the operator changes of a workspace: name, plan (its limits reset to the plan's), limits. */
export type WorkspaceOperatorPatch = z.input<typeof WorkspaceOperatorPatchSchema>;
export type ApiKey = z.infer<typeof ApiKeySchema>;
/** A new key: with its secret `key`, shown this once. */
export type CreatedApiKey = z.infer<typeof CreatedApiKeySchema>;
export type NewApiKey = z.input<typeof NewApiKeySchema>;
export type DeadLetter = z.infer<typeof DeadLetterSchema>;
/** Which dead letters to replay: `ids`, or a `filter`. */
export type DeadLetterReplay = z.input<typeof ReplayRequestSchema>;
export type DeadLetterReplayResult = z.infer<typeof ReplayResultSchema>;
export type AuditLog = z.infer<typeof AuditLogSchema>;
export type AuditLogStats = z.infer<typeof AuditLogStatsSchema>;
export type AuditVerification = z.infer<typeof AuditVerificationSchema>;
/** The audit log's filters (list, export, stats): actor, action, resource, request id, and a time range. */
export type AuditFilter = z.input<typeof AuditFilterSchema>;

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  request_id: string;
  errors?: { path: string; message: string }[];
  [extension: string]: unknown;
}

export interface Page<T> {
  data: T[];
  next_cursor: string | null;
}

export interface PageQuery {
  /** 1..100, default 20. */
  limit?: number;
  /** A page's `next_cursor`. None, or null (what the last page has), asks for the first page. */
  cursor?: string | null;
}

export interface TaskListQuery extends PageQuery {
  status?: Task["status"];
  type?: Task["type"];
  priority?: Task["priority"];
}

export interface DeadLetterListQuery extends PageQuery {
  /** Only those replayed already (true), or only those not yet (false). */
  replayed?: boolean;
  error_type?: string;
  task_id?: string;
}

export interface UsageQuery {
  /** First day, YYYY-MM-DD (default: 29 days before `to`). */
  from?: string;
  /** Last day, YYYY-MM-DD (default: today, UTC). */
  to?: string;
  provider?: string;
  model?: string;
}

export interface EventListQuery {
  after?: string;
  cursor?: string | null;
  limit?: number;
  types?: readonly string[];
  channels?: readonly string[];
  version?: string;
}
