import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { auditContext, recordAudit } from "../audit/index.ts";
import { createDb } from "../db/client.ts";
import { EVENT_ID_PATTERN, EVENT_TYPES, EventEnvelopeSchema } from "../events/catalog.ts";
import { eventsJsonSchema } from "../events/json-schema.ts";
import {
  createTicket,
  eventsReaderWorkspace,
  holderOf,
  listEvents,
  openEventStream,
  parseFilters,
} from "../events/service.ts";
import { API_PROBLEMS, BEARER_AUTH, problemResponses } from "../lib/openapi.ts";
import type { HonoEnv } from "../types.ts";

const TAG = "Events";

const EventSchema = z
  .looseObject({ ...EventEnvelopeSchema.shape, seq: z.number().int().positive() })
  .openapi("Event", { description: "An event: the envelope; `data` per type is in `GET /api/v1/events/schema`." });

const FilterQuery = {
  types: z
    .string()
    .optional()
    .openapi({
      description: `Comma-separated event types or wildcards (\`task.*\`, \`*\`). Types: ${EVENT_TYPES.join(", ")}.`,
      example: "task.*,tool.call",
    }),
  channels: z.string().optional().openapi({
    description: "Comma-separated channels: `task:{id}`, `run:{id}`, `workflow:{id}`, or `*` (default).",
    example: "task:task_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3",
  }),
  version: z.string().optional().openapi({
    description:
      "Deliver each event at the newest version of its type not above this `major.minor` (e.g. `2.0`): older events are upcast, a newer minor loses the optional fields it added, a newer major is sent as it is. An unknown major is refused.",
    example: "1.0",
  }),
};

const listRoute = createRoute({
  method: "get",
  path: "/api/v1/events",
  operationId: "listEvents",
  tags: [TAG],
  summary: "Event history",
  description:
    "The workspace's events in `seq` order from the hub's log (7-day window), after `?after=<event_id>` " +
    "or from the oldest kept. An `after` or `cursor` whose next events were trimmed answers 404: reload state. " +
    "Full per-type shapes: `GET /api/v1/events/schema`.",
  request: {
    query: z.object({
      after: z.string().regex(EVENT_ID_PATTERN).optional().openapi({ description: "Return events after this one." }),
      cursor: z.string().max(64).optional().openapi({ description: "`next_cursor` of the previous page." }),
      limit: z.coerce.number().int().min(1).max(100).default(20),
      ...FilterQuery,
    }),
  },
  responses: {
    200: {
      description: "A page of events.",
      content: {
        "application/json": {
          schema: z.object({ data: z.array(EventSchema), next_cursor: z.string().nullable() }).openapi("EventPage"),
        },
      },
    },
    ...API_PROBLEMS,
    ...problemResponses("NOT_FOUND", "VALIDATION_FAILED"),
  },
});

const schemaRoute = createRoute({
  method: "get",
  path: "/api/v1/events/schema",
  operationId: "getEventSchema",
  tags: [TAG],
  summary: "Event JSON Schema",
  description:
    "The event contract as JSON Schema (draft 2020-12): the envelope and each type's `data`, per version, under `$defs`.",
  responses: {
    200: {
      description: "The JSON Schema document.",
      content: { "application/json": { schema: z.record(z.string(), z.any()).openapi("EventJsonSchema") } },
    },
    ...problemResponses("UNAUTHENTICATED", "NOT_FOUND", "RATE_LIMITED", "DEPENDENCY_UNAVAILABLE"),
  },
});

const ticketRoute = createRoute({
  method: "post",
  path: "/api/v1/events/tickets",
  operationId: "createEventTicket",
  tags: [TAG],
  summary: "WebSocket ticket",
  description:
    "A single-use ticket valid for 60 seconds (less when the credentials it is taken with expire sooner: `expires_at` says when), for `GET /api/v1/events/ws?ticket=…`, so browsers never put an API key in a URL.",
  "x-audit-action": "event_ticket.create",
  responses: {
    201: {
      description: "The ticket.",
      content: {
        "application/json": {
          schema: z
            .object({
              ticket: z.string().openapi({ example: "tkt_3q2-…_x.ws_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3" }),
              expires_at: z.iso.datetime(),
            })
            .openapi("EventTicket"),
        },
      },
    },
    ...API_PROBLEMS,
  },
});

const streamRoute = createRoute({
  method: "get",
  path: "/api/v1/events/ws",
  operationId: "streamEvents",
  tags: [TAG],
  summary: "Event stream (WebSocket)",
  description:
    "Upgrades to a WebSocket. Authenticate with the bearer header or `?ticket=`. Server frames: " +
    '`{"type":"event","event":{…}}`; after a resume (`?last_event_id=`) first `{"type":"replay","recovered":true,"count":N}` ' +
    'then the N missed events, or `{"type":"replay","recovered":false,"count":0}` when the gap is beyond the window ' +
    '(reload over HTTP); `{"type":"error","code":…,"message":…}`; `{"type":"subscribed",…}` acknowledges a subscription change. ' +
    'Client frames: `{"type":"subscribe"|"unsubscribe","types":[…],"channels":[…]}`, `{"type":"ping"}` (answered `{"type":"pong"}`), ' +
    'and `{"type":"ping","last_seq":N}`, which acknowledges every event up to seq N (not answered). ' +
    "A client with more than 4 MiB of unacknowledged events is a slow consumer: it gets `SLOW_CONSUMER`, is closed with 1013 " +
    "and resumes from its last event. A full hub sends `CONNECTION_LIMIT` and closes with 1013. " +
    "A stream lives no longer than its credentials: when the API key it was opened with (directly or through a ticket) " +
    "is revoked it gets `CREDENTIALS_REVOKED`, when that key's `expires_at` or the JWT's `exp` (plus 60 s of skew) passes " +
    "`CREDENTIALS_EXPIRED`, and is closed with 1008; reconnect with fresh credentials.",
  security: [{ [BEARER_AUTH]: [] }, {}] as { [name: string]: string[] }[],
  request: {
    query: z.object({
      ticket: z.string().max(200).optional().openapi({ description: "From `POST /api/v1/events/tickets`." }),
      last_event_id: z.string().regex(EVENT_ID_PATTERN).max(64).optional().openapi({
        description: "Resume: replay the events after this one, then go live.",
      }),
      ...FilterQuery,
    }),
  },
  responses: {
    101: { description: "Switching protocols: the event stream." },
    ...API_PROBLEMS,
    ...problemResponses("BAD_REQUEST", "VALIDATION_FAILED"),
  },
});

export function registerEventRoutes(app: OpenAPIHono<HonoEnv>): void {
  app.openapi(listRoute, async (c) => {
    const workspaceId = eventsReaderWorkspace(c.get("principal"));
    const query = c.req.valid("query");
    const page = await listEvents(c.get("config"), workspaceId, { ...query, ...parseFilters(query) });
    // Stored events were validated on publish; the schema's output type only differs by its index signature.
    return c.json({ data: page.data as z.output<typeof EventSchema>[], next_cursor: page.next_cursor }, 200);
  });

  app.openapi(schemaRoute, (c) => {
    c.header("Cache-Control", "public, max-age=300");
    return c.json(eventsJsonSchema(), 200);
  });

  app.openapi(ticketRoute, async (c) => {
    const principal = c.get("principal");
    const workspaceId = eventsReaderWorkspace(principal);
    const ticket = await createTicket(c.get("config"), workspaceId, holderOf(principal));
    // The ticket lives in the hub, not D1, so its audit entry follows rather than sharing a batch.
    await recordAudit(createDb(c.get("config").DB), {
      ...auditContext(c),
      workspaceId,
      action: "event_ticket.create",
      resourceType: "event_ticket",
      metadata: { expires_at: ticket.expires_at },
    });
    return c.json(ticket, 201);
  });

  app.openapi(streamRoute, async (c) => {
    const query = c.req.valid("query");
    return openEventStream(c.get("config"), c.req.raw, c.get("principal"), query);
  });
}
