import type { LlmRouting } from "../db/schema.ts";
import {
  costAt,
  currentPriceTable,
  type ModelPrice,
  type PriceInForce,
  type PriceTableVersion,
  pricedModelName,
  priceInForce,
  priceOf,
} from "./prices.ts";
import type { ChatRequest, TokenUsage } from "./types.ts";

/**
 * Which targets a call tries, in order. A workspace's routing is a strategy
 * and a chain of (provider, model, weight); without one, `LLM_DEFAULT_CHAIN`
 * applies, and without that the offline `simulated` provider.
 */

export interface RouteTarget {
  provider: string;
  model: string;
  weight?: number;
  /**
   * The workspace's own price for this chain entry, resolved when its settings are loaded (chainTargets),
   * so a call looks up nothing more; absent: the price table's.
   */
  ownPrice?: PriceInForce;
  /**
   * Put first by the request's `model`, not the chain: a model its provider does not have (a 404) is then the
   * caller's mistake; on a chain's entry, the chain's (src/llm/errors.ts, chainModelMissing).
   */
  requested?: true;
}

export type Strategy = LlmRouting["strategy"];

export const DEFAULT_MODELS: Record<string, string> = {
  simulated: "sim-1",
  openai: "gpt-4o-mini",
  azure: "gpt-4o-mini",
  anthropic: "claude-3-5-haiku-latest",
  "workers-ai": "@cf/meta/llama-3.1-8b-instruct",
  local: "llama3.1",
};

/** A workspace's stored chain as the router's targets, each entry's own price (if it states one) resolved. */
export function chainTargets(chain: LlmRouting["chain"]): RouteTarget[] {
  return chain.map(({ price, ...target }) =>
    price ? { ...target, ownPrice: priceInForce(target.provider, stripQuery(target.model), price) } : target,
  );
}

/**
 * The entries (`provider:model`) whose calls would be charged the unknown-model rate, a guess: a paid
 * provider's model the price table lacks, with no price of the workspace's own.
 */
export function unpricedEntries(chain: LlmRouting["chain"]): string[] {
  return chain
    .filter((entry) => !entry.price && !priceOf(entry.provider, stripQuery(entry.model)).known)
    .map(targetKey);
}

/** The price a call to this target is charged, reserved and ranked at: the workspace's own, else the table's. */
export function targetPrice(target: RouteTarget): ModelPrice {
  return target.ownPrice ?? priceOf(target.provider, stripQuery(target.model));
}

/** Dollars for a call's usage on this target, at targetPrice. */
export function targetCostUsd(
  target: RouteTarget,
  usage: Pick<TokenUsage, "prompt_tokens" | "completion_tokens" | "cached_prompt_tokens">,
): number {
  return costAt(targetPrice(target), usage);
}

/** A chain's text as its entries: `provider` or `provider:model`, each part trimmed; blank entries dropped. */
function chainEntries(text: string | undefined): { provider: string; model: string | undefined }[] {
  return (text ?? "")
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "")
    .map((entry) => {
      const colon = entry.indexOf(":");
      return colon === -1
        ? { provider: entry, model: undefined }
        : { provider: entry.slice(0, colon).trim(), model: entry.slice(colon + 1).trim() };
    });
}

/** `openai:gpt-4o-mini,anthropic:claude-3-5-haiku-latest` → targets; a bare provider takes its default model. */
export function parseChain(text: string | undefined): RouteTarget[] {
  const targets = chainEntries(text).map(({ provider, model }) => ({
    provider,
    model: model ?? DEFAULT_MODELS[provider] ?? "default",
  }));
  return targets.length > 0 ? targets : [{ provider: "simulated", model: DEFAULT_MODELS.simulated }];
}

/**
 * What is wrong with a chain's text (LLM_DEFAULT_CHAIN), held to what a workspace's chain is (a provider the
 * router has an adapter for, a model that is not blank): unchecked, a misspelt provider was skipped at every
 * call, and each one was refused as the caller's fault, "no configured provider in this workspace's routing
 * chain"; `openai:` sent OpenAI a model named "". Entries by position, not by value, as every env problem is.
 */
export function chainProblems(text: string): string[] {
  const entries = chainEntries(text);
  if (entries.length === 0) return text.trim() === "" ? [] : ["names no provider: its entries are blank"];
  const problems: string[] = [];
  for (const [index, { provider, model }] of entries.entries()) {
    if (!Object.hasOwn(DEFAULT_MODELS, provider)) {
      problems.push(`entry ${index + 1}: unknown provider; known: ${Object.keys(DEFAULT_MODELS).join(", ")}`);
    } else if (model === "") {
      problems.push(`entry ${index + 1}: no model after its ":" (a bare provider takes its default model)`);
    } else if (model !== undefined) {
      const settings = modelSettingsProblem(provider, model);
      if (settings) problems.push(`entry ${index + 1}: its model ${settings}`);
    }
  }
  return problems;
}

/**
 * What is wrong with a model name's query string (`sim-1?failure_rate=1`): the simulated provider's settings, and
 * nothing to any other provider, which is sent it as part of the name (`gpt-4o-mini?temperature=0` to OpenAI, to
 * the Workers AI binding, in an Azure deployment's path) and has no such model: every call to it failed, while its
 * price was read without the query, as the model it is not. Undefined when the name is one a provider may have.
 */
export function modelSettingsProblem(provider: string, model: string): string | undefined {
  if (provider === "simulated" || !model.includes("?")) return undefined;
  return `has a query string ("${model.slice(model.indexOf("?"))}"): only the simulated provider's models take settings so; ${provider} would be sent it as part of the model's name`;
}

/**
 * The models the given providers serve, in the order of GET /api/v1/llm/models after the chain: each
 * priced model of theirs (in the price table's order), then each one's default model. A bare model name
 * the chain lacks is the first of these that has it, for the models endpoint and for a completion alike.
 */
export function servedModels(
  providers: readonly string[],
  table: PriceTableVersion = currentPriceTable(),
): RouteTarget[] {
  const configured = new Set(providers);
  const priced = Object.keys(table.models)
    .map((key) => ({ provider: key.slice(0, key.indexOf(":")), model: key.slice(key.indexOf(":") + 1) }))
    .filter((target) => target.model !== "*" && configured.has(target.provider));
  const defaults = providers.map((provider) => ({ provider, model: DEFAULT_MODELS[provider] ?? "default" }));
  return dedupe([...priced, ...defaults]);
}

/**
 * The configured provider that serves a bare model name: the first of servedModels with that model, else with
 * the model it is a dated snapshot of (`claude-sonnet-4-20250514` where `anthropic:claude-sonnet-4-0` is
 * served), named as the caller named it; undefined when none does.
 */
export function servingTarget(
  providers: readonly string[],
  model: string,
  table: PriceTableVersion = currentPriceTable(),
): RouteTarget | undefined {
  const served = servedModels(providers, table);
  const exact = served.find((target) => target.model === model);
  if (exact) return exact;
  const ofSnapshot = served.find((target) => target.model === pricedModelName(target.provider, model));
  return ofSnapshot ? { provider: ofSnapshot.provider, model } : undefined;
}

export function targetKey(target: { provider: string; model: string }): string {
  return `${target.provider}:${target.model}`;
}

/**
 * Per-target latency, an exponential moving average over this isolate's attempts: each success's time, and failed
 * attempts' times where they say the target is slow (observeFailure).
 */
export class LatencyTracker {
  static readonly SMOOTHING = 0.2;
  readonly #averages = new Map<string, number>();

  observe(key: string, ms: number): void {
    const previous = this.#averages.get(key);
    this.#averages.set(key, previous === undefined ? ms : previous + LatencyTracker.SMOOTHING * (ms - previous));
  }

  /**
   * A failed attempt's time, a floor of the target's latency (it answered no sooner), never a sign of speed: it
   * raises the average when slower than it, and leaves it otherwise. A timed-out attempt (one that hung until the
   * attempt timeout or the call's deadline) also measures an unmeasured target; another failure does not, since a
   * fast error (a 500 in 40 ms) would read as a fast target and put it first. Measured by successes alone, a target
   * whose attempts timed out never registered as slow, and the latency strategy kept trying it first.
   */
  observeFailure(key: string, ms: number, timedOut: boolean): void {
    const previous = this.#averages.get(key);
    if (previous === undefined ? timedOut : ms > previous) this.observe(key, ms);
  }

  averageMs(key: string): number | undefined {
    return this.#averages.get(key);
  }
}

export interface PlanInput {
  strategy: Strategy;
  chain: RouteTarget[];
  request: ChatRequest;
  estimatedPromptTokens: number;
  latency: LatencyTracker;
  random?: () => number;
  /** The providers this deployment can call: a bare model name one of them serves is tried there first. */
  providers?: readonly string[];
}

/** The targets in the order they are tried. */
export function planTargets(input: PlanInput): RouteTarget[] {
  const random = input.random ?? Math.random;
  const chain = dedupe(input.chain);
  let ordered: RouteTarget[];
  switch (input.strategy) {
    case "cost":
      ordered = byCost(chain, input.request, input.estimatedPromptTokens);
      break;
    case "latency":
      // Unmeasured targets go first so they get measured; ties keep chain order.
      ordered = chain
        .map((target, index) => ({ target, index, ms: input.latency.averageMs(targetKey(target)) ?? -1 }))
        .sort((a, b) => a.ms - b.ms || a.index - b.index)
        .map((entry) => entry.target);
      break;
    case "weighted":
      ordered = weightedOrder(chain, random);
      break;
    default:
      ordered = chain;
  }
  return preferRequested(ordered, input.request.model, input.providers ?? []);
}

/**
 * Cheapest first among targets that fit the request (tools, context window, an answer as long as its
 * max_tokens, which a provider refuses past the model's ceiling); the rest after, as fallbacks.
 */
function byCost(chain: RouteTarget[], request: ChatRequest, promptTokens: number): RouteTarget[] {
  const answerTokens = request.max_tokens ?? 0;
  const needTokens = promptTokens + answerTokens;
  const needsTools = (request.tools?.length ?? 0) > 0;
  const scored = chain.map((target, index) => {
    const price = targetPrice(target);
    const fits =
      price.contextTokens >= needTokens &&
      (price.maxOutputTokens === undefined || price.maxOutputTokens >= answerTokens) &&
      (!needsTools || price.tools);
    const cost = promptTokens * price.inputPerMillionUsd + (request.max_tokens ?? 512) * price.outputPerMillionUsd;
    return { target, index, fits, cost };
  });
  return scored
    .sort((a, b) => Number(b.fits) - Number(a.fits) || a.cost - b.cost || a.index - b.index)
    .map((entry) => entry.target);
}

/** Weighted random order without replacement: the first pick follows the weights, the rest fall back. */
function weightedOrder(chain: RouteTarget[], random: () => number): RouteTarget[] {
  const pool = chain.map((target) => ({ target, weight: Math.max(0, target.weight ?? 1) }));
  const out: RouteTarget[] = [];
  while (pool.length > 0) {
    const total = pool.reduce((sum, entry) => sum + entry.weight, 0);
    let index = 0;
    if (total > 0) {
      const draw = random() * total;
      let cumulative = 0;
      index = pool.length - 1;
      for (const [candidate, entry] of pool.entries()) {
        cumulative += entry.weight;
        if (draw < cumulative) {
          index = candidate;
          break;
        }
      }
    }
    out.push(pool[index].target);
    pool.splice(index, 1);
  }
  return out;
}

/**
 * A request naming `provider:model` tries that first (then the chain, as
 * fallbacks); a bare model name, as GET /api/v1/llm/models/{id} resolves it:
 * the chain's entries with that model to the front, else the first configured
 * provider serving it (servedModels) first, the chain after as fallbacks.
 * Anything else ("auto", a model no one here serves) lets the chain decide:
 * the answer's `model` says what served it.
 */
function preferRequested(
  ordered: RouteTarget[],
  requested: string | undefined,
  providers: readonly string[],
): RouteTarget[] {
  if (!requested || requested === "auto") return ordered;
  const colon = requested.indexOf(":");
  const provider = colon > 0 ? requested.slice(0, colon) : undefined;
  if (provider && Object.hasOwn(DEFAULT_MODELS, provider)) {
    const named = { provider, model: requested.slice(colon + 1) || DEFAULT_MODELS[provider] };
    // The chain's own entry for it, when it has one, with the price the workspace stated there.
    const explicit = ordered.find((target) => targetKey(target) === targetKey(named)) ?? {
      ...named,
      requested: true as const,
    };
    return dedupe([explicit, ...ordered]);
  }
  // A simulated entry's settings (`sim-1?latency_ms=5`) are not part of its name, as in the models list.
  const matching = ordered.filter((target) => stripQuery(target.model) === requested);
  if (matching.length > 0) return dedupe([...matching, ...ordered]);
  // Not the chain's: served where the models endpoint says it is, rather than by whatever the chain holds.
  const served = servingTarget(providers, requested);
  return served ? dedupe([{ ...served, requested: true }, ...ordered]) : ordered;
}

function dedupe(targets: RouteTarget[]): RouteTarget[] {
  const seen = new Set<string>();
  return targets.filter((target) => {
    const key = targetKey(target);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** A simulated model's settings query (`sim-1?latency_ms=5`) is not part of its name for pricing. */
export function stripQuery(model: string): string {
  const query = model.indexOf("?");
  return query === -1 ? model : model.slice(0, query);
}

/**
 * The name a target is told by (events, answers, usage rows, failures, logs): its model without a simulated
 * model's settings. Settings alone (a request's `simulated:?failure_rate=1`, a chain entry `?latency_ms=5`) name
 * no model but the provider's default: told as "", each of the call's llm.provider.error and fallback events
 * failed its schema, was lost and reported to Sentry as a bug (a caller's input flooding it), and its usage rows
 * and answer named no model.
 */
export function modelName(target: Pick<RouteTarget, "provider" | "model">): string {
  return stripQuery(target.model) || DEFAULT_MODELS[target.provider] || target.model;
}
