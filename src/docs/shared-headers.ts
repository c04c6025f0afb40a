import type { OpenAPIHono } from "@hono/zod-openapi";
import { guardedCallers, type RouteCallers } from "../middleware/auth.ts";
import { API_VERSION } from "../middleware/request-context.ts";
import type { HonoEnv } from "../types.ts";

/**
 * The response headers the middleware sets, written into every operation of
 * the generated document in one pass, so route files declare only their own
 * (`X-LLM-Provider`, an artifact's `ETag`, …). A header a route declares
 * itself is left as the route wrote it.
 *
 * What the middleware does, and so what the document says:
 * - `X-Request-Id` and `X-API-Version`: the first middleware sets them on
 *   every response, errors included.
 * - `RateLimit` and `RateLimit-Policy`: only under /api/v1, once a workspace
 *   credential (API key or JWT) has been authenticated and counted. Never on a
 *   401 or a 415 (refused before that), nor on the operator token's answers;
 *   sometimes on 413 (a declared length is refused before, a streamed body
 *   after), 429 (a blocked client is refused before), 503 (the limiter itself
 *   down) and 403 (the operator token on a workspace route is not counted).
 *   Which callers reach a route is read from its guard (`requireScope`,
 *   `requireOperator`); a route without one may answer either, so there they
 *   are "sometimes" throughout.
 * - `Retry-After`: every 429; a 503 under /api/v1 when retrying may help.
 * - `WWW-Authenticate`: every 401 of authentication (not a WebSocket ticket's).
 */

interface HeaderObject {
  description: string;
  required?: boolean;
  schema: { type: "string" | "integer"; example?: string | number };
}
type Reference = { $ref: string };
interface ResponseObject {
  headers?: Record<string, HeaderObject | Reference>;
}
interface OperationObject {
  security?: Record<string, string[]>[];
  responses?: Record<string, ResponseObject | Reference>;
}
interface Document {
  paths?: Record<string, object>;
  components?: { headers?: Record<string, object> };
}

const string = { type: "string" } as const;

/** Each shared header, as it is when always sent and as it is when only sometimes sent. */
const HEADERS = {
  "X-Request-Id": {
    always: {
      description:
        "This request's id: the caller's `X-Request-Id` if it is 8–128 characters of `A-Za-z0-9._:-`, else a new `req_<ulid>`. Problem bodies repeat it as `request_id`.",
      schema: { ...string, example: "req_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3" },
    },
  },
  "X-API-Version": {
    always: { description: "The API version that answered.", schema: { ...string, example: API_VERSION } },
  },
  RateLimit: {
    always: {
      description:
        'The caller\'s most constraining rate-limit policy now (IETF httpapi ratelimit-headers draft): `"<policy>";r=<requests left>;t=<seconds until it refills>`.',
      schema: { ...string, example: '"workspace";r=19;t=1' },
    },
    sometimes: {
      description:
        'As on other responses, `"<policy>";r=<requests left>;t=<seconds until it refills>`, when a workspace credential was counted before this answer; absent for the operator token and for refusals that come before counting (a blocked client, the rate limiter unavailable, a body refused by its declared length).',
      schema: { ...string, example: '"workspace";r=0;t=2' },
    },
  },
  "RateLimit-Policy": {
    always: {
      description:
        'The policy `RateLimit` reports (IETF httpapi ratelimit-headers draft): `"<policy>";q=<burst>;w=<seconds to refill>`.',
      schema: { ...string, example: '"workspace";q=20;w=2' },
    },
    sometimes: {
      description:
        'The policy `RateLimit` reports, `"<policy>";q=<burst>;w=<seconds to refill>`; sent with `RateLimit` and only with it.',
      schema: { ...string, example: '"workspace";q=20;w=2' },
    },
  },
  "Retry-After": {
    always: { description: "Seconds to wait before trying again.", schema: { type: "integer", example: 1 } },
    sometimes: {
      description:
        "Seconds to wait before trying again, when retrying may help (the rate limiter or task admission briefly unavailable, providers that asked for a wait).",
      schema: { type: "integer", example: 1 },
    },
  },
  "WWW-Authenticate": {
    always: {
      description: "The scheme to authenticate with.",
      schema: { ...string, example: 'Bearer realm="mgx-ai-edge"' },
    },
    sometimes: {
      description:
        "The scheme to authenticate with, when the bearer header was refused (not when a WebSocket ticket was).",
      schema: { ...string, example: 'Bearer realm="mgx-ai-edge"' },
    },
  },
} as const satisfies Record<string, { always: HeaderObject; sometimes?: HeaderObject }>;

type SharedHeader = keyof typeof HEADERS;
type Presence = "always" | "sometimes";
/** Who may reach an operation's handler: from its guard, "any" without one, "public" outside /api/v1. */
type Callers = RouteCallers | "any" | "public";

function componentName(name: SharedHeader, presence: Presence): string {
  return presence === "always" ? name : `${name}.sometimes`;
}

/** The shared headers of one response, and whether each is always sent. */
export function sharedHeadersOf(
  status: number,
  callers: Callers,
  anonymousAllowed: boolean,
): Partial<Record<SharedHeader, Presence>> {
  const headers: Partial<Record<SharedHeader, Presence>> = { "X-Request-Id": "always", "X-API-Version": "always" };
  if (status === 429) headers["Retry-After"] = "always";
  if (callers === "public") return headers;
  if (status === 503) headers["Retry-After"] = "sometimes";
  if (status === 401) headers["WWW-Authenticate"] = anonymousAllowed ? "sometimes" : "always";
  const rateLimit = rateLimitPresence(status, callers);
  if (rateLimit) {
    headers.RateLimit = rateLimit;
    headers["RateLimit-Policy"] = rateLimit;
  }
  return headers;
}

function rateLimitPresence(status: number, callers: RouteCallers | "any"): Presence | undefined {
  if (status === 401 || status === 415) return undefined;
  if (status === 413 || status === 429 || status === 503) return "sometimes";
  // A 403 on an operator route is a counted workspace credential; on another route it may be the operator token.
  if (status === 403) return callers === "operator" ? "always" : "sometimes";
  if (callers === "workspace") return "always";
  return callers === "operator" ? undefined : "sometimes";
}

const METHODS = new Set(["get", "put", "post", "delete", "options", "head", "patch", "trace"]);

/** `method path` (the document's `{id}` form) → the callers its guard admits, from the app's registered handlers. */
export function routeCallers(app: OpenAPIHono<HonoEnv>): Map<string, RouteCallers> {
  const callers = new Map<string, RouteCallers>();
  for (const route of app.routes) {
    const admitted = guardedCallers(route.handler);
    if (admitted) callers.set(`${route.method.toLowerCase()} ${route.path.replace(/:(\w+)/g, "{$1}")}`, admitted);
  }
  return callers;
}

/** Adds the shared headers (as `components.headers` references) to every response of every operation. */
export function withSharedHeaders<D extends Document>(doc: D, callersByOperation: Map<string, RouteCallers>): D {
  const used = new Set<string>();
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const [method, value] of Object.entries(item as Record<string, unknown>)) {
      if (!METHODS.has(method)) continue;
      const operation = value as OperationObject;
      const callers: Callers = path.startsWith("/api/v1/")
        ? (callersByOperation.get(`${method} ${path}`) ?? "any")
        : "public";
      const anonymousAllowed = (operation.security ?? []).some((requirement) => Object.keys(requirement).length === 0);
      for (const [status, response] of Object.entries(operation.responses ?? {})) {
        if ("$ref" in response || !/^\d{3}$/.test(status)) continue;
        const own = response.headers ?? {};
        const ownNames = new Set(Object.keys(own).map((name) => name.toLowerCase()));
        const shared: Record<string, Reference> = {};
        for (const [name, presence] of Object.entries(sharedHeadersOf(Number(status), callers, anonymousAllowed))) {
          if (ownNames.has(name.toLowerCase())) continue;
          const component = componentName(name as SharedHeader, presence);
          used.add(component);
          shared[name] = { $ref: `#/components/headers/${component}` };
        }
        response.headers = { ...own, ...shared };
      }
    }
  }
  const components: Record<string, HeaderObject> = {};
  for (const [name, variants] of Object.entries(HEADERS) as [SharedHeader, (typeof HEADERS)[SharedHeader]][]) {
    for (const presence of ["always", "sometimes"] as const) {
      const variant = (variants as { always: HeaderObject; sometimes?: HeaderObject })[presence];
      const component = componentName(name, presence);
      if (variant && used.has(component)) components[component] = { ...variant, required: presence === "always" };
    }
  }
  const written: Document = doc;
  written.components = { ...doc.components, headers: { ...doc.components?.headers, ...components } };
  return doc;
}
