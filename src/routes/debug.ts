import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { ApiError } from "../lib/problem.ts";
import type { HonoEnv } from "../types.ts";

/**
 * Routes that fail on purpose, so error tracking can be checked end to end,
 * and floors for the benchmarks. Present only when ENABLE_DEBUG_ROUTES=true
 * (refused in staging and production); left out of the OpenAPI document.
 */
export function registerDebugRoutes(app: OpenAPIHono<HonoEnv>): void {
  app.use("/__debug/*", async (c, next) => {
    if (!c.get("config").ENABLE_DEBUG_ROUTES)
      throw new ApiError("NOT_FOUND", `No route matches ${c.req.method} ${c.req.path}.`);
    await next();
  });
  app.get("/__debug/error", () => {
    throw new Error("Deliberate failure from /__debug/error");
  });
  // A validated JSON route for exercising the body middleware and the 422 path.
  app.openapi(echoRoute, (c) => c.json({ echoed: c.req.valid("json") }, 200));
  // bench/router's bare baseline for a POST: the call's JSON body answered back as it came, unparsed. Carrying a
  // body costs the runtime something of its own (wrangler dev relays it through two processes), and a GET floor
  // would count that as the router's.
  // (requireJsonBody has already refused anything but JSON.)
  app.post("/__debug/bare", async (c) =>
    c.body(await c.req.arrayBuffer(), 200, { "Content-Type": "application/json" }),
  );
  // The runtime's own outbound hop, for bench/router's (d3): the body goes to the OpenAI upstream in one
  // plain fetch and its JSON answer comes back re-serialised, as any router must, with nothing else around it.
  // Only to a loopback upstream (the bench's fake): the route asks for no credentials, and a deployment with
  // debug routes on (staging) and a real OPENAI_API_KEY lent its key to anyone who posted, with OpenAI's
  // answers passed back, its 401 naming the key's last characters included.
  app.post("/__debug/upstream-hop", async (c) => {
    const { OPENAI_BASE_URL, OPENAI_API_KEY } = c.get("config");
    if (!OPENAI_BASE_URL || !isLoopback(OPENAI_BASE_URL)) {
      throw new ApiError("NOT_FOUND", "/__debug/upstream-hop needs OPENAI_BASE_URL on a loopback address.");
    }
    const upstream = await fetch(`${OPENAI_BASE_URL.replace(/\/+$/, "")}/chat/completions`, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        ...(OPENAI_API_KEY ? { Authorization: `Bearer ${OPENAI_API_KEY}` } : {}),
      },
      body: await c.req.text(),
    });
    return c.json(await upstream.json(), upstream.ok ? 200 : 502);
  });
}

/** A URL whose host is this machine: only a local fake upstream listens there. */
function isLoopback(url: string): boolean {
  const host = new URL(url).hostname;
  return host === "localhost" || host === "[::1]" || /^127(\.\d{1,3}){3}$/.test(host);
}

const echoRoute = createRoute({
  method: "post",
  path: "/__debug/echo",
  hide: true,
  request: {
    body: {
      required: true,
      content: {
        "application/json": {
          schema: z.object({
            message: z.string().min(1).max(1_000),
            count: z.number().int().min(0).optional(),
          }),
        },
      },
    },
  },
  responses: { 200: { description: "The body, as validated." } },
});
