import type { WorkspacePrice } from "../db/schema.ts";
import type { TokenUsage } from "./types.ts";

/**
 * The price table: USD per million input and output tokens, per (provider,
 * model), with what the router needs to pick a model that fits a request
 * (context window, tool support). Versioned: a price change is a new version
 * with its own `effectiveFrom`, never an edit of an old one, so a usage row's
 * cost can be recomputed from the version that was in force.
 */

export interface ModelPrice {
  inputPerMillionUsd: number;
  /** Input the provider read from its prompt cache; absent: no discount, the input price. */
  cachedInputPerMillionUsd?: number;
  outputPerMillionUsd: number;
  contextTokens: number;
  tools: boolean;
  /**
   * The longest answer the model gives in one call, its own ceiling: what a call that sets no max_tokens
   * may be answered, and so what its budget reservation holds for the answer. Absent: not known here.
   */
  maxOutputTokens?: number;
}

export interface PriceTableVersion {
  version: string;
  /** ISO date from which this version applies. */
  effectiveFrom: string;
  /** Keyed by `provider:model`; `provider:*` is the provider's fallback row. */
  models: Record<string, ModelPrice>;
}

const price = (input: number, output: number, contextTokens: number, tools = true): ModelPrice => ({
  inputPerMillionUsd: input,
  outputPerMillionUsd: output,
  contextTokens,
  tools,
});

/** The same price with a rate for cached input (OpenAI's automatic prompt caching). */
const withCachedInput = (row: ModelPrice, cachedInput: number): ModelPrice => ({
  ...row,
  cachedInputPerMillionUsd: cachedInput,
});

const NOVEMBER_2026: PriceTableVersion = {
  version: "2026-11-01",
  effectiveFrom: "2026-11-01",
  models: {
    "openai:gpt-4o": price(2.5, 10, 128_000),
    "openai:gpt-4o-mini": price(0.15, 0.6, 128_000),
    "openai:gpt-4.1": price(2, 8, 1_000_000),
    "openai:gpt-4.1-mini": price(0.4, 1.6, 1_000_000),
    "openai:gpt-4.1-nano": price(0.1, 0.4, 1_000_000),
    "openai:o3-mini": price(1.1, 4.4, 200_000),
    "azure:gpt-4o": price(2.5, 10, 128_000),
    "azure:gpt-4o-mini": price(0.165, 0.66, 128_000),
    "anthropic:claude-3-5-haiku-latest": price(0.8, 4, 200_000),
    "anthropic:claude-3-5-sonnet-latest": price(3, 15, 200_000),
    "anthropic:claude-3-7-sonnet-latest": price(3, 15, 200_000),
    "anthropic:claude-sonnet-4-0": price(3, 15, 200_000),
    "anthropic:claude-opus-4-0": price(15, 75, 200_000),
    "workers-ai:@cf/meta/llama-3.1-8b-instruct": price(0.28, 0.83, 128_000),
    "workers-ai:@cf/meta/llama-3.3-70b-instruct-fp8-fast": price(0.29, 2.25, 24_000),
    // Self-hosted and offline providers cost nothing per token.
    "local:*": price(0, 0, 32_768),
    "simulated:*": price(0, 0, 1_000_000),
  },
};

/**
 * Each model's longest answer, as its provider documents it. Where an adapter sends a max_tokens of its
 * own to a call that sets none (ProviderAdapter.defaultMaxTokens: Anthropic's 4,096, Workers AI's 256, the
 * binding's default), that is what the call may get, whatever the model's ceiling.
 */
const MAX_OUTPUT_TOKENS: Record<string, number> = {
  "openai:gpt-4": 8_192,
  "openai:gpt-4-turbo": 4_096,
  "openai:gpt-4.5-preview": 16_384,
  "openai:gpt-3.5-turbo": 4_096,
  "openai:gpt-4o": 16_384,
  "openai:gpt-4o-mini": 16_384,
  "openai:gpt-4.1": 32_768,
  "openai:gpt-4.1-mini": 32_768,
  "openai:gpt-4.1-nano": 32_768,
  "openai:o1": 100_000,
  "openai:o1-mini": 65_536,
  "openai:o1-pro": 100_000,
  "openai:o3": 100_000,
  "openai:o3-mini": 100_000,
  "openai:o3-pro": 100_000,
  "openai:o4-mini": 100_000,
  "openai:gpt-5": 128_000,
  "openai:gpt-5-mini": 128_000,
  "openai:gpt-5-nano": 128_000,
  "azure:gpt-4o": 16_384,
  "azure:gpt-4o-mini": 16_384,
  "anthropic:claude-3-haiku-20240307": 4_096,
  "anthropic:claude-3-opus-latest": 4_096,
  "anthropic:claude-3-5-haiku-latest": 8_192,
  "anthropic:claude-3-5-sonnet-latest": 8_192,
  "anthropic:claude-3-7-sonnet-latest": 64_000,
  "anthropic:claude-sonnet-4-0": 64_000,
  "anthropic:claude-opus-4-0": 32_000,
  "anthropic:claude-opus-4-1": 32_000,
  "anthropic:claude-sonnet-4-5": 64_000,
  "anthropic:claude-haiku-4-5": 64_000,
};

/** The rows with their model's answer ceiling (MAX_OUTPUT_TOKENS) where it is known. */
function withMaxOutputs(rows: Record<string, ModelPrice>): Record<string, ModelPrice> {
  const ceilings = Object.entries(MAX_OUTPUT_TOKENS).filter(([key]) => key in rows);
  return {
    ...rows,
    ...Object.fromEntries(ceilings.map(([key, maxOutputTokens]) => [key, { ...rows[key], maxOutputTokens }])),
  };
}

/**
 * OpenAI's (and Azure's) cached-input rates: until this version, cached input was charged as any input.
 * Also the reasoning and newer models a request may name: unpriced, they were charged the unknown-model
 * rate, a fifth of what o1 costs. And each model's answer ceiling (MAX_OUTPUT_TOKENS).
 */
const models = NOVEMBER_2026.models;
const CACHED_INPUT_2026_11_27: PriceTableVersion = {
  version: "2026-11-27",
  effectiveFrom: "2026-11-27",
  // The answer ceilings came with this version; they are no price, so older versions were not reissued.
  models: withMaxOutputs({
    ...models,
    "openai:gpt-4o": withCachedInput(models["openai:gpt-4o"], 1.25),
    "openai:gpt-4o-mini": withCachedInput(models["openai:gpt-4o-mini"], 0.075),
    "openai:gpt-4.1": withCachedInput(models["openai:gpt-4.1"], 0.5),
    "openai:gpt-4.1-mini": withCachedInput(models["openai:gpt-4.1-mini"], 0.1),
    "openai:gpt-4.1-nano": withCachedInput(models["openai:gpt-4.1-nano"], 0.025),
    "openai:o3-mini": withCachedInput(models["openai:o3-mini"], 0.55),
    "azure:gpt-4o": withCachedInput(models["azure:gpt-4o"], 1.25),
    "azure:gpt-4o-mini": withCachedInput(models["azure:gpt-4o-mini"], 0.083),
    "openai:o1": withCachedInput(price(15, 60, 200_000), 7.5),
    "openai:o3": withCachedInput(price(2, 8, 200_000), 0.5),
    "openai:o4-mini": withCachedInput(price(1.1, 4.4, 200_000), 0.275),
    "openai:gpt-5": withCachedInput(price(1.25, 10, 400_000), 0.125),
    "openai:gpt-5-mini": withCachedInput(price(0.25, 2, 400_000), 0.025),
    "openai:gpt-5-nano": withCachedInput(price(0.05, 0.4, 400_000), 0.005),
    "anthropic:claude-opus-4-1": price(15, 75, 200_000),
    "anthropic:claude-sonnet-4-5": price(3, 15, 200_000),
    "anthropic:claude-haiku-4-5": price(1, 5, 200_000),
    // Cloudflare's model page gives it a window of 7,968 tokens, not Llama 3.1's 128,000.
    "workers-ai:@cf/meta/llama-3.1-8b-instruct": price(0.28, 0.83, 7_968),
  }),
};

/**
 * Models a request may still name whose price is above the unknown-model rate: unlisted, each was charged that
 * guess ($5 and $15), so a key that may call but not set budgets spent up to 6× (gpt-4) or 40× (o1-pro) what
 * the workspace's cost budget counted. Also the older cheap ones, charged 3 to 10× too much.
 */
const LEGACY_MODELS_2026_11_28: PriceTableVersion = {
  version: "2026-11-28",
  effectiveFrom: "2026-11-28",
  models: withMaxOutputs({
    ...CACHED_INPUT_2026_11_27.models,
    "openai:gpt-4": price(30, 60, 8_192),
    "openai:gpt-4-turbo": price(10, 30, 128_000),
    "openai:gpt-4.5-preview": withCachedInput(price(75, 150, 128_000), 37.5),
    "openai:gpt-3.5-turbo": price(0.5, 1.5, 16_385),
    // Takes no tools: OpenAI answers a call offering some with 400 `unsupported_parameter`. Said so in place, as
    // it is no price (this version's costs are unchanged): marked as taking them, the `cost` strategy sent it
    // every call with tools first, each refused and failed over, and GET /api/v1/llm/models said `tools: true`.
    "openai:o1-mini": withCachedInput(price(1.1, 4.4, 128_000, false), 0.55),
    "openai:o1-pro": price(150, 600, 200_000),
    "openai:o3-pro": price(20, 80, 200_000),
    "anthropic:claude-3-opus-latest": price(15, 75, 200_000),
    "anthropic:claude-3-haiku-20240307": price(0.25, 1.25, 200_000),
  }),
};

export const PRICE_TABLE_VERSIONS: readonly PriceTableVersion[] = [
  NOVEMBER_2026,
  CACHED_INPUT_2026_11_27,
  LEGACY_MODELS_2026_11_28,
];

/** Unknown models of a paid provider are priced at this conservative rate rather than as free. */
const UNKNOWN_MODEL_PRICE = price(5, 15, 128_000);

const DAY_MS = 86_400_000;
// Every call prices several targets; the table only changes at midnight UTC.
let tableOfDay: { day: number; table: PriceTableVersion } | null = null;

export function currentPriceTable(nowMs: number = Date.now()): PriceTableVersion {
  const day = Math.floor(nowMs / DAY_MS);
  if (tableOfDay?.day === day) return tableOfDay.table;
  const today = new Date(nowMs).toISOString().slice(0, 10);
  let chosen = PRICE_TABLE_VERSIONS[0];
  for (const version of PRICE_TABLE_VERSIONS) if (version.effectiveFrom <= today) chosen = version;
  tableOfDay = { day, table: chosen };
  return chosen;
}

/**
 * Dated snapshots, as providers answer to them, and the table's model each is a version of at the same price
 * and ceiling. Providers' own docs name models so (Anthropic's model pages `claude-sonnet-4-20250514`, OpenAI's
 * structured-outputs guide `gpt-4o-2024-08-06`), and production code pins them: unlisted, such a call was
 * charged the unknown-model guess (claude-opus-4 a third of its price, gpt-4o-mini thirty times it) and sent a
 * max_tokens above the model's ceiling, which the provider refuses. Not Azure's, whose deployment names are
 * their owner's. Not gpt-4o-2024-05-13, which costs more than gpt-4o ($5 and $15, the unknown-model rate).
 */
const SNAPSHOT_OF: Record<string, string> = {
  "openai:gpt-4o-2024-08-06": "gpt-4o",
  "openai:gpt-4o-2024-11-20": "gpt-4o",
  "openai:gpt-4o-mini-2024-07-18": "gpt-4o-mini",
  "openai:gpt-4.1-2025-04-14": "gpt-4.1",
  "openai:gpt-4.1-mini-2025-04-14": "gpt-4.1-mini",
  "openai:gpt-4.1-nano-2025-04-14": "gpt-4.1-nano",
  "openai:o1-2024-12-17": "o1",
  "openai:o3-2025-04-16": "o3",
  "openai:o3-mini-2025-01-31": "o3-mini",
  "openai:o4-mini-2025-04-16": "o4-mini",
  "openai:gpt-5-2025-08-07": "gpt-5",
  "openai:gpt-5-mini-2025-08-07": "gpt-5-mini",
  "openai:gpt-5-nano-2025-08-07": "gpt-5-nano",
  "anthropic:claude-3-5-haiku-20241022": "claude-3-5-haiku-latest",
  "anthropic:claude-3-5-sonnet-20240620": "claude-3-5-sonnet-latest",
  "anthropic:claude-3-5-sonnet-20241022": "claude-3-5-sonnet-latest",
  "anthropic:claude-3-7-sonnet-20250219": "claude-3-7-sonnet-latest",
  "anthropic:claude-sonnet-4-20250514": "claude-sonnet-4-0",
  "anthropic:claude-opus-4-20250514": "claude-opus-4-0",
  "anthropic:claude-opus-4-1-20250805": "claude-opus-4-1",
  "anthropic:claude-sonnet-4-5-20250929": "claude-sonnet-4-5",
  "anthropic:claude-haiku-4-5-20251001": "claude-haiku-4-5",
  // The older models version 2026-11-28 prices (a snapshot is the guess in the versions before it, as its model).
  "openai:gpt-4-0613": "gpt-4",
  "openai:gpt-4-turbo-2024-04-09": "gpt-4-turbo",
  "openai:gpt-4.5-preview-2025-02-27": "gpt-4.5-preview",
  "openai:gpt-3.5-turbo-0125": "gpt-3.5-turbo",
  "openai:o1-mini-2024-09-12": "o1-mini",
  "openai:o1-pro-2025-03-19": "o1-pro",
  "openai:o3-pro-2025-06-10": "o3-pro",
  "anthropic:claude-3-opus-20240229": "claude-3-opus-latest",
};

/** The table's name for a provider's model: its alias when it is a dated snapshot of one (SNAPSHOT_OF), else itself. */
export function pricedModelName(provider: string, model: string): string {
  const key = `${provider}:${model}`;
  return Object.hasOwn(SNAPSHOT_OF, key) ? SNAPSHOT_OF[key] : model;
}

export function priceOf(provider: string, model: string, table = currentPriceTable()): ModelPrice & { known: boolean } {
  const exact =
    table.models[`${provider}:${model}`] ??
    table.models[`${provider}:${pricedModelName(provider, model)}`] ??
    table.models[`${provider}:*`];
  // A provider serving a model under OpenAI's name is priced as OpenAI prices it; not Azure, whose deployment
  // names are its owner's (one named `gpt-4o` may serve anything, and Azure's own rows differ), nor `local`,
  // which is free (`local:*`). Either states its price in its chain entry (src/llm/routing.ts chainTargets).
  const viaOpenAi =
    provider === "azure" || provider === "local"
      ? undefined
      : table.models[`openai:${pricedModelName("openai", model)}`];
  const found = exact ?? viaOpenAi;
  return found ? { ...found, known: true } : { ...UNKNOWN_MODEL_PRICE, known: false };
}

/** Where a price comes from: the table, the workspace's chain entry, or neither (the unknown-model rate, a guess). */
export const PRICE_SOURCES = ["table", "workspace", "unknown"] as const;
export type PriceSource = (typeof PRICE_SOURCES)[number];

export type PriceInForce = ModelPrice & { source: PriceSource };

/**
 * The price a workspace's call to (provider, model) is charged at: its own, when its chain entry states
 * one (its Azure deployment, its paid `local` server, a model newer than the table), else the table's.
 * The context window, tool support and answer ceiling, which a workspace does not state, stay the table's (the
 * unknown-model row's for a model the table lacks).
 */
export function priceInForce(
  provider: string,
  model: string,
  own?: WorkspacePrice,
  table = currentPriceTable(),
): PriceInForce {
  const { known, ...listed } = priceOf(provider, model, table);
  if (!own) return { ...listed, source: known ? "table" : "unknown" };
  return {
    inputPerMillionUsd: own.input_per_million_usd,
    ...(own.cached_input_per_million_usd === undefined || own.cached_input_per_million_usd === null
      ? {}
      : { cachedInputPerMillionUsd: own.cached_input_per_million_usd }),
    outputPerMillionUsd: own.output_per_million_usd,
    contextTokens: listed.contextTokens,
    tools: listed.tools,
    ...(listed.maxOutputTokens === undefined ? {} : { maxOutputTokens: listed.maxOutputTokens }),
    source: "workspace",
  };
}

/** Dollars for a call's usage at the table's price. */
export function costUsd(
  provider: string,
  model: string,
  usage: Pick<TokenUsage, "prompt_tokens" | "completion_tokens" | "cached_prompt_tokens">,
  table = currentPriceTable(),
): number {
  return costAt(priceOf(provider, model, table), usage);
}

/** Dollars for a call's usage at the given rates, rounded to a millionth of a cent so sums stay exact enough. */
export function costAt(
  row: Pick<ModelPrice, "inputPerMillionUsd" | "cachedInputPerMillionUsd" | "outputPerMillionUsd">,
  usage: Pick<TokenUsage, "prompt_tokens" | "completion_tokens" | "cached_prompt_tokens">,
): number {
  const cached = usage.cached_prompt_tokens ?? 0;
  const raw =
    ((usage.prompt_tokens - cached) * row.inputPerMillionUsd +
      cached * (row.cachedInputPerMillionUsd ?? row.inputPerMillionUsd) +
      usage.completion_tokens * row.outputPerMillionUsd) /
    1_000_000;
  return Math.round(raw * 1e8) / 1e8;
}
