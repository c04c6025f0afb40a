import type { MiddlewareHandler } from "hono";
import { cors as honoCors } from "hono/cors";
import type { HonoEnv } from "../types.ts";
import { setResponseHeaders } from "./response-headers.ts";

const OPTIONS = {
  allowMethods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
  allowHeaders: [
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "X-Request-Id",
    "traceparent",
    "tracestate",
    // Conditional and partial downloads of artifacts.
    "Range",
    "If-Range",
    "If-None-Match",
    // What OpenAI's SDK (also under LangChain's ChatOpenAI) sends with every call to the OpenAI-compatible
    // endpoint: without them a browser's preflight refused every call from an allowed origin.
    "X-Stainless-Arch",
    "X-Stainless-Helper-Method",
    "X-Stainless-Lang",
    "X-Stainless-OS",
    "X-Stainless-Package-Version",
    "X-Stainless-Retry-Count",
    "X-Stainless-Runtime",
    "X-Stainless-Runtime-Version",
    "X-Stainless-Timeout",
  ],
  exposeHeaders: [
    "X-Request-Id",
    "X-API-Version",
    "RateLimit",
    "RateLimit-Policy",
    "Retry-After",
    "Deprecation",
    "Sunset",
    // The OpenAI-compatible endpoint's: what served a call, and whether an SDK should retry a refusal.
    "X-LLM-Provider",
    "X-LLM-Simulated",
    "X-Should-Retry",
    // An artifact's version and, for a partial download, which part this is.
    "ETag",
    "Accept-Ranges",
    "Content-Range",
    "Content-Disposition",
    // A submitted task's address, and whether an Idempotency-Key returned the first task.
    "Location",
    "Idempotent-Replayed",
  ],
  maxAge: 600,
};

/** One Hono CORS middleware per CORS_ORIGINS value (an isolate sees one), built on first use. */
const byOriginList = new Map<string, MiddlewareHandler>();

function corsFor(csv: string): MiddlewareHandler {
  let middleware = byOriginList.get(csv);
  if (!middleware) {
    const allowed = new Set(
      csv
        .split(",")
        .map((origin) => origin.trim().replace(/\/$/, ""))
        .filter(Boolean),
    );
    middleware = honoCors({ ...OPTIONS, origin: (origin) => (allowed.has(origin) ? origin : null) });
    byOriginList.set(csv, middleware);
  }
  return middleware;
}

/**
 * CORS for the origins in CORS_ORIGINS only; other origins get no CORS headers.
 * A request without Origin is not a CORS request (browsers send it on every
 * cross-origin request and preflight), an OPTIONS one included: it gets only
 * `Vary: Origin`, and the handler's response is left alone (an OPTIONS one is
 * answered 204 with `Allow` by notFoundHandler, or 404 where no route is).
 * Hono's middleware writes its headers to `c.res` before the handler runs,
 * which makes Hono copy the handler's response and its headers once more.
 */
export const cors: MiddlewareHandler<HonoEnv> = async (c, next) => {
  if (c.req.header("Origin") === undefined) {
    await next();
    setResponseHeaders(c, { Vary: "Origin" }, { append: true });
    return;
  }
  return corsFor(c.get("config").CORS_ORIGINS)(c, next);
};
