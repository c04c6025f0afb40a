import type { MiddlewareHandler } from "hono";
import { cors as honoCors } from "hono/cors";
import type { HonoEnv } from "../types.ts";

const allowlistCache = new Map<string, Set<string>>();

function allowlist(csv: string): Set<string> {
  let origins = allowlistCache.get(csv);
  if (!origins) {
    origins = new Set(
      csv
        .split(",")
        .map((origin) => origin.trim().replace(/\/$/, ""))
        .filter(Boolean),
    );
    allowlistCache.set(csv, origins);
  }
  return origins;
}

/** CORS for the origins in CORS_ORIGINS only; other origins get no CORS headers. */
export const cors: MiddlewareHandler<HonoEnv> = (c, next) =>
  honoCors({
    origin: (origin) => (allowlist(c.get("config").CORS_ORIGINS).has(origin) ? origin : null),
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
  })(c, next);
