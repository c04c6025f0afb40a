import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { REFERENCE_CSS, REFERENCE_HTML, REFERENCE_JS } from "../docs/reference-page.ts";
import { problemResponses } from "../lib/openapi.ts";
import { ApiError, PROBLEMS, problemCodeFromSlug, problemType } from "../lib/problem.ts";
import { API_VERSION } from "../middleware/request-context.ts";
import type { HonoEnv } from "../types.ts";

const problemTypeRoute = createRoute({
  method: "get",
  path: "/problems/{slug}",
  operationId: "getProblemType",
  tags: ["Docs"],
  summary: "Describe a problem type",
  description: "Every problem's `type` URI resolves here to what the code means.",
  security: [],
  request: { params: z.object({ slug: z.string().openapi({ example: "validation-failed" }) }) },
  responses: {
    200: {
      description: "The problem type.",
      content: {
        "application/json": {
          schema: z.object({
            type: z.string(),
            code: z.string(),
            status: z.number().int(),
            title: z.string(),
            description: z.string(),
          }),
        },
      },
    },
    ...problemResponses("NOT_FOUND"),
  },
});

const indexRoute = createRoute({
  method: "get",
  path: "/",
  operationId: "getApiIndex",
  tags: ["Docs"],
  summary: "Where to start",
  description: "What a person or program opening the API's root needs: the reference, the OpenAPI document, health.",
  security: [],
  responses: {
    200: {
      description: "Links to the API's documents.",
      content: {
        "application/json": {
          schema: z
            .object({
              name: z.string(),
              api_version: z.string(),
              docs: z.string(),
              openapi: z.string(),
              health: z.string(),
              ready: z.string(),
            })
            .openapi("ApiIndex"),
        },
      },
    },
    ...problemResponses("NOT_FOUND"),
  },
});

const CACHE_STATIC = "public, max-age=300";

export function registerDocsRoutes(app: OpenAPIHono<HonoEnv>): void {
  app.openapi(indexRoute, (c) =>
    c.json(
      {
        name: "MGX-AI Edge",
        api_version: API_VERSION,
        docs: "/docs",
        openapi: "/openapi.json",
        health: "/health",
        ready: "/ready",
      },
      200,
    ),
  );

  app.openapi(problemTypeRoute, (c) => {
    const code = problemCodeFromSlug(c.req.valid("param").slug);
    if (!code) throw new ApiError("NOT_FOUND", "No such problem type.");
    return c.json({ type: problemType(code), code, ...PROBLEMS[code] }, 200);
  });

  app.get("/docs", (c) => c.html(REFERENCE_HTML));
  app.get("/docs/reference.js", (c) =>
    c.body(REFERENCE_JS, 200, { "Content-Type": "text/javascript; charset=utf-8", "Cache-Control": CACHE_STATIC }),
  );
  app.get("/docs/reference.css", (c) =>
    c.body(REFERENCE_CSS, 200, { "Content-Type": "text/css; charset=utf-8", "Cache-Control": CACHE_STATIC }),
  );
}
