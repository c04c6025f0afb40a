import { env as workerEnv } from "cloudflare:workers";
import { trace } from "@opentelemetry/api";
import type { AppConfig, WorkerEnv } from "../env.ts";
import { newId } from "../lib/ids.ts";
import { Logger } from "../lib/logger.ts";
import { withWriteRetries } from "../lib/retry-write.ts";
import { reportError } from "../observability/sentry.ts";
import {
  type EventDataMap,
  type EventEnvelope,
  type EventType,
  type PublishedEvent,
  publishedVersion,
  validateEvent,
} from "./catalog.ts";
import { parkRefusedEvents } from "./parked.ts";

/**
 * The one way an event enters the system. Domain code names the type, the
 * workspace and the data; this stamps `event_id`, `timestamp`, `version` and
 * `correlation_id` (the current trace id) and `request_id` (the request's, when a request made it), validates the whole event against
 * the contract, and hands it to the workspace's EventHub, which assigns `seq`.
 */

export interface PublishInput<K extends EventType = EventType> {
  event_type: K;
  workspace_id: string;
  data: EventDataMap[K];
  task_id?: string | null;
  run_id?: string | null;
  agent_id?: string | null;
  /** Defaults to the active trace id. */
  correlation_id?: string;
  /** The API request that produced the event; defaults to the logger's `request_id` (a request's logger has it). */
  request_id?: string;
}

export interface PublishContext {
  logger?: Logger;
  /** Keeps work alive after the response (a request's or a queue batch's ExecutionContext): a Sentry report, or the EventBatcher's later try of what it parked. */
  executionCtx?: Pick<ExecutionContext, "waitUntil">;
  /** Tests: shorter waits between tries of the hub. */
  retryDelaysMs?: readonly number[];
}

/** The hub, and D1 to park in what the hub will not take (src/events/parked.ts); without D1 such events are lost. */
export type PublishEnv = Pick<AppConfig, "EVENT_HUB"> & Partial<Pick<AppConfig, "DB">>;

/** An event that does not satisfy the contract: a producer bug. It was logged and reported, and not sent. */
export class InvalidEventError extends Error {
  readonly issues: { path: string; message: string }[];
  constructor(eventType: string, issues: { path: string; message: string }[]) {
    super(`invalid ${eventType} event: ${issues.map((issue) => `${issue.path}: ${issue.message}`).join("; ")}`);
    this.name = "InvalidEventError";
    this.issues = issues;
  }
}

/**
 * Stamps and validates an event without sending it. An invalid event is a
 * producer bug: logged, reported, and thrown as InvalidEventError.
 */
export function stampEvent<K extends EventType>(
  input: PublishInput<K>,
  context: PublishContext = {},
): Omit<PublishedEvent<K>, "seq"> {
  const event = {
    event_id: newId("event"),
    event_type: input.event_type,
    timestamp: new Date().toISOString(),
    correlation_id: input.correlation_id ?? activeTraceId(context.logger),
    request_id: input.request_id ?? requestIdOf(context.logger),
    workspace_id: input.workspace_id,
    ...(input.agent_id != null ? { agent_id: input.agent_id } : {}),
    ...(input.task_id != null ? { task_id: input.task_id } : {}),
    ...(input.run_id != null ? { run_id: input.run_id } : {}),
    data: input.data,
    version: publishedVersion(input.event_type),
  };
  if (event.correlation_id === undefined) delete event.correlation_id;
  if (event.request_id === undefined) delete event.request_id;
  const check = validateEvent(event, { exactVersion: true });
  if (!check.ok) {
    const error = new InvalidEventError(input.event_type, check.issues);
    const logger = context.logger ?? new Logger({ level: "info", sampleRate: 1 });
    logger.error("invalid event not published", {
      event_type: input.event_type,
      workspace_id: input.workspace_id,
      issues: check.issues,
    });
    reportError(workerEnv as WorkerEnv, context.executionCtx, error, {
      tags: { event_type: input.event_type, workspace_id: input.workspace_id },
      extra: { issues: check.issues },
    });
    throw error;
  }
  return event as unknown as Omit<PublishedEvent<K>, "seq">;
}

/**
 * Sends an event to its workspace's hub, trying for about 5 s. Past that it is
 * parked in D1 for the cron to deliver, and EventParkedError is thrown: the
 * event is kept but has no seq yet.
 */
export async function publish<K extends EventType>(
  env: PublishEnv,
  input: PublishInput<K>,
  context: PublishContext = {},
): Promise<PublishedEvent<K>> {
  const event = stampEvent(input, context);
  try {
    // The hub writes an event_id once, so an event whose answer was lost can be sent again.
    const { seq } = await withWriteRetries(
      () => env.EVENT_HUB.getByName(input.workspace_id).publish(event as EventEnvelope),
      context.retryDelaysMs,
    );
    return { ...event, seq } as PublishedEvent<K>;
  } catch (error) {
    throw await parkRefusedEvents(env, [event as EventEnvelope], error, context.logger);
  }
}

function requestIdOf(logger: Logger | undefined): string | undefined {
  const requestId = logger?.context.request_id;
  return typeof requestId === "string" ? requestId : undefined;
}

/** The correlation id events get by default: the active span's trace, else the logger's. */
export function activeTraceId(logger: Logger | undefined): string | undefined {
  const span = trace.getActiveSpan()?.spanContext();
  if (span && trace.isSpanContextValid(span)) return span.traceId;
  const fromLogger = logger?.context.trace_id;
  return typeof fromLogger === "string" ? fromLogger : undefined;
}
