import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { tenantDb } from "../auth/tenant-access.ts";
import { API_PROBLEMS, problemResponses } from "../lib/openapi.ts";
import { PageQuerySchema, pageOfList } from "../lib/pagination.ts";
import { PRICE_SOURCES } from "../llm/prices.ts";
import { providerNames, providerOverview } from "../llm/providers.ts";
import { settingsLoader } from "../llm/settings.ts";
import { modelsUsedSince } from "../llm/usage.ts";
import { requireScope } from "../middleware/auth.ts";
import type { HonoEnv } from "../types.ts";

/** The LLM providers this deployment can call, with each model's circuit-breaker state. */

const ModelHealthSchema = z.object({
  model: z.string(),
  in_chain: z.boolean().openapi({ description: "Named by this workspace's routing chain." }),
  state: z.enum(["closed", "open", "half_open"]),
  error_rate: z
    .number()
    .openapi({ description: "Failures / calls over the last 60 s (its latest 200 calls at most), 0..1." }),
  calls_last_minute: z.number().int().openapi({
    description: "Calls over the last 60 s, its latest 200 at most: the window is bounded under load.",
  }),
  consecutive_failures: z.number().int(),
  opened_at: z.string().nullable(),
  retry_at: z.string().nullable().openapi({ description: "When an open breaker lets one trial call through." }),
  last_error: z.string().nullable(),
  input_per_million_usd: z.number().openapi({ description: "USD per million input tokens this workspace is charged." }),
  cached_input_per_million_usd: z
    .number()
    .nullable()
    .openapi({ description: "Input read from the provider's prompt cache, where it bills that less; else null." }),
  output_per_million_usd: z.number(),
  price_source: z.enum(PRICE_SOURCES).openapi({
    description:
      "`table`: the price table's; `workspace`: the `price` of this workspace's chain entry; `unknown`: a model the table lacks, charged a conservative guess.",
  }),
});

/** A provider, whether this deployment has it, and its models' breakers (the client SDK's `Provider` type too). */
export const ProviderSchema = z.object({
  provider: z.string(),
  configured: z.boolean(),
  configured_by: z.string().nullable().openapi({
    description:
      "The settings that configure it in a deployment (`ANTHROPIC_API_KEY`), for an operator to put when it is not; null for `simulated`, always configured.",
  }),
  simulated: z.boolean(),
  models: z.array(ModelHealthSchema),
});

const listRoute = createRoute({
  method: "get",
  path: "/api/v1/providers",
  operationId: "listProviders",
  tags: ["LLM"],
  summary: "List LLM providers and their circuit breakers",
  description:
    "Every provider the router knows, whether this deployment has it configured and which settings configure it, and per model (those of the workspace's chain, and any other it was charged for since yesterday, UTC; never another workspace's) the breaker state and recent error rate. `simulated` is the offline provider.",
  middleware: [requireScope("tasks:read")] as const,
  request: { query: PageQuerySchema },
  responses: {
    200: {
      description: "Providers, a page at a time, in a stable order.",
      content: {
        "application/json": {
          schema: z.object({ data: z.array(ProviderSchema), next_cursor: z.string().nullable() }).openapi("Providers"),
        },
      },
    },
    ...API_PROBLEMS,
    ...problemResponses("VALIDATION_FAILED"),
  },
});

export function registerProviderRoutes(app: OpenAPIHono<HonoEnv>): void {
  app.openapi(listRoute, async (c) => {
    const query = c.req.valid("query");
    const config = c.get("config");
    const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
    const [settings, usedLately] = await Promise.all([
      settingsLoader(config)(c.get("workspaceId")!),
      modelsUsedSince(tenantDb(c), yesterday),
    ]);
    // Only the page's providers have their breakers read.
    const { page, next_cursor } = pageOfList(providerNames(config, settings.chain), query);
    return c.json({ data: await providerOverview(config, settings.chain, usedLately, page), next_cursor }, 200);
  });
}
