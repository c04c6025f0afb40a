/**
 * The MGX-AI Edge client SDK: `import { MgxClient, EventClient } from "mgx-ai-edge/sdk"`.
 * Browsers and Node 22 (standard fetch and WebSocket); no dependency beyond zod.
 */
export {
  EVENT_TYPES,
  type EventDataMap,
  type EventType,
  type MgxEvent,
  type PublishedEvent,
  validateEvent,
} from "../src/events/catalog.ts";
export { atVersion, upcast } from "../src/events/versioning.ts";
export { type BackoffOptions, backoffDelayMs, DEFAULT_BACKOFF } from "./backoff.ts";
export { RecentIds } from "./dedupe.ts";
export {
  type ConnectionState,
  EventClient,
  type EventClientOptions,
  type GapInfo,
  type WebSocketFactory,
} from "./event-client.ts";
export {
  type ApiKey,
  type Artifact,
  type AuditFilter,
  type AuditLog,
  type AuditLogStats,
  type AuditVerification,
  type BudgetStatus,
  type Budgets,
  type CallOptions,
  type CreatedApiKey,
  type CreatedWorkspace,
  type DeadLetter,
  type DeadLetterListQuery,
  type DeadLetterReplay,
  type DeadLetterReplayResult,
  type EventListQuery,
  MgxApiError,
  MgxClient,
  type MgxClientOptions,
  type NewApiKey,
  type NewTask,
  type NewWorkspace,
  type Page,
  type PageQuery,
  type Problem,
  type Provider,
  type RequestOptions,
  type Task,
  type TaskListQuery,
  type TaskRun,
  type Usage,
  type UsageQuery,
  type Whoami,
  type Workspace,
  type WorkspaceOperatorPatch,
  type WorkspacePatch,
} from "./rest.ts";
