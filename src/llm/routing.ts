import type { LlmRouting } from "../db/schema.ts";
import { priceOf } from "./prices.ts";
import type { ChatRequest } from "./types.ts";

/**
 * Which targets a call tries, in order. A workspace's routing is a strategy
 * and a chain of (provider, model, weight); without one, `LLM_DEFAULT_CHAIN`
 * applies, and without that the offline `simulated` provider.
 */

export interface RouteTarget {
  provider: string;
  model: string;
  weight?: number;
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

/** `openai:gpt-4o-mini,anthropic:claude-3-5-haiku-latest` → targets; a bare provider takes its default model. */
export function parseChain(text: string | undefined): RouteTarget[] {
  const targets: RouteTarget[] = [];
  for (const entry of (text ?? "").split(",")) {
    const trimmed = entry.trim();
    if (!trimmed) continue;
    const colon = trimmed.indexOf(":");
    const provider = colon === -1 ? trimmed : trimmed.slice(0, colon);
    const model = colon === -1 ? (DEFAULT_MODELS[provider] ?? "default") : trimmed.slice(colon + 1);
    targets.push({ provider, model });
  }
  return targets.length > 0 ? targets : [{ provider: "simulated", model: DEFAULT_MODELS.simulated }];
}

export function targetKey(target: { provider: string; model: string }): string {
  return `${target.provider}:${target.model}`;
}

/** Per-target latency, an exponential moving average over this isolate's successful calls. */
export class LatencyTracker {
  static readonly SMOOTHING = 0.2;
  readonly #averages = new Map<string, number>();

  observe(key: string, ms: number): void {
    const previous = this.#averages.get(key);
    this.#averages.set(key, previous === undefined ? ms : previous + LatencyTracker.SMOOTHING * (ms - previous));
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
  return preferRequested(ordered, input.request.model);
}

/** Cheapest first among targets that fit the request (tools, context window); the rest after, as fallbacks. */
function byCost(chain: RouteTarget[], request: ChatRequest, promptTokens: number): RouteTarget[] {
  const needTokens = promptTokens + (request.max_tokens ?? 0);
  const needsTools = (request.tools?.length ?? 0) > 0;
  const scored = chain.map((target, index) => {
    const price = priceOf(target.provider, stripQuery(target.model));
    const fits = price.contextTokens >= needTokens && (!needsTools || price.tools);
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
 * fallbacks); a bare model name moves the chain's entries with that model to
 * the front. Anything else (e.g. "auto", or a model the chain lacks) lets the
 * chain decide: the answer's `model` says what served it.
 */
function preferRequested(ordered: RouteTarget[], requested: string | undefined): RouteTarget[] {
  if (!requested || requested === "auto") return ordered;
  const colon = requested.indexOf(":");
  const provider = colon > 0 ? requested.slice(0, colon) : undefined;
  if (provider && provider in DEFAULT_MODELS) {
    const explicit = { provider, model: requested.slice(colon + 1) || DEFAULT_MODELS[provider] };
    return dedupe([explicit, ...ordered]);
  }
  const matching = ordered.filter((target) => target.model === requested);
  return matching.length > 0 ? dedupe([...matching, ...ordered]) : ordered;
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
