import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { auditContext } from "../audit/index.ts";
import { findOwnedOr404, tenantDb } from "../auth/tenant-access.ts";
import { tasks } from "../db/schema.ts";
import { API_PROBLEMS, jsonBody, jsonResponse, problemResponses } from "../lib/openapi.ts";
import { decodeCursor, PageQuerySchema, pageSchema, toPage } from "../lib/pagination.ts";
import { ApiError } from "../lib/problem.ts";
import { requireScope } from "../middleware/auth.ts";
import { noopAcks } from "../tasks/messages.ts";
import {
  ArtifactSchema,
  NewTaskSchema,
  RunSchema,
  TaskIdParam,
  TaskListQuerySchema,
  TaskSchema,
} from "../tasks/schemas.ts";
import { cancelTask, createTask, listArtifacts, listRuns, listTasks, type TaskContext } from "../tasks/service.ts";
import { toArtifactView, toRunView, toTaskView } from "../tasks/views.ts";
import type { HonoEnv } from "../types.ts";

/** Tasks: submit (admitted by the workspace's limiter), list, read, cancel, runs and artifacts. */

const TAG = "Tasks";

const IdempotencyHeader = z.object({
  "idempotency-key": z
    .string()
    .min(1)
    .max(255)
    .optional()
    .openapi({
      param: { name: "idempotency-key", in: "header" },
      description:
        "A repeat with the same key and body returns the first result (with `Idempotent-Replayed: true`); a different body is 409. Keys do not expire: a key names its task for good, so send a new one per task.",
    }),
});

const createTaskRoute = createRoute({
  method: "post",
  path: "/api/v1/tasks",
  operationId: "createTask",
  tags: [TAG],
  summary: "Submit a task",
  description:
    "Admitted by the workspace's limiter: `queued` when a running slot is free, else `pending` in line by priority " +
    "then age. When `max_pending_tasks` are already waiting: 429 with `Retry-After` estimated from the drain rate.",
  "x-audit-action": "task.create",
  middleware: [requireScope("tasks:write")] as const,
  request: { headers: IdempotencyHeader, body: jsonBody(NewTaskSchema) },
  responses: {
    202: {
      ...jsonResponse("Accepted: queued or pending.", TaskSchema),
      headers: {
        Location: { description: "The task: `/api/v1/tasks/{id}`.", required: true, schema: { type: "string" } },
        "Idempotent-Replayed": {
          description: "`true` when an `Idempotency-Key` sent before returned its first task; absent otherwise.",
          schema: { type: "string", enum: ["true"] },
        },
      },
    },
    ...API_PROBLEMS,
    ...problemResponses("CONFLICT", "VALIDATION_FAILED"),
  },
});

const listTasksRoute = createRoute({
  method: "get",
  path: "/api/v1/tasks",
  operationId: "listTasks",
  tags: [TAG],
  summary: "List tasks",
  description: "Newest first, filtered by status, type and priority.",
  middleware: [requireScope("tasks:read")] as const,
  request: { query: TaskListQuerySchema },
  responses: {
    200: jsonResponse("A page of tasks.", pageSchema(TaskSchema, "TaskPage")),
    ...API_PROBLEMS,
    ...problemResponses("VALIDATION_FAILED"),
  },
});

const getTaskRoute = createRoute({
  method: "get",
  path: "/api/v1/tasks/{id}",
  operationId: "getTask",
  tags: [TAG],
  summary: "Read a task",
  middleware: [requireScope("tasks:read")] as const,
  request: { params: TaskIdParam },
  // VALIDATION_FAILED: an id past the param's 64 characters.
  responses: {
    200: jsonResponse("The task.", TaskSchema),
    ...API_PROBLEMS,
    ...problemResponses("NOT_FOUND", "VALIDATION_FAILED"),
  },
});

const cancelTaskRoute = createRoute({
  method: "post",
  path: "/api/v1/tasks/{id}/cancel",
  operationId: "cancelTask",
  tags: [TAG],
  summary: "Cancel a task",
  description:
    "A pending or queued task is cancelled at once (200). A running one stops before its agent's next step, and an " +
    "LLM call in flight is aborted (202, `cancel_requested_at` set): within about a second, wherever it runs. A run " +
    "that ends in that moment keeps its end: the task then reads `completed` (or `failed`), not `cancelled`, with " +
    "`cancel_requested_at` still set. An ended task is 409.",
  "x-audit-action": "task.cancel",
  middleware: [requireScope("tasks:write")] as const,
  request: { params: TaskIdParam },
  responses: {
    200: jsonResponse("Cancelled.", TaskSchema),
    202: jsonResponse(
      "Cancellation requested: the running agent stops within about a second, unless its run ends first.",
      TaskSchema,
    ),
    ...API_PROBLEMS,
    // VALIDATION_FAILED: an id past the param's 64 characters.
    ...problemResponses("NOT_FOUND", "CONFLICT", "VALIDATION_FAILED"),
  },
});

const listRunsRoute = createRoute({
  method: "get",
  path: "/api/v1/tasks/{id}/runs",
  operationId: "listTaskRuns",
  tags: [TAG],
  summary: "List a task's runs",
  description: "One per attempt, oldest first: status, timings, tokens, cost and error.",
  middleware: [requireScope("tasks:read")] as const,
  request: { params: TaskIdParam, query: PageQuerySchema },
  responses: {
    200: jsonResponse("A page of runs.", pageSchema(RunSchema, "TaskRunPage")),
    ...API_PROBLEMS,
    ...problemResponses("NOT_FOUND", "VALIDATION_FAILED"),
  },
});

const listArtifactsRoute = createRoute({
  method: "get",
  path: "/api/v1/tasks/{id}/artifacts",
  operationId: "listTaskArtifacts",
  tags: [TAG],
  summary: "List a task's artifacts",
  description: "Files the agent wrote, oldest first, with size, MIME type and SHA-256; content via `content_url`.",
  middleware: [requireScope("tasks:read")] as const,
  request: { params: TaskIdParam, query: PageQuerySchema },
  responses: {
    200: jsonResponse("A page of artifacts.", pageSchema(ArtifactSchema, "ArtifactPage")),
    ...API_PROBLEMS,
    ...problemResponses("NOT_FOUND", "VALIDATION_FAILED"),
  },
});

function taskContext(c: Parameters<Parameters<OpenAPIHono<HonoEnv>["openapi"]>[1]>[0]): TaskContext {
  const { db, workspaceId } = tenantDb(c);
  return {
    config: c.get("config"),
    db,
    workspaceId,
    logger: c.get("logger"),
    principal: c.get("principal"),
    audit: auditContext(c),
    waitUntil: (work) => c.executionCtx.waitUntil(work),
  };
}

/**
 * Tests and benchmarks only (ENABLE_DEBUG_ROUTES): puts `count` no-op messages
 * on the tasks queue, whose consumer acknowledges them (after one R2 put each
 * with `work: "r2_put"`, see src/tasks/probes.ts), so the raw queue
 * throughput is measured beside task throughput. Not in the OpenAPI document.
 */
function registerDebugQueueRoute(app: OpenAPIHono<HonoEnv>): void {
  app.post("/__debug/queues/tasks/noop", async (c) => {
    const config = c.get("config");
    if (!config.ENABLE_DEBUG_ROUTES) throw new ApiError("NOT_FOUND", `No route matches ${c.req.method} ${c.req.path}.`);
    const { count, work } = z
      .object({ count: z.number().int().min(1).max(100_000), work: z.enum(["none", "r2_put"]).default("none") })
      .parse(await c.req.json());
    const sentAtMs = Date.now();
    for (let sent = 0; sent < count; sent += 100) {
      const size = Math.min(100, count - sent);
      await config.TASKS_QUEUE.sendBatch(
        Array.from({ length: size }, () => ({ body: { v: 1, noop: true, work, sent_at_ms: sentAtMs } })),
      );
    }
    return c.json({ sent: count, sent_at_ms: sentAtMs }, 200);
  });
  // How many no-op messages this isolate acknowledged, and when the last one was (wrangler dev runs one isolate).
  app.get("/__debug/queues/tasks/noop", (c) => {
    if (!c.get("config").ENABLE_DEBUG_ROUTES)
      throw new ApiError("NOT_FOUND", `No route matches ${c.req.method} ${c.req.path}.`);
    return c.json({ acked: noopAcks.count, last_acked_at_ms: noopAcks.lastAtMs }, 200);
  });
}

export function registerTaskRoutes(app: OpenAPIHono<HonoEnv>): void {
  registerDebugQueueRoute(app);
  app.openapi(createTaskRoute, async (c) => {
    const limits = c.get("limits");
    if (!limits) throw new ApiError("FORBIDDEN", "This route needs a workspace credential.");
    const { task, replayed } = await createTask(
      taskContext(c),
      limits,
      c.req.valid("json"),
      c.req.valid("header")["idempotency-key"],
    );
    if (replayed) c.header("Idempotent-Replayed", "true");
    c.header("Location", `/api/v1/tasks/${task.id}`);
    return c.json(toTaskView(task), 202);
  });

  app.openapi(listTasksRoute, async (c) => {
    const { db, workspaceId } = tenantDb(c);
    const { limit, cursor, status, type, priority } = c.req.valid("query");
    const rows = await listTasks(db, workspaceId, { status, type, priority }, { limit, after: decodeCursor(cursor) });
    return c.json(
      toPage(rows, limit, (row) => ({ createdAt: row.createdAt, id: row.id }), toTaskView),
      200,
    );
  });

  app.openapi(getTaskRoute, async (c) => {
    const row = await findOwnedOr404(c, tasks, c.req.valid("param").id, "task");
    return c.json(toTaskView(row), 200);
  });

  app.openapi(cancelTaskRoute, async (c) => {
    const row = await findOwnedOr404(c, tasks, c.req.valid("param").id, "task");
    const { task, immediate } = await cancelTask(taskContext(c), row);
    return c.json(toTaskView(task), immediate ? 200 : 202);
  });

  app.openapi(listRunsRoute, async (c) => {
    const row = await findOwnedOr404(c, tasks, c.req.valid("param").id, "task");
    const { limit, cursor } = c.req.valid("query");
    const runs = await listRuns(tenantDb(c).db, row.workspaceId, row.id, { limit, after: decodeCursor(cursor) });
    return c.json(
      toPage(runs, limit, (run) => ({ createdAt: run.startedAt, id: run.id }), toRunView),
      200,
    );
  });

  app.openapi(listArtifactsRoute, async (c) => {
    const row = await findOwnedOr404(c, tasks, c.req.valid("param").id, "task");
    const { limit, cursor } = c.req.valid("query");
    const rows = await listArtifacts(tenantDb(c).db, row.workspaceId, row.id, { limit, after: decodeCursor(cursor) });
    return c.json(
      toPage(rows, limit, (artifact) => ({ createdAt: artifact.createdAt, id: artifact.id }), toArtifactView),
      200,
    );
  });
}
