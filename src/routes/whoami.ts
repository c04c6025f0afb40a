import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { actorOf } from "../auth/principal.ts";
import { problemResponses } from "../lib/openapi.ts";
import { ApiError } from "../lib/problem.ts";
import type { HonoEnv } from "../types.ts";
import { LimitsSchema, ScopeSchema } from "../workspaces/schemas.ts";

/** Who the credential is, from authentication alone: no storage read. */

/** The calling credential (the client SDK's `Whoami` type too). */
export const WhoamiSchema = z
  .object({
    kind: z.enum(["api_key", "user", "operator"]),
    id: z.string(),
    display: z.string(),
    workspace_id: z.string().nullable(),
    scopes: z.array(ScopeSchema),
    limits: LimitsSchema.nullable(),
  })
  .openapi("Whoami");

const whoamiRoute = createRoute({
  method: "get",
  path: "/api/v1/whoami",
  operationId: "whoami",
  tags: ["API keys"],
  summary: "Describe the calling credential",
  description:
    "The credential's kind, workspace, scopes and rate limits, as the API sees them. Rate limited like any call.",
  responses: {
    200: {
      description: "The caller.",
      content: {
        "application/json": {
          schema: WhoamiSchema,
        },
      },
    },
    ...problemResponses("UNAUTHENTICATED", "RATE_LIMITED", "DEPENDENCY_UNAVAILABLE"),
  },
});

export function registerWhoamiRoutes(app: OpenAPIHono<HonoEnv>): void {
  app.openapi(whoamiRoute, (c) => {
    const principal = c.get("principal");
    if (!principal) throw new ApiError("UNAUTHENTICATED");
    const actor = actorOf(principal);
    return c.json(
      {
        kind: principal.kind,
        id: actor.id,
        display: actor.display,
        workspace_id: principal.workspaceId,
        scopes: [...principal.scopes].sort(),
        limits: c.get("limits") ?? null,
      },
      200,
    );
  });
}
