import { describe, expect, it } from "vitest";
import type { LlmRouting } from "../../../src/db/schema.ts";
import { findModel, modelCatalog } from "../../../src/llm/models.ts";
import { costUsd, PRICE_TABLE_VERSIONS, priceInForce } from "../../../src/llm/prices.ts";
import {
  chainTargets,
  LatencyTracker,
  planTargets,
  targetCostUsd,
  targetPrice,
  unpricedEntries,
} from "../../../src/llm/routing.ts";
import { llmConfig } from "../../support/llm.ts";

/** A chain entry's own price (`price` of PATCH /api/v1/workspace): what a workspace's calls cost in its place. */

const [, cachedInputTable] = PRICE_TABLE_VERSIONS;
const request = { messages: [{ role: "user" as const, content: "hi" }] };
// An Azure deployment named by its owner: the table cannot know it.
const prodChat = { input_per_million_usd: 2, cached_input_per_million_usd: 0.5, output_per_million_usd: 8 };

describe("the price in force", () => {
  it("is the table's for a model it lists, and the conservative unknown-model rate, marked as such, for one it lacks", () => {
    expect(priceInForce("openai", "gpt-4o-mini", undefined, cachedInputTable)).toEqual({
      inputPerMillionUsd: 0.15,
      cachedInputPerMillionUsd: 0.075,
      outputPerMillionUsd: 0.6,
      contextTokens: 128_000,
      tools: true,
      maxOutputTokens: 16_384,
      source: "table",
    });
    expect(priceInForce("azure", "prod-chat", undefined, cachedInputTable)).toMatchObject({
      inputPerMillionUsd: 5,
      outputPerMillionUsd: 15,
      source: "unknown",
    });
    // Self-hosted and offline providers are priced (free) by their fallback rows: no guess.
    expect(priceInForce("local", "qwen2.5-coder", undefined, cachedInputTable).source).toBe("table");
  });

  it("is the workspace's own rates where its chain entry states them, with the table's context window and tools", () => {
    expect(priceInForce("azure", "prod-chat", prodChat, cachedInputTable)).toEqual({
      inputPerMillionUsd: 2,
      cachedInputPerMillionUsd: 0.5,
      outputPerMillionUsd: 8,
      contextTokens: 128_000,
      tools: true,
      source: "workspace",
    });
    // Over a listed model, all its rates are replaced: without a cached rate of its own, cached input costs as input.
    const own = priceInForce("openai", "gpt-4o", { input_per_million_usd: 2, output_per_million_usd: 6 });
    expect(own).toMatchObject({ inputPerMillionUsd: 2, outputPerMillionUsd: 6, source: "workspace" });
    expect(own.cachedInputPerMillionUsd).toBeUndefined();
    // A paid local server: no longer free.
    expect(
      priceInForce("local", "llama3.1", { input_per_million_usd: 0.1, output_per_million_usd: 0.2 }),
    ).toMatchObject({ inputPerMillionUsd: 0.1, outputPerMillionUsd: 0.2, contextTokens: 32_768, source: "workspace" });
  });
});

describe("a chain's targets", () => {
  it("carry their entry's own price, resolved once, and are charged exactly tokens × that price", () => {
    const [priced, plain] = chainTargets([
      { provider: "azure", model: "prod-chat", weight: 2, price: prodChat },
      { provider: "openai", model: "gpt-4o-mini" },
    ]);
    expect(priced).toEqual({ provider: "azure", model: "prod-chat", weight: 2, ownPrice: expect.any(Object) });
    expect(plain).toEqual({ provider: "openai", model: "gpt-4o-mini" });
    expect(targetPrice(priced)).toBe(priced.ownPrice);
    const usage = { prompt_tokens: 1_000, cached_prompt_tokens: 400, completion_tokens: 500 };
    // 600 input at $2, 400 cached at $0.50, 500 output at $8, per million.
    expect(targetCostUsd(priced, usage)).toBe(0.0054);
    // The unknown-model rate it replaces would have said $0.0125.
    expect(costUsd("azure", "prod-chat", usage)).toBe(0.0125);
    expect(targetCostUsd(plain, usage)).toBe(costUsd("openai", "gpt-4o-mini", usage));
    const cachedAsInput = chainTargets([
      { provider: "openai", model: "gpt-4o", price: { input_per_million_usd: 1, output_per_million_usd: 1 } },
    ])[0];
    expect(targetCostUsd(cachedAsInput, usage)).toBe(0.0015);
  });

  it("are ranked by the cost strategy at the workspace's price, not the table's", () => {
    const chain: LlmRouting["chain"] = [
      { provider: "openai", model: "gpt-4o-mini" },
      { provider: "anthropic", model: "claude-3-5-haiku-latest" },
    ];
    const plan = (entries: LlmRouting["chain"]) =>
      planTargets({
        strategy: "cost",
        chain: chainTargets(entries),
        request,
        estimatedPromptTokens: 10,
        latency: new LatencyTracker(),
      }).map((target) => target.provider);
    // By the table gpt-4o-mini ($0.15/$0.60) is cheaper than Haiku ($0.80/$4).
    expect(plan(chain)).toEqual(["openai", "anthropic"]);
    const cheapHaiku = { input_per_million_usd: 0.01, output_per_million_usd: 0.01 };
    expect(plan([chain[0], { ...chain[1], price: cheapHaiku }])).toEqual(["anthropic", "openai"]);
  });

  it("keep their price when a request names their provider:model", () => {
    const chain = chainTargets([
      { provider: "openai", model: "gpt-4o-mini" },
      { provider: "azure", model: "prod-chat", price: prodChat },
    ]);
    const [first] = planTargets({
      strategy: "fallback",
      chain,
      request: { ...request, model: "azure:prod-chat" },
      estimatedPromptTokens: 10,
      latency: new LatencyTracker(),
    });
    expect(first).toMatchObject({ provider: "azure", model: "prod-chat", ownPrice: { source: "workspace" } });
  });

  it("whose calls would be charged a guess are named: a paid provider's model the table lacks, without a price", () => {
    expect(
      unpricedEntries([
        { provider: "azure", model: "prod-chat" },
        { provider: "azure", model: "prod-chat-2", price: prodChat },
        { provider: "openai", model: "gpt-4o-mini" },
        { provider: "openai", model: "gpt-9-preview" },
        { provider: "local", model: "anything" },
        { provider: "simulated", model: "sim-1?latency_ms=5" },
      ]),
    ).toEqual(["azure:prod-chat", "openai:gpt-9-preview"]);
  });
});

describe("the model catalog", () => {
  it("shows each model's price in force for the workspace and where it comes from", () => {
    const chain = chainTargets([
      { provider: "openai", model: "gpt-4o-mini", price: { input_per_million_usd: 0.1, output_per_million_usd: 0.4 } },
      { provider: "openai", model: "gpt-9-preview" },
    ]);
    const catalog = modelCatalog(llmConfig(), chain, Date.parse("2026-11-27T12:00:00Z"));
    expect(findModel(catalog, "auto")?.x_mgx.price_source).toBeNull();
    expect(findModel(catalog, "openai:gpt-4o-mini")?.x_mgx).toMatchObject({
      input_per_million_usd: 0.1,
      cached_input_per_million_usd: null,
      output_per_million_usd: 0.4,
      price_source: "workspace",
    });
    expect(findModel(catalog, "openai:gpt-9-preview")?.x_mgx).toMatchObject({
      input_per_million_usd: 5,
      output_per_million_usd: 15,
      price_source: "unknown",
    });
    expect(findModel(catalog, "openai:gpt-4.1")?.x_mgx).toMatchObject({
      input_per_million_usd: 2,
      price_source: "table",
    });
  });
});
