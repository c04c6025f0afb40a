import { z } from "zod";

/**
 * The event contract (seed §9.1–9.2): the envelope and the `data` of each of
 * the 21 event types, field by field. Plain zod, no Worker imports, so the SDK
 * validates received events with these very schemas.
 *
 * Objects are loose: a minor version may add optional fields (seed §9.3), and
 * a client built against 1.0 must keep accepting 1.1 events.
 */

export const EVENT_TYPES = [
  "task.created",
  "task.started",
  "task.completed",
  "task.error",
  "agent.message",
  "tool.call",
  "tool.result",
  "artifact.created",
  "artifact.updated",
  "workflow.started",
  "workflow.step.started",
  "workflow.step.completed",
  "workflow.completed",
  "system.resource.warning",
  "system.resource.critical",
  "security.suspicious_activity",
  "security.breach_detected",
  "billing.threshold.reached",
  "billing.usage_alert",
  "llm.provider.error",
  "llm.provider.fallback",
] as const;

export type EventType = (typeof EVENT_TYPES)[number];

export const EVENT_ID_PATTERN = /^evt_[a-zA-Z0-9_]+$/;
export const WORKSPACE_ID_PATTERN = /^[a-zA-Z0-9_-]+$/;
export const VERSION_PATTERN = /^(0|[1-9]\d{0,3})\.(0|[1-9]\d{0,3})$/;

const anyRecord = z.record(z.string(), z.unknown());
const count = z.number().int().min(0);
const id = z.string().min(1).max(256);

const TaskCreatedTask = z.looseObject({
  id,
  title: z.string().min(1).max(255),
  description: z.string().max(5000).optional(),
  type: z.enum(["code_generation", "refactoring", "testing", "documentation"]),
  project_id: z.string().optional(),
  agent_config: anyRecord.optional(),
  estimated_tokens: count.optional(),
  estimated_cost: z.number().min(0).optional(),
  priority: z.enum(["low", "medium", "high", "critical"]),
});

const TaskCreatedData = z.looseObject({
  task: TaskCreatedTask,
  user: z.looseObject({ id, email: z.email() }),
});

/** task.created 2.0 (seed §9.3): `estimated_cost` becomes required. */
const TaskCreatedDataV2 = TaskCreatedData.extend({
  task: TaskCreatedTask.extend({ estimated_cost: z.number().min(0) }),
});

const SystemResourceData = z.looseObject({
  resource_type: z.enum(["memory", "cpu", "disk", "network"]),
  current_value: z.number(),
  threshold: z.number(),
  severity: z.enum(["warning", "critical"]),
  recommendation: z.string().optional(),
});

const SecurityData = z.looseObject({
  event_type: z.string().min(1),
  severity: z.enum(["low", "medium", "high", "critical"]),
  user_id: z.string(),
  ip_address: z.string(),
  user_agent: z.string(),
  suspicious_activity: z.string(),
  blocked: z.boolean(),
});

const BillingData = z.looseObject({
  workspace_id: z.string().regex(WORKSPACE_ID_PATTERN),
  threshold_type: z.enum(["daily", "monthly", "absolute"]),
  current_usage: z.number(),
  threshold: z.number(),
  percentage: z.number(),
  alert_level: z.enum(["info", "warning", "critical"]),
  // Beyond the seed's fields, sent with every such event: which budget (the unit of current_usage and threshold,
  // tokens or US dollars) and which step of it (50, 80, 100). Optional, so events without them stay valid.
  metric: z.enum(["tokens", "cost_usd"]).optional(),
  threshold_percent: z.number().int().min(0).optional(),
});

/** The issue's `simulated` label on the router's events: the offline provider answered or failed, not a real one. */
const simulatedLabel = z.boolean().optional();

const LlmProviderErrorData = z.looseObject({
  provider: z.string().min(1),
  model: z.string().min(1),
  error_type: z.enum(["timeout", "rate_limit", "authentication", "quota_exceeded", "connection_error"]),
  error_code: z.string(),
  retry_count: count,
  fallback_triggered: z.boolean(),
  simulated: simulatedLabel,
});

/**
 * 1.1 adds an optional field (a minor step, seed §9.3). The seed's error_type
 * has no server error, so a 5xx is a connection_error; `http_status`, the
 * provider's HTTP status, tells them apart: null when no answer came (a
 * timeout, a failed connection), absent on events published before 1.1.
 */
const LlmProviderErrorDataV1_1 = LlmProviderErrorData.extend({
  http_status: z.number().int().min(100).max(599).nullable().optional(),
});

/** `data` of each type at version 1.0. */
export const EVENT_DATA_V1 = {
  "task.created": TaskCreatedData,
  "task.started": z.looseObject({
    task_id: id,
    agent_id: id,
    resources: z.looseObject({
      estimated_tokens: count,
      model: z.string().min(1),
      provider: z.enum(["openai", "anthropic", "azure", "local"]),
    }),
  }),
  "task.completed": z.looseObject({
    task_id: id,
    duration_seconds: z.number().min(0),
    tokens_used: z.looseObject({ prompt: count, completion: count, total: count }),
    cost_usd: z.number().min(0),
    result: z.looseObject({
      status: z.enum(["success", "partial_success", "failed"]),
      artifacts: z.array(z.string()),
    }),
  }),
  "task.error": z.looseObject({
    task_id: id,
    // The seed lists "timeout" | "llm_error" | "tool_error" | "validation_error" as examples, not a closed set.
    error_type: z.string().min(1),
    error_message: z.string(),
    retry_count: count,
    max_retries: count,
    fatal: z.boolean(),
    context: anyRecord.optional(),
  }),
  "agent.message": z.looseObject({
    task_id: id,
    agent_id: id,
    role: z.enum(["system", "user", "assistant", "tool"]),
    message: z.string(),
    tokens: count,
    metadata: z
      .looseObject({ tools_called: z.array(z.string()).optional(), tool_results: z.array(z.unknown()).optional() })
      .optional(),
  }),
  "tool.call": z.looseObject({
    tool_id: id,
    tool_name: z.string().min(1),
    arguments: anyRecord,
    task_id: id,
    agent_id: id,
  }),
  "tool.result": z.looseObject({
    tool_id: id,
    tool_name: z.string().min(1),
    status: z.enum(["success", "error", "timeout"]),
    result: z.unknown().optional(),
    error: z.string().optional(),
    duration_ms: z.number().min(0),
    task_id: id,
  }),
  "artifact.created": z.looseObject({
    artifact_id: id,
    artifact_type: z.enum(["file", "directory", "image", "video"]),
    task_id: id,
    path: z.string().min(1),
    size_bytes: count,
    mime_type: z.string().optional(),
    metadata: anyRecord.optional(),
  }),
  "artifact.updated": z.looseObject({
    artifact_id: id,
    task_id: id,
    changes: z.looseObject({
      path: z.string().min(1).optional(),
      size_bytes: count.optional(),
      status: z.enum(["processing", "completed", "failed"]).optional(),
    }),
  }),
  "workflow.started": z.looseObject({
    workflow_id: id,
    workflow_execution_id: id,
    workflow_name: z.string().min(1),
    trigger: z.enum(["manual", "scheduled", "webhook", "api"]),
    input_variables: anyRecord,
  }),
  "workflow.step.started": z.looseObject({
    workflow_execution_id: id,
    step_id: id,
    step_name: z.string().min(1),
    step_order: count,
    input_variables: anyRecord,
  }),
  "workflow.step.completed": z.looseObject({
    workflow_execution_id: id,
    step_id: id,
    duration_seconds: z.number().min(0),
    retry_count: count,
    // `any` in the seed, but present: undefined cannot travel as JSON.
    output_data: z.unknown().refine((value) => value !== undefined, "Required"),
    status: z.enum(["success", "failed", "skipped"]),
  }),
  "workflow.completed": z.looseObject({
    workflow_execution_id: id,
    workflow_id: id,
    status: z.enum(["completed", "failed", "cancelled", "timeout"]),
    total_duration_seconds: z.number().min(0),
    results: anyRecord,
  }),
  "system.resource.warning": SystemResourceData,
  "system.resource.critical": SystemResourceData,
  "security.suspicious_activity": SecurityData,
  "security.breach_detected": SecurityData,
  "billing.threshold.reached": BillingData,
  "billing.usage_alert": BillingData,
  "llm.provider.error": LlmProviderErrorData,
  "llm.provider.fallback": z.looseObject({
    from_provider: z.string().min(1),
    to_provider: z.string().min(1),
    from_model: z.string().min(1),
    to_model: z.string().min(1),
    reason: z.enum(["rate_limit", "error_rate", "cost", "performance"]),
    simulated: simulatedLabel,
  }),
} satisfies Record<EventType, z.ZodType>;

/**
 * The version `publish()` stamps on each type, and its data shape: 1.0 unless
 * listed. task.created 2.0 exists for consumers who opt in (`?version=2.0`);
 * producers stay on 1.0 until they all fill `estimated_cost`, so no 1.0
 * consumer is broken by a major bump. A minor (llm.provider.error 1.1) only
 * adds optional fields, so producers move to it at once: a consumer that asks
 * for 1.0 gets the event without them (see versioning.ts).
 */
const PUBLISHED = {
  "llm.provider.error": { version: "1.1", data: LlmProviderErrorDataV1_1 },
} as const satisfies Partial<Record<EventType, { version: string; data: z.ZodType }>>;

/** Every (type, version) the contract knows: 1.0, each published version, and task.created 2.0. */
export const EVENT_DATA_VERSIONS: Record<EventType, Record<string, z.ZodType>> = Object.fromEntries(
  EVENT_TYPES.map((type) => [type, { "1.0": EVENT_DATA_V1[type] as z.ZodType }]),
) as unknown as Record<EventType, Record<string, z.ZodType>>;
for (const [type, { version, data }] of Object.entries(PUBLISHED)) {
  EVENT_DATA_VERSIONS[type as EventType][version] = data;
}
EVENT_DATA_VERSIONS["task.created"]["2.0"] = TaskCreatedDataV2;

type PublishedData = Omit<typeof EVENT_DATA_V1, keyof typeof PUBLISHED> & {
  [K in keyof typeof PUBLISHED]: (typeof PUBLISHED)[K]["data"];
};

/** The data each type is published with. */
export type EventDataMap = { [K in EventType]: z.output<PublishedData[K]> };

export function publishedVersion(type: EventType): string {
  return (PUBLISHED as Partial<Record<EventType, { version: string }>>)[type]?.version ?? "1.0";
}

const optionalId = z.string().min(1).max(256).nullable().optional();

export const EventEnvelopeSchema = z.looseObject({
  event_id: z.string().max(64).regex(EVENT_ID_PATTERN),
  event_type: z.enum(EVENT_TYPES),
  timestamp: z.iso.datetime({ offset: true }),
  /** The trace id of the operation that produced the event. */
  correlation_id: z.string().min(1).max(128).optional(),
  /**
   * The `X-Request-Id` of the API request that produced the event (the caller's own, if it sent one), absent for
   * work no request made (a task's run, a cron). A caller that sent no `traceparent` never learns the trace id
   * in `correlation_id`; this is how it tells which of its calls an `llm.provider.error` or a billing alert came from.
   */
  request_id: z.string().min(1).max(128).optional(),
  workspace_id: z.string().min(1).max(128).regex(WORKSPACE_ID_PATTERN),
  agent_id: optionalId,
  task_id: optionalId,
  run_id: optionalId,
  data: anyRecord,
  version: z.string().regex(VERSION_PATTERN, "must be major.minor, e.g. 1.0"),
  /** Assigned by the workspace's hub: strictly increasing per workspace. */
  seq: z.number().int().positive().optional(),
});

/** The envelope as a type (the schema's output also admits unknown extra fields). */
export interface EventEnvelope {
  event_id: string;
  event_type: EventType;
  timestamp: string;
  correlation_id?: string;
  request_id?: string;
  workspace_id: string;
  agent_id?: string | null;
  task_id?: string | null;
  run_id?: string | null;
  data: Record<string, unknown>;
  version: string;
  seq?: number;
}

/** A received event, typed by its `event_type`. */
export type MgxEvent<K extends EventType = EventType> = K extends EventType
  ? Omit<EventEnvelope, "event_type" | "data"> & { event_type: K; data: EventDataMap[K] }
  : never;

/** Published events always carry their seq. */
export type PublishedEvent<K extends EventType = EventType> = MgxEvent<K> & { seq: number };

export function isEventType(value: string): value is EventType {
  return (EVENT_TYPES as readonly string[]).includes(value);
}

const typedSchemas = new Map<string, z.ZodType>();

/** The full event schema (envelope + typed data) of one type at one exact version, if it exists. */
export function eventSchema(type: EventType, version: string): z.ZodType | undefined {
  const key = `${type}@${version}`;
  const cached = typedSchemas.get(key);
  if (cached) return cached;
  const data = EVENT_DATA_VERSIONS[type]?.[version];
  if (!data) return undefined;
  const schema = EventEnvelopeSchema.extend({ event_type: z.literal(type), data, version: z.literal(version) });
  typedSchemas.set(key, schema);
  return schema;
}

/** Known versions of a type, oldest first. */
export function versionsOf(type: EventType): string[] {
  return Object.keys(EVENT_DATA_VERSIONS[type]).sort(compareVersions);
}

export function parseVersion(version: string): { major: number; minor: number } | null {
  const match = VERSION_PATTERN.exec(version);
  return match ? { major: Number(match[1]), minor: Number(match[2]) } : null;
}

export function compareVersions(a: string, b: string): number {
  const left = parseVersion(a) ?? { major: 0, minor: 0 };
  const right = parseVersion(b) ?? { major: 0, minor: 0 };
  return left.major - right.major || left.minor - right.minor;
}

export type EventCheck = { ok: true; event: MgxEvent } | { ok: false; issues: { path: string; message: string }[] };

/**
 * Validates a whole event. A minor version newer than any we know is checked
 * against the newest known minor of the same major (minors only add fields).
 */
export function validateEvent(value: unknown, options: { exactVersion?: boolean } = {}): EventCheck {
  // A known type at a known version (every event we produce): its full schema checks the envelope too, in one pass.
  const claimed = value as { event_type?: unknown; version?: unknown } | null;
  if (
    typeof claimed?.event_type === "string" &&
    typeof claimed.version === "string" &&
    isEventType(claimed.event_type)
  ) {
    const exact = eventSchema(claimed.event_type, claimed.version);
    if (exact) {
      const parsed = exact.safeParse(value);
      return parsed.success
        ? { ok: true, event: parsed.data as MgxEvent }
        : { ok: false, issues: toIssues(parsed.error) };
    }
  }
  const envelope = EventEnvelopeSchema.safeParse(value);
  if (!envelope.success) return { ok: false, issues: toIssues(envelope.error) };
  const { event_type: type, version } = envelope.data;
  let schema = eventSchema(type, version);
  if (!schema && !options.exactVersion) {
    const major = parseVersion(version)?.major;
    const sameMajor = versionsOf(type).filter((known) => parseVersion(known)?.major === major);
    const newest = sameMajor.at(-1);
    if (newest && compareVersions(newest, version) < 0) {
      schema = EventEnvelopeSchema.extend({ event_type: z.literal(type), data: EVENT_DATA_VERSIONS[type][newest] });
    }
  }
  if (!schema) {
    return {
      ok: false,
      issues: [
        { path: "version", message: `${type} has no version ${version}; known: ${versionsOf(type).join(", ")}` },
      ],
    };
  }
  const parsed = schema.safeParse(value);
  return parsed.success ? { ok: true, event: parsed.data as MgxEvent } : { ok: false, issues: toIssues(parsed.error) };
}

function toIssues(error: z.ZodError): { path: string; message: string }[] {
  return error.issues.map((issue) => ({
    path: issue.path.length ? issue.path.map(String).join(".") : "(root)",
    message: issue.message,
  }));
}
