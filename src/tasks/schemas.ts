import { z } from "@hono/zod-openapi";
import { TASK_PRIORITIES, TASK_STATUSES, TASK_TYPES } from "../db/schema.ts";
import { PageQuerySchema } from "../lib/pagination.ts";
import { hasLoneSurrogate, LONE_SURROGATE_MODEL_MESSAGE, LONE_SURROGATE_TEXT_MESSAGE } from "../lib/unicode.ts";

/** Request and response schemas of the tasks, artifacts and dead-letter routes. */

const Tokens = z.object({ prompt: z.number().int(), completion: z.number().int(), total: z.number().int() });

/**
 * How deep `agent_config`'s free-form keys may nest. Its JSON is hashed in
 * canonical form (idempotency, audit) by recursion, which a config nested a
 * few thousand levels deep took past the stack: a 500 instead of a 422.
 */
export const MAX_AGENT_CONFIG_DEPTH = 32;

/** Whether `value` nests objects or arrays more than `limit` deep; iterative, so any depth is safe to ask. */
function nestsDeeperThan(value: unknown, limit: number): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [current, depth] = stack.pop() as [unknown, number];
    if (current === null || typeof current !== "object") continue;
    if (depth >= limit) return true;
    for (const inner of Object.values(current)) stack.push([inner, depth + 1]);
  }
  return false;
}

/**
 * Whether `value` holds a number JSON cannot write: a literal past the double range (`1e400`) parses as Infinity,
 * which was stored and answered as null (and hashed as null, so a replay of `{"x": null}` matched it).
 */
function holdsNonFiniteNumber(value: unknown): boolean {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const current = stack.pop();
    if (typeof current === "number" && !Number.isFinite(current)) return true;
    if (current !== null && typeof current === "object") for (const inner of Object.values(current)) stack.push(inner);
  }
  return false;
}

/**
 * A key named `__proto__` at the top of agent_config: parsed into an object, it sets the object's prototype
 * instead of being kept, so it was dropped without a word (and an object under it read as the config's fields).
 */
function refuseProtoKey(input: unknown, ctx: z.RefinementCtx): unknown {
  if (input !== null && typeof input === "object" && Object.hasOwn(input, "__proto__")) {
    ctx.addIssue({ code: "custom", path: ["__proto__"], message: "is a key an agent_config cannot keep; rename it" });
  }
  return input;
}

const AgentConfigObjectSchema = z
  .looseObject({
    max_steps: z.number().int().min(1).max(50).optional().openapi({ description: "LLM turns at most (default 12)." }),
    model: z
      .string()
      .min(1)
      .max(256)
      .refine((name) => !hasLoneSurrogate(name), LONE_SURROGATE_MODEL_MESSAGE)
      .optional()
      .openapi({ description: "A model or `provider:model`; default: the workspace's routing chain." }),
    temperature: z.number().min(0).max(2).optional(),
    max_tokens: z.number().int().min(1).max(200_000).optional(),
  })
  .refine((config) => !nestsDeeperThan(config, MAX_AGENT_CONFIG_DEPTH), {
    message: `nests objects and arrays more than ${MAX_AGENT_CONFIG_DEPTH} levels deep`,
  })
  .refine((config) => !holdsNonFiniteNumber(config), { message: "holds a number too large for JSON" })
  .openapi("AgentConfig", {
    description: `How the agent runs; unknown keys are kept for the agent (nested at most ${MAX_AGENT_CONFIG_DEPTH} levels deep).`,
  });

export const AgentConfigSchema = z.preprocess(refuseProtoKey, AgentConfigObjectSchema);

export const NewTaskSchema = z
  .object({
    // Stored in text columns: a lone surrogate would come back as U+FFFD.
    title: z
      .string()
      .trim()
      .min(1)
      .max(255)
      .refine((text) => !hasLoneSurrogate(text), LONE_SURROGATE_TEXT_MESSAGE),
    description: z
      .string()
      .max(5000)
      .refine((text) => !hasLoneSurrogate(text), LONE_SURROGATE_TEXT_MESSAGE)
      .optional(),
    type: z.enum(TASK_TYPES),
    priority: z.enum(TASK_PRIORITIES).default("medium"),
    project_id: z
      .string()
      .min(1)
      .max(128)
      .refine((text) => !hasLoneSurrogate(text), LONE_SURROGATE_TEXT_MESSAGE)
      .optional(),
    agent_config: AgentConfigSchema.optional(),
    estimated_tokens: z.number().int().min(0).max(100_000_000).optional(),
  })
  .strict()
  .openapi("NewTask");
export type NewTask = z.output<typeof NewTaskSchema>;

export const TaskSchema = z
  .object({
    id: z.string().openapi({ example: "task_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3" }),
    title: z.string(),
    description: z.string().nullable(),
    type: z.enum(TASK_TYPES),
    priority: z.enum(TASK_PRIORITIES),
    status: z.enum(TASK_STATUSES),
    project_id: z.string().nullable(),
    agent_config: z.record(z.string(), z.unknown()).nullable(),
    estimated_tokens: z.number().int().nullable(),
    attempts: z.number().int().openapi({ description: "Runs started so far." }),
    max_retries: z.number().int(),
    tokens: Tokens,
    cost_usd: z.number(),
    result: z.record(z.string(), z.unknown()).nullable(),
    error: z.object({ type: z.string(), message: z.string() }).nullable(),
    created_by: z.string().nullable(),
    created_at: z.string(),
    updated_at: z.string(),
    queued_at: z.string().nullable(),
    started_at: z.string().nullable(),
    finished_at: z.string().nullable(),
    cancel_requested_at: z.string().nullable(),
  })
  .openapi("Task");

export const TaskListQuerySchema = PageQuerySchema.extend({
  status: z.enum(TASK_STATUSES).optional(),
  type: z.enum(TASK_TYPES).optional(),
  priority: z.enum(TASK_PRIORITIES).optional(),
});

export const RunSchema = z
  .object({
    id: z.string().openapi({ example: "run_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3" }),
    task_id: z.string(),
    attempt: z.number().int(),
    status: z.enum(["running", "succeeded", "failed", "cancelled", "timed_out"]),
    agent_id: z.string().nullable(),
    provider: z.string().nullable(),
    model: z.string().nullable(),
    tokens: Tokens,
    cost_usd: z.number(),
    error: z.object({ type: z.string(), message: z.string(), retryable: z.boolean() }).nullable(),
    started_at: z.string(),
    finished_at: z.string().nullable(),
    duration_ms: z.number().int().nullable(),
  })
  .openapi("TaskRun");

export const ArtifactSchema = z
  .object({
    id: z.string().openapi({ example: "art_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3" }),
    task_id: z.string(),
    run_id: z.string().nullable(),
    path: z.string(),
    size_bytes: z.number().int(),
    mime_type: z.string(),
    sha256: z.string(),
    version: z.number().int(),
    content_url: z.string().openapi({ description: "Where the content streams from." }),
    created_at: z.string(),
    updated_at: z.string(),
  })
  .openapi("Artifact");

export const DeadLetterSchema = z
  .object({
    id: z.string().openapi({ example: "dlq_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3" }),
    task_id: z.string(),
    message_id: z.string(),
    queue: z.string(),
    attempts: z.number().int(),
    error_type: z.string().nullable(),
    error_message: z.string().nullable(),
    created_at: z.string(),
    replayed_at: z.string().nullable(),
    replay_count: z.number().int(),
  })
  .openapi("DeadLetter");

export const DeadLetterListQuerySchema = PageQuerySchema.extend({
  replayed: z.enum(["true", "false"]).optional().openapi({ description: "Only replayed, or only not yet replayed." }),
  error_type: z.string().max(64).optional(),
  task_id: z.string().max(64).optional(),
});

export const ReplayRequestSchema = z
  .object({
    ids: z.array(z.string().max(64)).min(1).max(100).optional().openapi({ description: "Dead letters to replay." }),
    filter: z
      .object({
        error_type: z.string().max(64).optional(),
        task_type: z.enum(TASK_TYPES).optional(),
        created_after: z.iso.datetime().optional(),
        created_before: z.iso.datetime().optional(),
        include_replayed: z.boolean().default(false),
      })
      .strict()
      .refine(
        (filter) =>
          !filter.created_after ||
          !filter.created_before ||
          Date.parse(filter.created_after) < Date.parse(filter.created_before),
        { path: ["created_before"], message: "must be after created_after" },
      )
      .optional()
      .openapi({ description: "Or: every dead letter matching this (up to `limit`), oldest first." }),
    limit: z.number().int().min(1).max(100).default(100),
  })
  .strict()
  .refine((body) => (body.ids === undefined) !== (body.filter === undefined), {
    message: "give either ids or filter",
    path: ["ids"],
  })
  .openapi("DeadLetterReplay");

export const ReplayResultSchema = z
  .object({
    replayed: z.array(
      z.object({ dead_letter_id: z.string(), task_id: z.string(), status: z.enum(["queued", "pending"]) }),
    ),
    skipped: z.array(z.object({ dead_letter_id: z.string(), task_id: z.string().nullable(), reason: z.string() })),
  })
  .openapi("DeadLetterReplayResult");

export const TaskIdParam = z.object({
  id: z
    .string()
    .max(64)
    .openapi({
      param: { name: "id", in: "path" },
      example: "task_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3",
      description: "A `task_` id.",
    }),
});

export const ArtifactIdParam = z.object({
  id: z
    .string()
    .max(64)
    .openapi({
      param: { name: "id", in: "path" },
      example: "art_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3",
      description: "An `art_` id.",
    }),
});
