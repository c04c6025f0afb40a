import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { sql } from "drizzle-orm";
import { auditContext, auditInsert, auditInsertIf } from "../audit/index.ts";
import {
  listApiKeys,
  newApiKey,
  newApiKeyFields,
  revokeStatement,
  toApiKeyView,
  unrevokedKey,
} from "../auth/api-keys.ts";
import { forgetApiKey } from "../auth/authenticate.ts";
import { actorOf, type Principal } from "../auth/principal.ts";
import { findOwnedOr404, tenantDb } from "../auth/tenant-access.ts";
import { apiKeys } from "../db/schema.ts";
import { revokeKeyStreams } from "../events/service.ts";
import { API_PROBLEMS, jsonBody, jsonResponse, problemResponses } from "../lib/openapi.ts";
import { decodeCursor, PageQuerySchema, pageSchema, toPage } from "../lib/pagination.ts";
import { ApiError } from "../lib/problem.ts";
import { requireScope } from "../middleware/auth.ts";
import type { HonoEnv } from "../types.ts";
import { ApiKeySchema, CreatedApiKeySchema, IdParamSchema, NewApiKeySchema } from "../workspaces/schemas.ts";

/** The workspace's API keys. Managing keys needs the `admin` scope; revocation is effective within 5 s. */

const KeyIdParam = IdParamSchema("key", "key_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3");

const createKeyRoute = createRoute({
  method: "post",
  path: "/api/v1/api-keys",
  operationId: "createApiKey",
  tags: ["API keys"],
  summary: "Create an API key",
  description:
    "The secret `key` is in this response only. Stored as a SHA-256 hash. A key made with a key that expires expires no later: without `expires_at` it gets its maker's, and a later one is a 422.",
  "x-audit-action": "api_key.create",
  middleware: [requireScope("admin")] as const,
  request: { body: jsonBody(NewApiKeySchema) },
  responses: {
    201: jsonResponse("Created.", CreatedApiKeySchema),
    ...API_PROBLEMS,
    ...problemResponses("VALIDATION_FAILED"),
  },
});

const listKeysRoute = createRoute({
  method: "get",
  path: "/api/v1/api-keys",
  operationId: "listApiKeys",
  tags: ["API keys"],
  summary: "List API keys",
  description: "Newest first, including revoked keys (with `revoked_at`). Secrets are never shown again.",
  middleware: [requireScope("admin")] as const,
  request: { query: PageQuerySchema },
  responses: {
    200: {
      description: "A page of keys.",
      content: { "application/json": { schema: pageSchema(ApiKeySchema, "ApiKeyPage") } },
    },
    ...API_PROBLEMS,
    ...problemResponses("VALIDATION_FAILED"),
  },
});

const revokeKeyRoute = createRoute({
  method: "delete",
  path: "/api/v1/api-keys/{id}",
  operationId: "revokeApiKey",
  tags: ["API keys"],
  summary: "Revoke an API key",
  description:
    "The isolate that revokes the key refuses it at once, every other within 5 s. The event streams the key opened (with its bearer or a ticket it took) are closed with a `CREDENTIALS_REVOKED` error frame and close code 1008, and its unused tickets stop working. Revoking a revoked key changes nothing.",
  "x-audit-action": "api_key.revoke",
  middleware: [requireScope("admin")] as const,
  request: { params: KeyIdParam },
  responses: {
    200: jsonResponse("The revoked key.", ApiKeySchema),
    ...API_PROBLEMS,
    // VALIDATION_FAILED: an id past the param's 64 characters.
    ...problemResponses("NOT_FOUND", "VALIDATION_FAILED"),
  },
});

/**
 * A key made by a key that expires ends no later than its maker: without an `expires_at` it gets the maker's, and a
 * later one is a 422. Otherwise a short-lived admin key (one handed to a contractor for a day) could mint itself an
 * admin key that never expires. A user's token (a JWT session) makes keys as it asks: that is what keys are for.
 */
function withinCreatorsLife(expiresAt: string | null, principal: Principal): string | null {
  if (principal.kind !== "api_key" || !principal.expiresAtMs) return expiresAt;
  const makerEnds = new Date(principal.expiresAtMs).toISOString();
  if (expiresAt === null) return makerEnds;
  if (Date.parse(expiresAt) <= principal.expiresAtMs) return expiresAt;
  throw new ApiError("VALIDATION_FAILED", "The key would outlive the key that creates it.", {
    errors: [{ path: "expires_at", message: `must be no later than ${makerEnds}, when the key creating it expires` }],
  });
}

export function registerApiKeyRoutes(app: OpenAPIHono<HonoEnv>): void {
  app.openapi(createKeyRoute, async (c) => {
    const { db, workspaceId } = tenantDb(c);
    const body = c.req.valid("json");
    const principal = c.get("principal")!;
    const fields = newApiKeyFields(body);
    fields.expiresAt = withinCreatorsLife(fields.expiresAt, principal);
    const created = await newApiKey({ workspaceId, ...fields, createdBy: actorOf(principal).id });
    await db.batch([
      db.insert(apiKeys).values(created.row),
      auditInsert(db, {
        ...auditContext(c),
        workspaceId,
        action: "api_key.create",
        resourceType: "api_key",
        resourceId: created.row.id,
        changes: { after: { name: created.row.name, scopes: created.row.scopes, expires_at: created.row.expiresAt } },
      }),
    ]);
    return c.json({ ...toApiKeyView(created.row), key: created.key }, 201);
  });

  app.openapi(listKeysRoute, async (c) => {
    const { db, workspaceId } = tenantDb(c);
    const { limit, cursor } = c.req.valid("query");
    const rows = await listApiKeys(db, workspaceId, { limit, after: decodeCursor(cursor) });
    return c.json(
      toPage(rows, limit, (row) => ({ createdAt: row.createdAt, id: row.id }), toApiKeyView),
      200,
    );
  });

  app.openapi(revokeKeyRoute, async (c) => {
    const { id } = c.req.valid("param");
    const row = await findOwnedOr404(c, apiKeys, id, "api_key");
    if (row.revokedAt) return c.json(toApiKeyView(row), 200);
    const { db, workspaceId } = tenantDb(c);
    const revokedAt = new Date().toISOString();
    // Both only if the key is still unrevoked when the batch runs: of concurrent revokes, one revokes it and writes
    // the entry; the others change nothing (they overwrote revoked_at, and each wrote an entry claiming the revoke).
    const [, revoked] = await db.batch([
      auditInsertIf(
        db,
        {
          ...auditContext(c),
          workspaceId,
          action: "api_key.revoke",
          resourceType: "api_key",
          resourceId: id,
          changes: { before: { revoked_at: null }, after: { revoked_at: revokedAt } },
        },
        sql`EXISTS (SELECT 1 FROM api_keys WHERE ${unrevokedKey(workspaceId, id)})`,
      ),
      revokeStatement(db, workspaceId, id, revokedAt).returning(),
    ]);
    forgetApiKey(row.keyHash);
    // Immediate for what the key opened too: its event streams are closed and its unused tickets dropped.
    try {
      await revokeKeyStreams(c.get("config"), workspaceId, id);
    } catch (error) {
      c.get("logger").error("closing a revoked key's event streams failed", { error, key_id: id });
    }
    // Revoked by another request meanwhile: answered as a revoked key is, with the time it was revoked at.
    const stored = revoked[0] ?? (await findOwnedOr404(c, apiKeys, id, "api_key"));
    return c.json(toApiKeyView(stored), 200);
  });
}
