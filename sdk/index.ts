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
  type CallOptions,
  MgxApiError,
  MgxClient,
  type MgxClientOptions,
  type Query,
  type RequestOptions,
} from "./rest.ts";
// Every resource, input and query type the client takes or answers (Task, Usage, NewTask, TaskListQuery, …).
export type * from "./types.ts";
