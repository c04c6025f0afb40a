import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { EVENT_TYPES, type EventDataMap } from "../events/catalog.ts";
import { InvalidEventError, publish } from "../events/publish.ts";
import { createTicket } from "../events/service.ts";
import { ApiError } from "../lib/problem.ts";
import type { HonoEnv } from "../types.ts";

/**
 * Publishing from outside, for end-to-end tests and the events benchmark: the
 * contract has no public publish route (events come from the domains). Only
 * with ENABLE_DEBUG_ROUTES=true, which staging and production refuse; not in the OpenAPI document.
 */
export function registerDebugEventRoutes(app: OpenAPIHono<HonoEnv>): void {
  app.use("/__debug/events/*", async (c, next) => {
    if (!c.get("config").ENABLE_DEBUG_ROUTES)
      throw new ApiError("NOT_FOUND", `No route matches ${c.req.method} ${c.req.path}.`);
    await next();
  });

  app.openapi(publishRoute, async (c) => {
    const body = c.req.valid("json");
    const published: { event_id: string; seq: number }[] = [];
    for (let i = 0; i < body.count; i++) {
      try {
        const event = await publish(
          c.get("config"),
          {
            event_type: body.event_type,
            workspace_id: body.workspace_id,
            data: body.data as EventDataMap[typeof body.event_type],
            task_id: body.task_id,
            run_id: body.run_id,
            agent_id: body.agent_id,
          },
          { logger: c.get("logger"), executionCtx: c.executionCtx },
        );
        published.push({ event_id: event.event_id, seq: event.seq });
      } catch (error) {
        if (error instanceof InvalidEventError)
          throw new ApiError("VALIDATION_FAILED", error.message, { errors: error.issues });
        throw error;
      }
    }
    return c.json({ published }, 200);
  });

  app.openapi(ticketRoute, async (c) => {
    const { workspace_id } = c.req.valid("json");
    return c.json(
      await createTicket(c.get("config"), workspace_id, { display: "debug", keyId: null, expiresAtMs: null }),
      201,
    );
  });
}

const publishRoute = createRoute({
  method: "post",
  path: "/__debug/events/publish",
  hide: true,
  request: {
    body: {
      required: true,
      content: {
        "application/json": {
          schema: z.object({
            workspace_id: z.string().min(1).max(128),
            event_type: z.enum(EVENT_TYPES),
            data: z.record(z.string(), z.unknown()),
            task_id: z.string().optional(),
            run_id: z.string().optional(),
            agent_id: z.string().optional(),
            /** The same event published this many times, one after another. */
            count: z.number().int().min(1).max(5_000).default(1),
          }),
        },
      },
    },
  },
  responses: { 200: { description: "The ids and seqs assigned." } },
});

const ticketRoute = createRoute({
  method: "post",
  path: "/__debug/events/tickets",
  hide: true,
  request: {
    body: {
      required: true,
      content: { "application/json": { schema: z.object({ workspace_id: z.string().min(1).max(128) }) } },
    },
  },
  responses: { 201: { description: "A ticket for any workspace (tests only)." } },
});
