import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { API_PROBLEMS, problemResponses } from "../lib/openapi.ts";
import { ApiError } from "../lib/problem.ts";
import { findModel, modelCatalog, namedModel } from "../llm/models.ts";
import { PRICE_SOURCES } from "../llm/prices.ts";
import { settingsLoader } from "../llm/settings.ts";
import { requireScope } from "../middleware/auth.ts";
import type { HonoEnv } from "../types.ts";

/**
 * OpenAI-compatible models: what a workspace can name in a chat completion's
 * `model`, so the official SDKs' `models.list()` and `models.retrieve()` work
 * with `baseURL` set to `<origin>/api/v1/llm`. Read-only, from the
 * workspace's routing chain, this deployment's providers and the price table.
 */

const ModelSchema = z
  .object({
    id: z.string().openapi({ description: "`provider:model`, or `auto` (the workspace's chain decides)." }),
    object: z.literal("model"),
    created: z.number().int().openapi({ description: "Unix seconds: when the price table in force took effect." }),
    owned_by: z.string().openapi({ description: "The provider; `mgx-edge` for `auto`." }),
    x_mgx: z.object({
      provider: z.string().nullable(),
      model: z.string().nullable(),
      in_chain: z.boolean().openapi({ description: "Named by this workspace's routing chain (`auto`: always)." }),
      configured: z.boolean().openapi({ description: "This deployment has the provider's settings." }),
      simulated: z.boolean(),
      input_per_million_usd: z.number().nullable(),
      cached_input_per_million_usd: z
        .number()
        .nullable()
        .openapi({ description: "Input read from the provider's prompt cache, where it bills that less; else null." }),
      output_per_million_usd: z.number().nullable(),
      context_tokens: z.number().int().nullable(),
      max_output_tokens: z.number().int().nullable().openapi({
        description:
          "The longest answer the model gives in one call, as its provider documents it; null where the price table does not know it. A call without `max_tokens` may get that long (on Anthropic 4,096, the default the router sends; on Workers AI 256, the binding's), and its budget reservation holds that much answer (32,768 tokens where unknown).",
      }),
      tools: z.boolean().nullable(),
      price_source: z.enum(PRICE_SOURCES).nullable().openapi({
        description:
          "Where the prices come from: `table`, the price table (`price_version`); `workspace`, the `price` of this workspace's chain entry (PATCH /api/v1/workspace); `unknown`, neither: a paid provider's model the table lacks, charged a conservative guess ($5 in / $15 out per million) until its chain entry states a price. Null for `auto`.",
      }),
      price_version: z.string(),
    }),
  })
  .openapi("Model", { description: "OpenAI's Model object, with the router's figures under `x_mgx`." });

const listRoute = createRoute({
  method: "get",
  path: "/api/v1/llm/models",
  operationId: "listModels",
  tags: ["LLM"],
  summary: "List the models a chat completion can name (OpenAI-compatible)",
  description:
    "`auto`, then the workspace's chain in order, then the priced models of every provider this deployment has configured. A model outside the chain is tried first and the chain follows as fallbacks. Prices are those this workspace's calls are charged: a chain entry's own `price` where it states one, else the price table's; `x_mgx.price_source` says which, and `unknown` marks a guess.",
  middleware: [requireScope("tasks:read")] as const,
  responses: {
    200: {
      description: "The models, as OpenAI's list object.",
      content: {
        "application/json": {
          schema: z.object({ object: z.literal("list"), data: z.array(ModelSchema) }).openapi("ModelList"),
        },
      },
    },
    ...API_PROBLEMS,
  },
});

const getRoute = createRoute({
  method: "get",
  path: "/api/v1/llm/models/{model}",
  operationId: "getModel",
  tags: ["LLM"],
  summary: "Get one model (OpenAI-compatible)",
  description:
    "One entry of the list, by id; a bare model name finds the first entry serving it. A `provider:model` the list lacks (a model newer than the price table) is offered when this deployment has the provider, as a completion naming it is sent there: priced at the unknown-model rate (`price_source: unknown`). A dated snapshot of a listed model (`claude-sonnet-4-20250514`), bare or not, is offered at that model's price, where a completion naming it is sent.",
  middleware: [requireScope("tasks:read")] as const,
  request: {
    params: z.object({
      model: z
        .string()
        .min(1)
        .max(256)
        .openapi({ description: "A model's id, or a bare model name the list offers; `/` as `%2F`." }),
    }),
  },
  responses: {
    200: { description: "The model.", content: { "application/json": { schema: ModelSchema } } },
    ...API_PROBLEMS,
    // VALIDATION_FAILED: an id past the param's 256 characters.
    ...problemResponses("NOT_FOUND", "VALIDATION_FAILED"),
  },
});

export function registerLlmModelRoutes(app: OpenAPIHono<HonoEnv>): void {
  const catalog = async (config: HonoEnv["Variables"]["config"], workspaceId: string) =>
    modelCatalog(config, (await settingsLoader(config)(workspaceId)).chain);

  app.openapi(listRoute, async (c) => {
    return c.json({ object: "list" as const, data: await catalog(c.get("config"), c.get("workspaceId")!) }, 200);
  });

  app.openapi(getRoute, async (c) => {
    const { model } = c.req.valid("param");
    const config = c.get("config");
    const { chain } = await settingsLoader(config)(c.get("workspaceId")!);
    // A `provider:model` the list lacks is still served by that provider (a model newer than the price table).
    const found = findModel(modelCatalog(config, chain), model) ?? namedModel(config, chain, model);
    if (!found) {
      throw new ApiError(
        "NOT_FOUND",
        `No model "${model}" is offered to this workspace; GET /api/v1/llm/models lists them.`,
        // OpenAI's code for it, which its SDKs' users branch on (`err.code`).
        { extensions: { reason: "model_not_found" } },
      );
    }
    return c.json(found, 200);
  });
}
