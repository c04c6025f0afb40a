import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { auditContext, auditInsert } from "../audit/index.ts";
import { tenantDb } from "../auth/tenant-access.ts";
import { API_PROBLEMS, jsonBody, jsonResponse, problemResponses } from "../lib/openapi.ts";
import { ApiError } from "../lib/problem.ts";
import { forgetWorkspaceSettings, unpricedEntries } from "../llm/index.ts";
import { requireScope } from "../middleware/auth.ts";
import type { HonoEnv } from "../types.ts";
import { LlmRoutingSchema, WorkspaceNameSchema, WorkspaceSchema } from "../workspaces/schemas.ts";
import {
  applyWorkspaceChanges,
  findWorkspace,
  queueDepth,
  toWorkspaceView,
  updateWorkspaceStatement,
} from "../workspaces/service.ts";

/** The caller's own workspace: limits, budgets, queue depth and LLM routing. */

const getRoute = createRoute({
  method: "get",
  path: "/api/v1/workspace",
  operationId: "getWorkspace",
  tags: ["Workspaces"],
  summary: "Read your workspace",
  description: "Limits, budgets, queue depth (pending, queued, running tasks) and LLM routing.",
  middleware: [requireScope("tasks:read")] as const,
  responses: {
    200: jsonResponse("Your workspace.", WorkspaceSchema),
    ...API_PROBLEMS,
  },
});

/** What GET /api/v1/workspace shows that this PATCH does not change: a field sent here says where it is changed. */
const CHANGED_ELSEWHERE: Record<string, string> = {
  plan: "the operator's to change: PATCH /api/v1/workspaces/{id} with the ADMIN_TOKEN bearer",
  limits: "the operator's to change: PATCH /api/v1/workspaces/{id} with the ADMIN_TOKEN bearer",
  budgets: "set with PUT /api/v1/budgets",
};

const patchRoute = createRoute({
  method: "patch",
  path: "/api/v1/workspace",
  operationId: "updateWorkspace",
  tags: ["Workspaces"],
  summary: "Change your workspace's name or LLM routing",
  description:
    "Plan and limits are the operator's; budgets are under /api/v1/budgets. A chain entry may state the workspace's own `price` for its (provider, model), which then costs, reserves and ranks its calls instead of the price table's. An entry of a paid provider whose model the table lacks, without a price, is accepted, but its calls are charged a conservative guess ($5 in / $15 out per million tokens): GET /api/v1/llm/models shows it as `price_source: unknown`.",
  "x-audit-action": "workspace.update",
  middleware: [requireScope("admin")] as const,
  request: {
    body: jsonBody(
      z
        .strictObject(
          {
            name: WorkspaceNameSchema.optional(),
            llm: LlmRoutingSchema.nullable().optional(),
          },
          {
            error: (issue) =>
              issue.code === "unrecognized_keys" && issue.keys.length === 1 && CHANGED_ELSEWHERE[issue.keys[0]]
                ? `is ${CHANGED_ELSEWHERE[issue.keys[0]]}`
                : undefined,
          },
        )
        .openapi("WorkspacePatch"),
    ),
  },
  responses: {
    200: jsonResponse("The changed workspace.", WorkspaceSchema),
    ...API_PROBLEMS,
    ...problemResponses("VALIDATION_FAILED"),
  },
});

export function registerOwnWorkspaceRoutes(app: OpenAPIHono<HonoEnv>): void {
  app.openapi(getRoute, async (c) => {
    const { db, workspaceId } = tenantDb(c);
    const [row, queue] = await Promise.all([findWorkspace(db, workspaceId), queueDepth(db, workspaceId)]);
    if (!row) throw new ApiError("NOT_FOUND", "Your workspace no longer exists.");
    return c.json(toWorkspaceView(row, queue), 200);
  });

  app.openapi(patchRoute, async (c) => {
    const { db, workspaceId } = tenantDb(c);
    const row = await findWorkspace(db, workspaceId);
    if (!row) throw new ApiError("NOT_FOUND", "Your workspace no longer exists.");
    const changes = c.req.valid("json");
    const next = applyWorkspaceChanges(row, changes);
    const [[stored]] = await db.batch([
      updateWorkspaceStatement(db, next, changes),
      auditInsert(db, {
        ...auditContext(c),
        workspaceId,
        action: "workspace.update",
        resourceType: "workspace",
        resourceId: workspaceId,
        changes: { before: { name: row.name, llm: row.llm }, after: { name: next.name, llm: next.llm } },
      }),
    ]);
    // The router keeps routing settings per isolate for a few seconds: this one's next call routes by the new chain.
    forgetWorkspaceSettings(workspaceId);
    // Accepted (the model may be new, or a deployment's own name), but its cost figures will be guesses.
    const unpriced = changes.llm ? unpricedEntries(changes.llm.chain) : [];
    if (unpriced.length > 0) {
      c.get("logger").warn("routing chain names models without a price; charged at the unknown-model rate", {
        unpriced,
      });
    }
    return c.json(toWorkspaceView(stored ?? next, await queueDepth(db, workspaceId)), 200);
  });
}
