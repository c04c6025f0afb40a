import type { MiddlewareHandler } from "hono";
import { cors as honoCors } from "hono/cors";
import type { HonoEnv } from "../types.ts";

const OPTIONS = {
  allowMethods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
  allowHeaders: ["Authorization", "Content-Type", "Idempotency-Key", "X-Request-Id", "traceparent", "tracestate"],
  exposeHeaders: [
    "X-Request-Id",
    "X-API-Version",
    "RateLimit",
    "RateLimit-Policy",
    "Retry-After",
    "Deprecation",
    "Sunset",
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

/** CORS for the origins in CORS_ORIGINS only; other origins get no CORS headers. */
export const cors: MiddlewareHandler<HonoEnv> = (c, next) => corsFor(c.get("config").CORS_ORIGINS)(c, next);
