import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { auditContext } from "../audit/index.ts";
import { tenantDb } from "../auth/tenant-access.ts";
import { API_PROBLEMS, jsonBody, jsonResponse, problemResponses } from "../lib/openapi.ts";
import { decodeCursor, pageSchema, toPage } from "../lib/pagination.ts";
import { ApiError } from "../lib/problem.ts";
import { requireScope } from "../middleware/auth.ts";
import { listDeadLetters, replayDeadLetters } from "../tasks/dead-letters.ts";
import {
  DeadLetterListQuerySchema,
  DeadLetterSchema,
  ReplayRequestSchema,
  ReplayResultSchema,
} from "../tasks/schemas.ts";
import { toDeadLetterView } from "../tasks/views.ts";
import type { HonoEnv } from "../types.ts";

/** Tasks that exhausted their retries, and replaying them (one, a list, or every match of a filter). */

const TAG = "Dead letters";
const PROBLEMS = { ...API_PROBLEMS, ...problemResponses("VALIDATION_FAILED") };

const listRoute = createRoute({
  method: "get",
  path: "/api/v1/dead-letters",
  operationId: "listDeadLetters",
  tags: [TAG],
  summary: "List dead letters",
  description: "Newest first; filter by `replayed`, `error_type` or `task_id`.",
  middleware: [requireScope("tasks:read")] as const,
  request: { query: DeadLetterListQuerySchema },
  responses: {
    200: jsonResponse("A page of dead letters.", pageSchema(DeadLetterSchema, "DeadLetterPage")),
    ...PROBLEMS,
  },
});

const replayRoute = createRoute({
  method: "post",
  path: "/api/v1/dead-letters/replay",
  operationId: "replayDeadLetters",
  tags: [TAG],
  summary: "Replay dead letters",
  description:
    "Gives `ids` (up to 100) or a `filter` (up to `limit`, oldest first). Each task goes through admission again; " +
    "one refused because the pending line is full is listed under `skipped` and stays dead-lettered.",
  "x-audit-action": "dead_letter.replay",
  middleware: [requireScope("tasks:write")] as const,
  request: { body: jsonBody(ReplayRequestSchema) },
  responses: { 200: jsonResponse("What was replayed and what was skipped.", ReplayResultSchema), ...PROBLEMS },
});

export function registerDeadLetterRoutes(app: OpenAPIHono<HonoEnv>): void {
  app.openapi(listRoute, async (c) => {
    const { db, workspaceId } = tenantDb(c);
    const { limit, cursor, replayed, error_type, task_id } = c.req.valid("query");
    const rows = await listDeadLetters(
      db,
      workspaceId,
      { replayed: replayed === undefined ? undefined : replayed === "true", errorType: error_type, taskId: task_id },
      { limit, after: decodeCursor(cursor) },
    );
    return c.json(
      toPage(rows, limit, (row) => ({ createdAt: row.createdAt, id: row.id }), toDeadLetterView),
      200,
    );
  });

  app.openapi(replayRoute, async (c) => {
    const limits = c.get("limits");
    if (!limits) throw new ApiError("FORBIDDEN", "This route needs a workspace credential.");
    const { db, workspaceId } = tenantDb(c);
    const context = {
      config: c.get("config"),
      db,
      workspaceId,
      logger: c.get("logger"),
      principal: c.get("principal"),
      audit: auditContext(c),
    };
    return c.json(await replayDeadLetters(context, limits, c.req.valid("json")), 200);
  });
}
