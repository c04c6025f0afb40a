import { OpenAPIHono } from "@hono/zod-openapi";
import { secureHeaders } from "hono/secure-headers";
import { routeCallers, withSharedHeaders } from "./docs/shared-headers.ts";
import { withSharedProblems } from "./docs/shared-problems.ts";
import { BEARER_AUTH } from "./lib/openapi.ts";
import { authenticateApi } from "./middleware/auth.ts";
import { limitBodySize, refuseMalformedUnreadBodies, requireJsonBody } from "./middleware/body.ts";
import { cors } from "./middleware/cors.ts";
import { environment } from "./middleware/environment.ts";
import { notFoundHandler, onError, refuseUndeclaredQueries, validationHook } from "./middleware/errors.ts";
import { rateLimit } from "./middleware/rate-limit.ts";
import { requestContext } from "./middleware/request-context.ts";
import { registerApiKeyRoutes } from "./routes/api-keys.ts";
import { registerArtifactRoutes } from "./routes/artifacts.ts";
import { registerAuditLogRoutes } from "./routes/audit-logs.ts";
import { registerBudgetRoutes } from "./routes/budgets.ts";
import { registerDeadLetterRoutes } from "./routes/dead-letters.ts";
import { registerDebugRoutes } from "./routes/debug.ts";
import { registerDebugAuditRoutes } from "./routes/debug-audit.ts";
import { registerDebugEventRoutes } from "./routes/debug-events.ts";
import { registerDocsRoutes } from "./routes/docs.ts";
import { registerEventRoutes } from "./routes/events.ts";
import { registerHealthRoutes } from "./routes/health.ts";
import { registerLlmRoutes } from "./routes/llm.ts";
import { registerLlmModelRoutes } from "./routes/llm-models.ts";
import { registerLlmResponsesRoutes } from "./routes/llm-responses.ts";
import { registerProviderRoutes } from "./routes/providers.ts";
import { registerTaskRoutes } from "./routes/tasks.ts";
import { registerUsageRoutes } from "./routes/usage.ts";
import { registerWhoamiRoutes } from "./routes/whoami.ts";
import { registerOwnWorkspaceRoutes } from "./routes/workspace.ts";
import { registerWorkspaceRoutes } from "./routes/workspaces.ts";
import type { HonoEnv } from "./types.ts";

export const OPENAPI_INFO = {
  title: "MGX-AI Edge API",
  version: "1.0.0",
  description:
    "Runs AI agents on software tasks (code generation, refactoring, testing, documentation) for many workspaces. " +
    "Authenticate with `Authorization: Bearer <token>`: a workspace API key (`mgx_…`), an OAuth2 JWT access token, or, on the operator's routes, the deployment's ADMIN_TOKEN; a browser's WebSocket sends `?ticket=` from POST /api/v1/events/tickets instead. /health, /ready, /docs and /openapi.json need none. " +
    "Errors are RFC 9457 problem+json; every response carries X-Request-Id and X-API-Version, and each response names the headers it carries.",
  license: { name: "Apache 2.0", identifier: "Apache-2.0" },
  contact: { name: "MGX-AI Edge team" },
};

export const OPENAPI_TAGS = [
  { name: "Health", description: "Liveness and readiness probes." },
  { name: "Docs", description: "The API document, its reference page, and problem types." },
  { name: "Audit", description: "The tamper-evident audit log: query, export, statistics, chain verification." },
  { name: "Events", description: "The event contract: history, JSON Schema, and the WebSocket stream with replay." },
  {
    name: "Workspaces",
    description: "Workspaces: plan, limits, budgets, LLM routing. Operator routes use ADMIN_TOKEN.",
  },
  { name: "API keys", description: "A workspace's API keys: scopes, last use, revocation." },
  {
    name: "LLM",
    description: "The provider router: OpenAI-compatible chat completions, providers and breakers, usage, budgets.",
  },
  {
    name: "Tasks",
    description: "Submit tasks (admitted by priority with backpressure), follow their runs, cancel them.",
  },
  { name: "Artifacts", description: "Files agents wrote: metadata and streamed content." },
  { name: "Dead letters", description: "Tasks that exhausted their retries, and replaying them." },
];

function newApp(): OpenAPIHono<HonoEnv> {
  const app = new OpenAPIHono<HonoEnv>({ defaultHook: validationHook });
  refuseUndeclaredQueries(app);
  refuseMalformedUnreadBodies(app);
  return app;
}

/** The Worker's HTTP app: middleware in request order, then every resource's routes. */
export function createApp(): OpenAPIHono<HonoEnv> {
  const app = newApp();

  app.use("*", requestContext);
  app.use("*", environment);
  app.use(
    "*",
    secureHeaders({
      contentSecurityPolicy: {
        defaultSrc: ["'self'"],
        frameAncestors: ["'none'"],
        baseUri: ["'none'"],
        formAction: ["'none'"],
      },
      strictTransportSecurity: "max-age=31536000; includeSubDomains",
      // As the CSP's frame-ancestors 'none', for browsers that only read the older header.
      xFrameOptions: "DENY",
    }),
  );
  app.use("*", cors);
  app.use("*", requireJsonBody);
  app.use("*", limitBodySize);
  app.use("/api/v1/*", authenticateApi);
  app.use("/api/v1/*", rateLimit);

  // First among /api/v1 routes: it also mounts the middleware that seals audit entries after each write.
  registerAuditLogRoutes(app);
  registerHealthRoutes(app);
  registerDocsRoutes(app);
  registerEventRoutes(app);
  registerDebugRoutes(app);
  registerDebugEventRoutes(app);
  registerDebugAuditRoutes(app);
  registerWorkspaceRoutes(app);
  registerOwnWorkspaceRoutes(app);
  registerApiKeyRoutes(app);
  registerWhoamiRoutes(app);
  registerProviderRoutes(app);
  registerUsageRoutes(app);
  registerBudgetRoutes(app);
  registerLlmRoutes(app);
  registerLlmResponsesRoutes(app);
  registerLlmModelRoutes(app);
  registerTaskRoutes(app);
  registerArtifactRoutes(app);
  registerDeadLetterRoutes(app);

  app.openAPIRegistry.registerComponent("securitySchemes", BEARER_AUTH, {
    type: "http",
    scheme: "bearer",
    description: "A workspace API key (`mgx_…`), an OAuth2 JWT access token, or the operator's ADMIN_TOKEN.",
  });
  app.get("/openapi.json", (c) =>
    c.json(documentOf(app, { url: new URL(c.req.url).origin, description: "This server" })),
  );

  app.onError(onError);
  app.notFound(notFoundHandler(app));
  return app;
}

/** The document generated from the routes' schemas, with the problems the middleware gives and the headers it sets added. */
function documentOf(app: OpenAPIHono<HonoEnv>, server: { url: string; description: string }) {
  const doc = app.getOpenAPI31Document({
    openapi: "3.1.0",
    info: OPENAPI_INFO,
    servers: [server],
    tags: OPENAPI_TAGS,
    security: [{ [BEARER_AUTH]: [] }],
  });
  const callers = routeCallers(app);
  return withSharedHeaders(withSharedProblems(doc, callers), callers);
}

/** The OpenAPI document without serving a request, for lint and the SDK generator. */
export function openApiDocument(serverUrl = "http://127.0.0.1:8787") {
  return documentOf(createApp(), { url: serverUrl, description: "Local development (wrangler dev)" });
}
