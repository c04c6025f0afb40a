import { describe, expect, it } from "vitest";
import { findModel, modelCatalog } from "../../../src/llm/models.ts";
import { costUsd, currentPriceTable, PRICE_TABLE_VERSIONS, priceOf } from "../../../src/llm/prices.ts";
import { LatencyTracker, parseChain, planTargets, type RouteTarget } from "../../../src/llm/routing.ts";
import { llmConfig } from "../../support/llm.ts";

const chain = [
  { provider: "openai", model: "gpt-4o" },
  { provider: "anthropic", model: "claude-3-5-haiku-latest" },
  { provider: "openai", model: "gpt-4o-mini" },
];
const request = { messages: [{ role: "user" as const, content: "hi" }] };

describe("routing", () => {
  it("parses LLM_DEFAULT_CHAIN, defaulting to simulated", () => {
    expect(parseChain("openai:gpt-4o-mini, anthropic:claude-3-5-haiku-latest")).toEqual([
      { provider: "openai", model: "gpt-4o-mini" },
      { provider: "anthropic", model: "claude-3-5-haiku-latest" },
    ]);
    expect(parseChain(undefined)).toEqual([{ provider: "simulated", model: "sim-1" }]);
    expect(parseChain("simulated")).toEqual([{ provider: "simulated", model: "sim-1" }]);
  });

  it("cost: the cheapest model that fits goes first", () => {
    const planned = planTargets({
      strategy: "cost",
      chain,
      request,
      estimatedPromptTokens: 10,
      latency: new LatencyTracker(),
    });
    expect(planned.map((target) => target.model)).toEqual(["gpt-4o-mini", "claude-3-5-haiku-latest", "gpt-4o"]);
    // A prompt beyond 128k tokens only fits Claude's 200k window.
    const big = planTargets({
      strategy: "cost",
      chain,
      request,
      estimatedPromptTokens: 150_000,
      latency: new LatencyTracker(),
    });
    expect(big[0].model).toBe("claude-3-5-haiku-latest");
  });

  it("cost: a max_tokens past a model's longest answer goes to a model that can give it", () => {
    const longAnswer = { ...request, max_tokens: 20_000 };
    const withSonnet = [...chain, { provider: "anthropic", model: "claude-3-7-sonnet-latest" }];
    const planned = planTargets({
      strategy: "cost",
      chain: withSonnet,
      request: longAnswer,
      estimatedPromptTokens: 10,
      latency: new LatencyTracker(),
    });
    // gpt-4o-mini, gpt-4o (16,384) and claude-3-5-haiku (8,192) answer less; they stay as fallbacks, cheapest first.
    expect(planned.map((target) => target.model)).toEqual([
      "claude-3-7-sonnet-latest",
      "gpt-4o-mini",
      "claude-3-5-haiku-latest",
      "gpt-4o",
    ]);
  });

  it("latency: lowest moving average first, unmeasured targets before measured ones", () => {
    const latency = new LatencyTracker();
    latency.observe("openai:gpt-4o", 300);
    latency.observe("anthropic:claude-3-5-haiku-latest", 100);
    const planned = planTargets({ strategy: "latency", chain, request, estimatedPromptTokens: 10, latency });
    expect(planned.map((target) => target.model)).toEqual(["gpt-4o-mini", "claude-3-5-haiku-latest", "gpt-4o"]);
    latency.observe("anthropic:claude-3-5-haiku-latest", 1_100);
    expect(latency.averageMs("anthropic:claude-3-5-haiku-latest")).toBeCloseTo(300);
  });

  it("weighted: the first pick follows the weights; a named provider:model goes first", () => {
    const weighted = [
      { provider: "openai", model: "a", weight: 3 },
      { provider: "openai", model: "b", weight: 1 },
    ];
    const first = (draw: number) =>
      planTargets({
        strategy: "weighted",
        chain: weighted,
        request,
        estimatedPromptTokens: 1,
        latency: new LatencyTracker(),
        random: () => draw,
      })[0].model;
    expect(first(0.7)).toBe("a");
    expect(first(0.8)).toBe("b");
    const named = planTargets({
      strategy: "fallback",
      chain,
      request: { ...request, model: "anthropic:claude-3-5-haiku-latest" },
      estimatedPromptTokens: 1,
      latency: new LatencyTracker(),
    });
    expect(named.map((target) => target.model)).toEqual(["claude-3-5-haiku-latest", "gpt-4o", "gpt-4o-mini"]);
    // A name before a colon that is no provider, though every object has it (constructor, toString), is a model
    // name like any other: not a provider tried first, then skipped as unconfigured.
    for (const model of ["constructor:x", "toString:y", "__proto__:z"]) {
      const planned = planTargets({
        strategy: "fallback",
        chain,
        request: { ...request, model },
        estimatedPromptTokens: 1,
        latency: new LatencyTracker(),
      });
      expect(planned.map((target) => target.provider)).toEqual(["openai", "anthropic", "openai"]);
    }
  });
});

describe("a bare model name", () => {
  const claudeOnly = [{ provider: "anthropic", model: "claude-3-5-haiku-latest" }];
  const plan = (model: string, chain: RouteTarget[], providers: string[]) =>
    planTargets({
      strategy: "fallback",
      chain,
      request: { ...request, model },
      estimatedPromptTokens: 1,
      latency: new LatencyTracker(),
      providers,
    }).map((target) => `${target.provider}:${target.model}`);

  it("the chain lacks is served by the configured provider that prices it, the chain after as fallbacks", () => {
    const configured = ["simulated", "openai", "anthropic"];
    expect(plan("gpt-4o-mini", claudeOnly, configured)).toEqual([
      "openai:gpt-4o-mini",
      "anthropic:claude-3-5-haiku-latest",
    ]);
    // The first provider in the price table's order, as the models list has them.
    expect(plan("gpt-4o", claudeOnly, ["simulated", "azure", "openai", "anthropic"])[0]).toBe("openai:gpt-4o");
    expect(plan("gpt-4o", claudeOnly, ["simulated", "azure", "anthropic"])[0]).toBe("azure:gpt-4o");
    // A provider's default model is offered too (sim-1, which the price table only prices as simulated:*).
    expect(plan("sim-1", claudeOnly, configured)[0]).toBe("simulated:sim-1");
    // Not configured here, or priced for no one: the chain decides, as before.
    expect(plan("gpt-4o-mini", claudeOnly, ["simulated", "anthropic"])).toEqual(["anthropic:claude-3-5-haiku-latest"]);
    expect(plan("gpt-5-imaginary", claudeOnly, configured)).toEqual(["anthropic:claude-3-5-haiku-latest"]);
    expect(plan("auto", claudeOnly, configured)).toEqual(["anthropic:claude-3-5-haiku-latest"]);
  });

  it("the chain has is served by the chain's entries with it, a simulated entry's settings aside", () => {
    const configured = ["simulated", "openai", "anthropic"];
    expect(plan("gpt-4o-mini", chain, configured)).toEqual([
      "openai:gpt-4o-mini",
      "openai:gpt-4o",
      "anthropic:claude-3-5-haiku-latest",
    ]);
    const simulated = [...claudeOnly, { provider: "simulated", model: "sim-1?latency_ms=5" }];
    expect(plan("sim-1", simulated, configured)).toEqual([
      "simulated:sim-1?latency_ms=5",
      "anthropic:claude-3-5-haiku-latest",
    ]);
  });

  it("is tried first where GET /api/v1/llm/models/{id} finds it", () => {
    const config = llmConfig();
    const providers = ["simulated", "openai", "anthropic"];
    for (const name of ["gpt-4o-mini", "gpt-4.1", "claude-3-5-haiku-latest", "claude-opus-4-0", "sim-1"]) {
      const found = findModel(modelCatalog(config, claudeOnly), name);
      expect(plan(name, claudeOnly, providers)[0], name).toBe(found?.id);
    }
  });
});

describe("prices", () => {
  it("cost is input and output tokens at the model's price per million", () => {
    expect(PRICE_TABLE_VERSIONS[0].version).toBe("2026-11-01");
    expect(costUsd("openai", "gpt-4o-mini", { prompt_tokens: 1_000_000, completion_tokens: 1_000_000 })).toBe(0.75);
    expect(costUsd("anthropic", "claude-3-5-haiku-latest", { prompt_tokens: 1_200, completion_tokens: 350 })).toBe(
      0.00236,
    );
    expect(costUsd("simulated", "sim-1", { prompt_tokens: 5_000, completion_tokens: 5_000 })).toBe(0);
    // An unknown paid model is priced high, never as free.
    expect(priceOf("openai", "gpt-9").known).toBe(false);
    expect(costUsd("openai", "gpt-9", { prompt_tokens: 1_000_000, completion_tokens: 0 })).toBe(5);
  });

  it("cached input is charged at the cached rate from the version that brought it, at the input rate before", () => {
    const [november, cachedInput] = PRICE_TABLE_VERSIONS;
    expect(cachedInput).toMatchObject({ version: "2026-11-27", effectiveFrom: "2026-11-27" });
    expect(currentPriceTable(Date.parse("2026-11-26T23:59:59Z")).version).toBe("2026-11-01");
    expect(currentPriceTable(Date.parse("2026-11-27T00:00:00Z")).version).toBe("2026-11-27");
    // gpt-4o-mini: 600k uncached at $0.15, 400k cached at $0.075, per million.
    const usage = { prompt_tokens: 1_000_000, cached_prompt_tokens: 400_000, completion_tokens: 0 };
    expect(costUsd("openai", "gpt-4o-mini", usage, cachedInput)).toBe(0.12);
    expect(costUsd("openai", "gpt-4o-mini", usage, november)).toBe(0.15);
    // Reasoning models a request may name are priced as such, not at the unknown-model rate.
    expect(priceOf("openai", "o1", cachedInput)).toMatchObject({ known: true, outputPerMillionUsd: 60 });
    expect(priceOf("openai", "o1", november).known).toBe(false);
    // A model without a cached rate charges cached input as any input.
    expect(costUsd("anthropic", "claude-3-5-haiku-latest", usage, cachedInput)).toBe(0.8);
  });

  it("prices the older models a request may name from the version of 2026-11-28, not at the unknown-model guess", () => {
    const [, cachedInput, legacy] = PRICE_TABLE_VERSIONS;
    expect(currentPriceTable(Date.parse("2026-11-27T23:59:59Z")).version).toBe("2026-11-27");
    expect(currentPriceTable(Date.parse("2026-11-28T00:00:00Z")).version).toBe("2026-11-28");
    const million = { prompt_tokens: 1_000_000, completion_tokens: 1_000_000 };
    // Before, gpt-4 and o1-pro were charged $5 + $15, a sixth and a fortieth of their price.
    expect(costUsd("openai", "gpt-4", million, cachedInput)).toBe(20);
    expect(costUsd("openai", "gpt-4", million, legacy)).toBe(90);
    expect(costUsd("openai", "o1-pro", million, legacy)).toBe(750);
    expect(costUsd("anthropic", "claude-3-opus-latest", million, legacy)).toBe(90);
    expect(costUsd("openai", "gpt-3.5-turbo", million, legacy)).toBe(2);
    // A call that sets no max_tokens reserves the model's own ceiling, not the unknown model's guess.
    expect(priceOf("openai", "gpt-4-turbo", legacy)).toMatchObject({ known: true, maxOutputTokens: 4_096 });
    // Every row of the version before is still there, at its price.
    expect(legacy.models).toMatchObject(cachedInput.models);
  });

  it("prices a dated snapshot as the model it is a snapshot of, where the table has that model", () => {
    const [, cachedInput, legacy] = PRICE_TABLE_VERSIONS;
    const million = { prompt_tokens: 1_000_000, completion_tokens: 1_000_000 };
    expect(costUsd("openai", "gpt-4o-mini-2024-07-18", million, cachedInput)).toBe(0.75);
    expect(costUsd("anthropic", "claude-opus-4-20250514", million, cachedInput)).toBe(90);
    expect(priceOf("anthropic", "claude-3-5-haiku-20241022", cachedInput)).toMatchObject({
      known: true,
      maxOutputTokens: 8_192,
    });
    // The older models' snapshots, from the version that prices their models.
    expect(priceOf("anthropic", "claude-3-opus-20240229", cachedInput).known).toBe(false);
    expect(costUsd("anthropic", "claude-3-opus-20240229", million, legacy)).toBe(90);
    expect(costUsd("openai", "o1-pro-2025-03-19", million, legacy)).toBe(750);
    // Priced apart from its model (gpt-4o at $2.50 and $10): the unknown-model rate, which is its own.
    expect(costUsd("openai", "gpt-4o-2024-05-13", million, cachedInput)).toBe(20);
    // Azure's deployment names are their owner's, not snapshots.
    expect(priceOf("azure", "gpt-4o-mini-2024-07-18", cachedInput).known).toBe(false);
  });
});
