import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { checkReadiness } from "../health/readiness.ts";
import { problemResponses } from "../lib/openapi.ts";
import { ApiError } from "../lib/problem.ts";
import type { HonoEnv } from "../types.ts";

const CheckSchema = z.object({
  ok: z.boolean(),
  latency_ms: z.number().int(),
  error: z.string().optional(),
  warning: z.string().optional().openapi({ description: "A check that passes, but not as configured." }),
});

const healthRoute = createRoute({
  method: "get",
  path: "/health",
  operationId: "getHealth",
  tags: ["Health"],
  summary: "Liveness",
  description: "Answers 200 while the Worker runs. No authentication; touches no storage.",
  security: [],
  responses: {
    200: {
      description: "Alive.",
      content: {
        "application/json": {
          schema: z.object({ status: z.literal("ok"), version: z.string(), time: z.iso.datetime() }),
        },
      },
    },
    ...problemResponses("NOT_FOUND"),
  },
});

const readyRoute = createRoute({
  method: "get",
  path: "/ready",
  operationId: "getReadiness",
  tags: ["Health"],
  summary: "Readiness",
  description:
    "Checks D1, a Durable Object round trip, the task queue producer and R2, and that LLM_DEFAULT_CHAIN names a provider configured here (a warning for each it names but lacks), and warns of an LLM_ATTEMPT_TIMEOUT_MS under a second. 503 when any fails.",
  security: [],
  responses: {
    200: {
      description: "Every dependency answered.",
      content: {
        "application/json": {
          schema: z
            .object({ status: z.literal("ready"), checks: z.record(z.string(), CheckSchema) })
            .openapi("Readiness"),
        },
      },
    },
    ...problemResponses("NOT_FOUND", "DEPENDENCY_UNAVAILABLE"),
  },
});

const warned = new WeakSet<object>();

export function registerHealthRoutes(app: OpenAPIHono<HonoEnv>): void {
  app.openapi(healthRoute, (c) =>
    c.json({ status: "ok" as const, version: c.get("config").SENTRY_RELEASE ?? "dev", time: new Date().toISOString() }),
  );

  app.openapi(readyRoute, async (c) => {
    const report = await checkReadiness(c.get("config"));
    if (!report.ready) {
      const failed = Object.entries(report.checks)
        .filter(([, check]) => !check.ok)
        .map(([name]) => name);
      c.get("logger").warn("readiness check failed", { checks: report.checks });
      throw new ApiError("DEPENDENCY_UNAVAILABLE", `Not ready: ${failed.join(", ")} failed.`, {
        extensions: { checks: report.checks },
      });
    }
    const warnings = Object.entries(report.checks).filter(([, check]) => check.warning !== undefined);
    // Once per isolate (its config is the same for its life), not at every probe.
    if (warnings.length > 0 && !warned.has(c.get("config"))) {
      warned.add(c.get("config"));
      c.get("logger").warn("readiness check warned", { checks: Object.fromEntries(warnings) });
    }
    return c.json({ status: "ready" as const, checks: report.checks }, 200);
  });
}
