import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { auditContext, auditInsert } from "../audit/index.ts";
import { newApiKey, newApiKeyFields, toApiKeyView } from "../auth/api-keys.ts";
import { createDb } from "../db/client.ts";
import { apiKeys, workspaces } from "../db/schema.ts";
import { API_PROBLEMS, jsonBody, jsonResponse, problemResponses } from "../lib/openapi.ts";
import { ApiError } from "../lib/problem.ts";
import { requireOperator } from "../middleware/auth.ts";
import { applyTaskCaps } from "../tasks/dispatch.ts";
import type { HonoEnv } from "../types.ts";
import { PLANS } from "../workspaces/plans.ts";
import {
  CreatedApiKeySchema,
  IdParamSchema,
  LimitsPatchSchema,
  NewApiKeySchema,
  WorkspaceNameSchema,
  WorkspaceSchema,
} from "../workspaces/schemas.ts";
import {
  applyWorkspaceChanges,
  findWorkspace,
  newWorkspaceRow,
  queueDepth,
  toWorkspaceView,
  updateWorkspaceStatement,
} from "../workspaces/service.ts";

/** Operator routes (bearer = ADMIN_TOKEN): create, read and change any workspace. */

const WorkspaceIdParam = IdParamSchema("ws", "ws_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3");

export const NewWorkspaceSchema = z
  .object({
    name: WorkspaceNameSchema,
    plan: z.enum(PLANS).default("free"),
    limits: LimitsPatchSchema.optional(),
    api_key: NewApiKeySchema.optional().openapi({ description: "The first key; default: an admin key." }),
  })
  .strict()
  .openapi("NewWorkspace");

export const CreatedWorkspaceSchema = z
  .object({ workspace: WorkspaceSchema, api_key: CreatedApiKeySchema })
  .openapi("CreatedWorkspace");

export const WorkspaceOperatorPatchSchema = z
  .object({
    name: WorkspaceNameSchema.optional(),
    plan: z.enum(PLANS).optional(),
    limits: LimitsPatchSchema.optional(),
  })
  .strict()
  .openapi("WorkspaceOperatorPatch");

const createWorkspaceRoute = createRoute({
  method: "post",
  path: "/api/v1/workspaces",
  operationId: "createWorkspace",
  tags: ["Workspaces"],
  summary: "Create a workspace (operator)",
  description: "Creates a workspace on a plan and its first API key. The key is in the response once; store it.",
  "x-audit-action": "workspace.create",
  middleware: [requireOperator] as const,
  request: {
    body: jsonBody(NewWorkspaceSchema),
  },
  responses: {
    201: jsonResponse("Created.", CreatedWorkspaceSchema),
    ...API_PROBLEMS,
    ...problemResponses("VALIDATION_FAILED"),
  },
});

const getWorkspaceRoute = createRoute({
  method: "get",
  path: "/api/v1/workspaces/{id}",
  operationId: "getWorkspaceAsOperator",
  tags: ["Workspaces"],
  summary: "Read a workspace (operator)",
  middleware: [requireOperator] as const,
  request: { params: WorkspaceIdParam },
  responses: {
    200: jsonResponse("The workspace.", WorkspaceSchema),
    ...API_PROBLEMS,
    // VALIDATION_FAILED: an id past the param's 64 characters.
    ...problemResponses("NOT_FOUND", "VALIDATION_FAILED"),
  },
});

const patchWorkspaceRoute = createRoute({
  method: "patch",
  path: "/api/v1/workspaces/{id}",
  operationId: "updateWorkspaceAsOperator",
  tags: ["Workspaces"],
  summary: "Change a workspace's plan and limits (operator)",
  description: "A new plan resets limits to its defaults, then explicit `limits` apply. Takes effect within 5 s.",
  "x-audit-action": "workspace.update",
  middleware: [requireOperator] as const,
  request: {
    params: WorkspaceIdParam,
    body: jsonBody(WorkspaceOperatorPatchSchema),
  },
  responses: {
    200: jsonResponse("The changed workspace.", WorkspaceSchema),
    ...API_PROBLEMS,
    ...problemResponses("NOT_FOUND", "VALIDATION_FAILED"),
  },
});

export function registerWorkspaceRoutes(app: OpenAPIHono<HonoEnv>): void {
  app.openapi(createWorkspaceRoute, async (c) => {
    const body = c.req.valid("json");
    const db = createDb(c.get("config").DB);
    const workspace = newWorkspaceRow(body);
    const keyInput = body.api_key ?? { name: "Admin key", scopes: ["admin" as const] };
    const created = await newApiKey({ workspaceId: workspace.id, ...newApiKeyFields(keyInput), createdBy: "operator" });
    const context = auditContext(c);
    await db.batch([
      db.insert(workspaces).values(workspace),
      db.insert(apiKeys).values(created.row),
      auditInsert(db, {
        ...context,
        workspaceId: workspace.id,
        action: "workspace.create",
        resourceType: "workspace",
        resourceId: workspace.id,
        changes: { after: { name: workspace.name, plan: workspace.plan, limits: workspace.limits } },
      }),
      auditInsert(db, {
        ...context,
        workspaceId: workspace.id,
        action: "api_key.create",
        resourceType: "api_key",
        resourceId: created.row.id,
        // As POST /api/v1/api-keys records a key's creation: with when it expires.
        changes: { after: { name: created.row.name, scopes: created.row.scopes, expires_at: created.row.expiresAt } },
      }),
    ]);
    const row = await findWorkspace(db, workspace.id);
    if (!row) throw new ApiError("INTERNAL", "The workspace was not stored.");
    return c.json(
      {
        workspace: toWorkspaceView(row),
        api_key: { ...toApiKeyView(created.row), key: created.key },
      },
      201,
    );
  });

  app.openapi(getWorkspaceRoute, async (c) => {
    const db = createDb(c.get("config").DB);
    const { id } = c.req.valid("param");
    const row = await findWorkspace(db, id);
    if (!row) throw new ApiError("NOT_FOUND", `No workspace ${id}.`);
    return c.json(toWorkspaceView(row, await queueDepth(db, id)), 200);
  });

  app.openapi(patchWorkspaceRoute, async (c) => {
    const db = createDb(c.get("config").DB);
    const { id } = c.req.valid("param");
    const row = await findWorkspace(db, id);
    if (!row) throw new ApiError("NOT_FOUND", `No workspace ${id}.`);
    const changes = c.req.valid("json");
    const next = applyWorkspaceChanges(row, changes);
    const [[stored]] = await db.batch([
      updateWorkspaceStatement(db, next, changes),
      auditInsert(db, {
        ...auditContext(c),
        workspaceId: id,
        action: "workspace.update",
        resourceType: "workspace",
        resourceId: id,
        changes: {
          before: { name: row.name, plan: row.plan, limits: row.limits },
          after: { name: next.name, plan: next.plan, limits: next.limits },
        },
      }),
    ]);
    const limits = (stored ?? next).limits;
    if (
      limits.max_running_tasks !== row.limits.max_running_tasks ||
      limits.max_pending_tasks !== row.limits.max_pending_tasks
    ) {
      await applyTaskCaps(c.get("config"), db, id, limits, c.get("logger"));
    }
    return c.json(toWorkspaceView(stored ?? next, await queueDepth(db, id)), 200);
  });
}
