import type { AppConfig } from "../env.ts";
import { buildAdapters } from "./adapters/index.ts";
import { currentPriceTable, type PriceSource, priceInForce } from "./prices.ts";
import { DEFAULT_MODELS, type RouteTarget, servedModels, servingTarget, stripQuery } from "./routing.ts";

/**
 * The models a workspace can name in `model` of a chat completion, in the
 * shape of OpenAI's Models API (`GET /v1/models`), so `client.models.list()`
 * of the official SDKs works against the router: `auto` (its chain decides),
 * the chain's models first, in chain order, then the priced models of every
 * provider this deployment has configured. Our figures ride along under `x_mgx`.
 */

export interface ModelEntry {
  id: string;
  object: "model";
  /** Unix seconds: when the price table in force took effect. */
  created: number;
  owned_by: string;
  x_mgx: {
    provider: string | null;
    model: string | null;
    in_chain: boolean;
    /** This deployment has the provider's settings (another deployment may, for a chain entry it lacks). */
    configured: boolean;
    simulated: boolean;
    input_per_million_usd: number | null;
    /** Input read from the provider's prompt cache (OpenAI's automatic caching); null: no such rate. */
    cached_input_per_million_usd: number | null;
    output_per_million_usd: number | null;
    context_tokens: number | null;
    /** The model's longest answer (ModelPrice.maxOutputTokens); null where the table does not know it. */
    max_output_tokens: number | null;
    tools: boolean | null;
    /** `workspace`: the chain entry's own price; `unknown`: the conservative rate for a model the table lacks, a guess. */
    price_source: PriceSource | null;
    price_version: string;
  };
}

export const AUTO_MODEL = "auto";

export function modelCatalog(config: AppConfig, chain: readonly RouteTarget[], nowMs = Date.now()): ModelEntry[] {
  const { adapters, table, created, entry } = catalogContext(config, chain, nowMs);
  const auto: ModelEntry = {
    id: AUTO_MODEL,
    object: "model",
    created,
    owned_by: "mgx-edge",
    x_mgx: {
      provider: null,
      model: null,
      in_chain: true,
      configured: true,
      simulated: false,
      input_per_million_usd: null,
      cached_input_per_million_usd: null,
      output_per_million_usd: null,
      context_tokens: null,
      max_output_tokens: null,
      tools: null,
      price_source: null,
      price_version: table.version,
    },
  };
  const seen = new Set<string>();
  const entries: ModelEntry[] = [auto];
  // The order a bare model name is resolved in, here and by a completion's routing (routing.ts).
  for (const target of [...chain, ...servedModels([...adapters.keys()], table)]) {
    const id = `${target.provider}:${target.model}`;
    if (seen.has(id)) continue;
    seen.add(id);
    entries.push(entry(target));
  }
  return entries;
}

/** One model by id (`provider:model` or `auto`), or a bare model name the catalog offers; null when unknown. */
export function findModel(catalog: readonly ModelEntry[], id: string): ModelEntry | null {
  return catalog.find((model) => model.id === id) ?? catalog.find((model) => model.x_mgx.model === id) ?? null;
}

/** What every entry of a workspace's catalog is built from: the configured providers and the price table in force. */
function catalogContext(config: AppConfig, chain: readonly RouteTarget[], nowMs: number) {
  const adapters = buildAdapters(config);
  const table = currentPriceTable(nowMs);
  const created = Math.floor(Date.parse(table.effectiveFrom) / 1000);
  const inChain = new Set(chain.map((target) => `${target.provider}:${target.model}`));
  const entry = ({ provider, model, ownPrice }: RouteTarget): ModelEntry => {
    const price = ownPrice ?? priceInForce(provider, stripQuery(model), undefined, table);
    return {
      id: `${provider}:${model}`,
      object: "model",
      created,
      owned_by: provider,
      x_mgx: {
        provider,
        model: stripQuery(model),
        in_chain: inChain.has(`${provider}:${model}`),
        configured: adapters.has(provider),
        simulated: adapters.get(provider)?.simulated ?? provider === "simulated",
        input_per_million_usd: price.inputPerMillionUsd,
        cached_input_per_million_usd: price.cachedInputPerMillionUsd ?? null,
        output_per_million_usd: price.outputPerMillionUsd,
        context_tokens: price.contextTokens,
        max_output_tokens: price.maxOutputTokens ?? null,
        tools: price.tools,
        price_source: price.source,
        price_version: table.version,
      },
    };
  };
  return { adapters, table, created, entry };
}

/**
 * A model named `provider:model` that the catalog does not list (one newer than the price table): a
 * completion naming it is sent to that provider all the same (src/llm/routing.ts), so it is offered too,
 * at the unknown-model rate, when this deployment has the provider. A bare dated snapshot of a listed model
 * (`claude-sonnet-4-20250514`) is offered where a completion naming it goes (servingTarget). Null otherwise.
 */
export function namedModel(
  config: AppConfig,
  chain: readonly RouteTarget[],
  id: string,
  nowMs = Date.now(),
): ModelEntry | null {
  const colon = id.indexOf(":");
  const provider = id.slice(0, Math.max(0, colon));
  const model = id.slice(colon + 1);
  const { adapters, table, entry } = catalogContext(config, chain, nowMs);
  if (Object.hasOwn(DEFAULT_MODELS, provider))
    return model !== "" && adapters.has(provider) ? entry({ provider, model }) : null;
  const served = servingTarget([...adapters.keys()], id, table);
  return served ? entry(served) : null;
}
