import { type OpenAPIHono, type RouteConfig, z } from "@hono/zod-openapi";
import type { Context, ErrorHandler, Hono, NotFoundHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ZodError } from "zod";
import { ApiError, type FieldError, problemResponse } from "../lib/problem.ts";
import { isOpenAiCompatiblePath, openAiError } from "../llm/http-errors.ts";
import { reportError } from "../observability/sentry.ts";
import type { HonoEnv } from "../types.ts";
import { jsonSyntaxProblem } from "./body.ts";

/** What `input` holds at `path`, or undefined where nothing is. */
function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let value = input;
  for (const key of path) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return value;
}

const joinPath = (path: readonly PropertyKey[]) => (path.length ? path.map(String).join(".") : "(root)");

/**
 * Zod issues as `{path, message}` pairs, the `errors` member of a 422. A field
 * left out says "is required" (zod says "received undefined", or of an enum
 * only "Invalid option"), and each unknown field is named by its own path
 * rather than all of them at `(root)`, so a caller (and OpenAI's `param`)
 * sees which one to remove. `input` is what was validated.
 */
export function fieldErrors(error: ZodError, input?: unknown, target?: string): FieldError[] {
  return error.issues.flatMap((issue): FieldError[] => {
    if (issue.code === "unrecognized_keys") {
      // A schema may say where such a field belongs instead (PATCH /api/v1/workspace's `limits`).
      const own = !issue.message.startsWith("Unrecognized key");
      return issue.keys.map((key) => ({
        path: joinPath([...issue.path, key]),
        message: own ? issue.message : "is not a field of this request; remove it or check its spelling",
      }));
    }
    const value = valueAt(input, issue.path);
    const missing = input !== undefined && value === undefined;
    let message = issue.message;
    if (issue.code === "invalid_type" && issue.message.endsWith("received undefined")) {
      message = `is required (expected ${issue.expected})`;
    } else if (target === "query" && Array.isArray(value)) {
      // `?status=a&status=b`: a parameter repeated reaches the schema as an array.
      message = `is given ${value.length} times; give it once (a parameter that takes a list takes it comma-separated: a,b)`;
    } else if (issue.code === "invalid_type" && issue.message.endsWith("received NaN")) {
      // A query parameter coerced to a number (`?limit=ten`): zod says only that it read NaN.
      message = `must be a number, not ${JSON.stringify(value)}`;
    } else if (issue.code === "invalid_format" && issue.message === "Invalid ISO datetime") {
      // zod says "Invalid ISO datetime", which does not show the form (nor that a bare day is not one).
      message = `must be an ISO 8601 date-time, such as 2026-01-31T00:00:00Z; got ${JSON.stringify(value)}`;
    } else if (issue.code === "invalid_value" && missing) {
      message = `is required (one of ${issue.values.map((value) => JSON.stringify(value)).join(", ")})`;
    }
    return [{ path: joinPath(issue.path), message }];
  });
}

/** What a 422's detail calls each part of a request Hono validates ("The request path is invalid."). */
const VALIDATION_TARGETS: Record<string, string> = { json: "body", param: "path" };

/**
 * `defaultHook` of the OpenAPI app: a failed zod check becomes a 422 problem.
 * A query parameter the route does not take is one too, as an unknown body
 * field is: zod drops it silently, so `?state=failed` (for `status`) answered
 * every task as if filtered.
 */
export function validationHook(
  result:
    | { success: true; data?: unknown; target: string }
    | { success: false; error: ZodError; target: string; data?: unknown },
  c: Context<HonoEnv>,
): void {
  if (!result.success) {
    const where = VALIDATION_TARGETS[result.target] ?? result.target;
    throw new ApiError("VALIDATION_FAILED", `The request ${where} is invalid.`, {
      errors: fieldErrors(result.error, result.data, result.target),
    });
  }
  if (result.target === "query" && result.data !== null && typeof result.data === "object") {
    const taken = result.data as Record<string, unknown>;
    const unknown = Object.keys(c.req.queries()).filter((name) => !(name in taken));
    if (unknown.length > 0) {
      throw new ApiError("VALIDATION_FAILED", "The request query is invalid.", {
        errors: unknown.map((name) => ({
          path: name,
          message: "is not a parameter of this route; remove it or check its spelling",
        })),
      });
    }
  }
}

/** The query of a route that declares none: any parameter is one it does not take. */
const NO_QUERY = z.object({});

/**
 * Every operation under /api/v1 checks its query, so that one it does not take is a 422 naming it (validationHook)
 * whether or not the route declares parameters: `GET /api/v1/llm/models?limit=1` answered every model as if paged,
 * and the openai SDK's `responses.retrieve(id, {stream: true})` got the JSON answer where it read a stream (and so
 * no event at all). A route that declares a query is checked against its own; others against none. The operation's
 * document is unchanged: an empty query has no parameters.
 */
export function refuseUndeclaredQueries(app: OpenAPIHono<HonoEnv>): void {
  const register = app.openapi;
  const checked = (route: RouteConfig): RouteConfig =>
    route.request?.query || !route.path.startsWith("/api/v1/")
      ? route
      : { ...route, request: { ...route.request, query: NO_QUERY } };
  app.openapi = ((route: RouteConfig, ...rest: unknown[]) =>
    (register as (...args: unknown[]) => unknown)(checked(route), ...rest)) as typeof app.openapi;
}

function fromHttpException(error: HTTPException): ApiError {
  if (error.status === 400 && /json/i.test(error.message)) return new ApiError("MALFORMED_JSON");
  if (error.status === 413) return new ApiError("PAYLOAD_TOO_LARGE");
  if (error.status === 415) return new ApiError("UNSUPPORTED_MEDIA_TYPE");
  if (error.status === 401) return new ApiError("UNAUTHENTICATED");
  if (error.status === 403) return new ApiError("FORBIDDEN");
  if (error.status === 404) return new ApiError("NOT_FOUND");
  if (error.status < 500) return new ApiError("BAD_REQUEST", error.message || undefined);
  return new ApiError("INTERNAL");
}

/**
 * The detail of a body that is not JSON: what the parser found and where
 * (`Expected ',' or '}' after property value in JSON at position 11`), or that
 * the body is empty. Hono's JSON validator keeps the body's text when it fails
 * to parse it, so reading it again here costs no second read of the stream.
 */
async function malformedJsonDetail(c: Context<HonoEnv>): Promise<string | undefined> {
  let text: string;
  try {
    text = await c.req.text();
  } catch {
    return undefined;
  }
  if (text.trim() === "") return "The body is empty; send a JSON object.";
  return jsonSyntaxProblem(text);
}

/** A problem response; the OpenAI-compatible routes' also carry OpenAI's error object, for OpenAI's SDKs. */
function respond(c: Context<HonoEnv>, error: ApiError, forOpenAi = isOpenAiCompatiblePath(c.req.path)): Response {
  const requestId = c.get("requestId") ?? "unknown";
  return problemResponse(error, requestId, {}, forOpenAi ? openAiError(error) : undefined);
}

/** The one place a thrown error becomes a response. Unknown errors are logged, reported, and hidden. */
export const onError: ErrorHandler<HonoEnv> = async (error, c) => {
  const requestId = c.get("requestId") ?? "unknown";
  let apiError: ApiError;
  if (error instanceof ApiError) {
    apiError = error;
  } else if (error instanceof HTTPException) {
    apiError = fromHttpException(error);
    if (apiError.code === "MALFORMED_JSON") {
      const detail = await malformedJsonDetail(c);
      if (detail) apiError = new ApiError("MALFORMED_JSON", detail);
    }
  } else {
    c.get("logger")?.error("unhandled error", { error });
    reportError(c.env, c.executionCtx, error, {
      request: c.req.raw,
      tags: { request_id: requestId, workspace_id: c.get("workspaceId"), trace_id: c.get("trace")?.traceId },
    });
    apiError = new ApiError("INTERNAL", "An unexpected error occurred; it has been reported.");
  }
  return respond(c, apiError);
};

interface RoutePattern {
  method: string;
  matcher: RegExp;
}

function toMatcher(path: string): RegExp {
  const pattern = path
    .split("/")
    .map((segment) => {
      if (segment === "*") return ".*";
      if (segment.startsWith(":")) return "[^/]+";
      return segment.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    })
    .join("/");
  // Exact, as Hono's own routing is: `/health/` is not `/health`.
  return new RegExp(`^${pattern}$`);
}

/** Where OpenAI's SDKs are pointed (`baseURL`): its routes are under it. */
const OPENAI_BASE_PATH = "/api/v1/llm";
const OPENAI_ROUTES = ["/chat/completions", "/responses", "/models"];

/**
 * The OpenAI-compatible route a path meant when an SDK's `baseURL` missed
 * `/api/v1/llm` (`<origin>/v1`, `<origin>/api/v1`) or doubled a `/v1`: the
 * path ends as the route does, under another base.
 */
function openAiPathMeant(path: string): string | null {
  for (const route of OPENAI_ROUTES) {
    if (path.endsWith(route) && path !== `${OPENAI_BASE_PATH}${route}`) return `${OPENAI_BASE_PATH}${route}`;
  }
  return null;
}

/**
 * Unknown path → 404; known path with another method → 405 with `Allow`
 * (OPTIONS, not a preflight, → 204 with it).
 * Hono has no 405 of its own, so the registered routes are matched here.
 * A path that only differs from a route by a trailing slash is a 404 that
 * names the route meant (`did_you_mean`).
 */
export function notFoundHandler(app: Hono<HonoEnv>): NotFoundHandler<HonoEnv> {
  let patterns: RoutePattern[] | undefined;
  return (c) => {
    patterns ??= app.routes
      .filter((route) => route.method !== "ALL")
      .map((route) => ({ method: route.method, matcher: toMatcher(route.path) }));
    const allowed = new Set<string>();
    for (const pattern of patterns) if (pattern.matcher.test(c.req.path)) allowed.add(pattern.method);
    if (allowed.size > 0) {
      if (allowed.has("GET")) allowed.add("HEAD");
      allowed.add("OPTIONS");
      const allow = [...allowed].sort().join(", ");
      // OPTIONS asks what a path takes (a browser's preflight, which sends Origin, is answered by cors instead).
      if (c.req.method === "OPTIONS") return c.body(null, 204, { Allow: allow });
      return respond(
        c,
        new ApiError("METHOD_NOT_ALLOWED", `${c.req.method} is not allowed on ${c.req.path}; allowed: ${allow}.`, {
          headers: { Allow: allow },
        }),
      );
    }
    const trimmed = c.req.path.replace(/\/+$/, "") || "/";
    const method = c.req.method === "HEAD" ? "GET" : c.req.method;
    const openAi = openAiPathMeant(trimmed);
    const meant =
      openAi ??
      (trimmed !== c.req.path && patterns.some((pattern) => pattern.method === method && pattern.matcher.test(trimmed))
        ? trimmed
        : null);
    const hint = openAi ? ` (an OpenAI SDK's baseURL is ${OPENAI_BASE_PATH})` : "";
    return respond(
      c,
      new ApiError(
        "NOT_FOUND",
        `No route matches ${c.req.method} ${c.req.path}${meant ? `; did you mean ${meant}?${hint}` : "."}`,
        meant ? { extensions: { did_you_mean: meant } } : {},
      ),
      // An OpenAI SDK reads the `error` member: its message is then this detail, not the whole body.
      openAi !== null || isOpenAiCompatiblePath(c.req.path),
    );
  };
}
