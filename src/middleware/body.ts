import type { OpenAPIHono, RouteConfig } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { ApiError } from "../lib/problem.ts";
import type { HonoEnv } from "../types.ts";

export const JSON_MEDIA_TYPE = /^application\/([\w.-]+\+)?json$/i;
/** The methods whose body is checked; a GET or HEAD body is never read, so never refused either. */
export const METHODS_WITH_BODY = new Set(["POST", "PUT", "PATCH", "DELETE"]);
/**
 * The JSON Content-Type a route's own body check (zod-openapi's) takes: narrower than the standard, it refused
 * `application/json ; charset=utf-8` (a space before `;`), `application/json;` and a digit in a `+json` prefix,
 * each answered 400 "Unsupported Media Type" although JSON_MEDIA_TYPE took the body for JSON.
 */
const ROUTE_JSON_CONTENT_TYPE = /^application\/([a-z-.]+\+)?json(;\s*[a-zA-Z0-9-]+=([^;]+))*$/i;

function hasBody(request: Request): boolean {
  const length = request.headers.get("content-length");
  if (length !== null) return Number(length) > 0;
  // Neither header (an HTTP/2 body, or a Request built in code, as a service binding may send): is there a stream?
  return request.headers.has("transfer-encoding") || request.body !== null;
}

/** Bodies are JSON: anything else is a 415 before any handler parses it. */
export const requireJsonBody: MiddlewareHandler<HonoEnv> = async (c, next) => {
  if (METHODS_WITH_BODY.has(c.req.method) && hasBody(c.req.raw)) {
    const contentType = c.req.header("Content-Type") ?? "";
    const mediaType = contentType.split(";")[0].trim();
    if (!JSON_MEDIA_TYPE.test(mediaType)) {
      throw new ApiError(
        "UNSUPPORTED_MEDIA_TYPE",
        mediaType
          ? `Content-Type ${mediaType} is not supported; send application/json.`
          : "Content-Type is missing; send application/json.",
      );
    }
    // Nothing here decompresses a body: a gzip one was a 400 quoting its bytes as malformed JSON (RFC 9110 §15.5.16).
    const coding = (c.req.header("Content-Encoding") ?? "").trim().toLowerCase();
    if (coding !== "" && coding !== "identity") {
      const detail = `Content-Encoding ${coding} is not supported; send the body uncompressed.`;
      throw new ApiError("UNSUPPORTED_MEDIA_TYPE", detail, { headers: { "Accept-Encoding": "identity" } });
    }
    if (!ROUTE_JSON_CONTENT_TYPE.test(contentType)) {
      // A JSON body is read as UTF-8 JSON whatever its media type's form: say so in the form the routes read.
      const headers = new Headers(c.req.raw.headers);
      headers.set("Content-Type", "application/json");
      c.req.raw = new Request(c.req.raw, { headers });
    }
  }
  await next();
};

/** Refuses bodies over MAX_BODY_BYTES, whether or not the client declared a length. */
export const limitBodySize: MiddlewareHandler<HonoEnv> = (c, next) => {
  // No handler reads a GET or HEAD body, so its size harms nothing: a 413 there would be one no client expects.
  if (!METHODS_WITH_BODY.has(c.req.method)) return next();
  const maxBytes = c.get("config").MAX_BODY_BYTES;
  return bodyLimit({
    maxSize: maxBytes,
    onError: () => {
      throw new ApiError("PAYLOAD_TOO_LARGE", `The body exceeds ${maxBytes} bytes.`, {
        extensions: { max_bytes: maxBytes },
      });
    },
  })(c, next);
};

/** Why a body's text is not JSON (what the parser found and where), or undefined when it parses. */
export function jsonSyntaxProblem(text: string): string | undefined {
  try {
    JSON.parse(text);
    return undefined;
  } catch (error) {
    return error instanceof SyntaxError ? `The body is not valid JSON: ${error.message}.` : undefined;
  }
}

/** A body sent to an operation that reads none: empty is none; anything else must parse, as every body must. */
const refuseMalformedUnreadBody: MiddlewareHandler<HonoEnv> = async (c, next) => {
  if (hasBody(c.req.raw)) {
    const text = await c.req.text();
    const problem = text.trim() === "" ? undefined : jsonSyntaxProblem(text);
    if (problem) throw new ApiError("MALFORMED_JSON", problem);
  }
  await next();
};

/**
 * Operations that read no body hold one sent anyway to what every body is held to: JSON. Its Content-Type and
 * size were checked (requireJsonBody, limitBodySize) but its text ignored, so `{` was a 202 on `…/cancel` and the
 * same body a 400 on every other route. Added after the route's own middleware (its scope check comes first, as
 * for routes that parse a body) on every POST, PUT, PATCH and DELETE operation that declares no body.
 */
export function refuseMalformedUnreadBodies(app: OpenAPIHono<HonoEnv>): void {
  const register = app.openapi;
  const checked = (route: RouteConfig): RouteConfig =>
    route.request?.body || !METHODS_WITH_BODY.has(route.method.toUpperCase())
      ? route
      : { ...route, middleware: [...[route.middleware ?? []].flat(), refuseMalformedUnreadBody] };
  app.openapi = ((route: RouteConfig, ...rest: unknown[]) =>
    (register as (...args: unknown[]) => unknown)(checked(route), ...rest)) as typeof app.openapi;
}
