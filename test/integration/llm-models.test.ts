import { describe, expect, it } from "vitest";
import { findModel, modelCatalog, namedModel } from "../../src/llm/models.ts";
import { BASE, fetcher, llmConfig, workspaceWith } from "../support/llm.ts";
import { documentedResponse, openApi } from "../support/openapi.ts";

/** GET /api/v1/llm/models: what a chat completion can name, in OpenAI's Models API shape. */

describe("the model catalog", () => {
  it("offers auto, the chain in order, then each configured provider's priced models, priced from the table", () => {
    const config = llmConfig({ LOCAL_LLM_BASE_URL: "http://127.0.0.1:11434/v1" });
    const chain = [
      { provider: "anthropic", model: "claude-3-5-haiku-latest" },
      { provider: "simulated", model: "sim-1?latency_ms=5" },
    ];
    const catalog = modelCatalog(config, chain, Date.parse("2026-11-26T12:00:00Z"));
    const ids = catalog.map((model) => model.id);
    expect(ids.slice(0, 3)).toEqual(["auto", "anthropic:claude-3-5-haiku-latest", "simulated:sim-1?latency_ms=5"]);
    // Configured here: openai and anthropic (keys), local (base URL), simulated (always); Workers AI is not bound.
    expect(ids).toEqual(expect.arrayContaining(["openai:gpt-4o-mini", "openai:gpt-4.1", "anthropic:claude-opus-4-0"]));
    expect(ids).toEqual(expect.arrayContaining(["local:llama3.1", "simulated:sim-1"]));
    expect(ids.some((id) => id.startsWith("workers-ai:") || id.startsWith("azure:"))).toBe(false);
    expect(new Set(ids).size).toBe(ids.length);
    expect(findModel(catalog, "openai:gpt-4o-mini")).toEqual({
      id: "openai:gpt-4o-mini",
      object: "model",
      created: Date.parse("2026-11-01") / 1000,
      owned_by: "openai",
      x_mgx: {
        provider: "openai",
        model: "gpt-4o-mini",
        in_chain: false,
        configured: true,
        simulated: false,
        input_per_million_usd: 0.15,
        cached_input_per_million_usd: null,
        output_per_million_usd: 0.6,
        context_tokens: 128_000,
        // Answer ceilings came with the table of 2026-11-27.
        max_output_tokens: null,
        tools: true,
        price_source: "table",
        price_version: "2026-11-01",
      },
    });
    // From the version of 2026-11-27, OpenAI's cached input has its own rate.
    const later = modelCatalog(config, chain, Date.parse("2026-11-27T00:00:00Z"));
    expect(findModel(later, "openai:gpt-4o-mini")).toMatchObject({
      created: Date.parse("2026-11-27") / 1000,
      x_mgx: {
        input_per_million_usd: 0.15,
        cached_input_per_million_usd: 0.075,
        max_output_tokens: 16_384,
        price_version: "2026-11-27",
      },
    });
    expect(findModel(catalog, "simulated:sim-1?latency_ms=5")?.x_mgx).toMatchObject({
      model: "sim-1",
      in_chain: true,
      simulated: true,
      input_per_million_usd: 0,
    });
    // A bare name finds the first entry serving it: the chain's, when the chain has it.
    expect(findModel(catalog, "claude-3-5-haiku-latest")?.id).toBe("anthropic:claude-3-5-haiku-latest");
    expect(findModel(catalog, "gpt-5-imaginary")).toBeNull();
  });
});

describe("a model named provider:model that the catalog lacks", () => {
  it("is offered where the provider is configured, as a completion naming it is sent there, at the unknown rate", () => {
    const config = llmConfig();
    expect(namedModel(config, [], "openai:gpt-9")).toMatchObject({
      id: "openai:gpt-9",
      owned_by: "openai",
      x_mgx: { provider: "openai", model: "gpt-9", configured: true, price_source: "unknown", in_chain: false },
    });
    // Workers AI is not bound here, and no provider is called "nope".
    expect(namedModel(config, [], "workers-ai:@cf/new/model")).toBeNull();
    expect(namedModel(config, [], "nope:gpt-9")).toBeNull();
    expect(namedModel(config, [], "openai:")).toBeNull();
  });
});

describe("GET /api/v1/llm/models", () => {
  it("lists the workspace's models as OpenAI's list object, and gets one by id (a slash as %2F) or bare name", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [
        { provider: "workers-ai", model: "@cf/meta/llama-3.1-8b-instruct" },
        { provider: "simulated", model: "sim-1" },
      ],
    });
    const get = (path: string) => fetcher(`${BASE}/api/v1/llm/models${path}`, { headers: workspace.headers });
    const list = await get("");
    expect(list.status).toBe(200);
    const body = (await list.json()) as { object: string; data: { id: string; x_mgx: Record<string, unknown> }[] };
    expect(body.object).toBe("list");
    // This test worker configures only the offline provider; the chain's Workers AI model is listed all the same.
    expect(body.data.map((model) => model.id)).toEqual([
      "auto",
      "workers-ai:@cf/meta/llama-3.1-8b-instruct",
      "simulated:sim-1",
    ]);
    expect(body.data[1].x_mgx).toMatchObject({ in_chain: true, configured: false, input_per_million_usd: 0.28 });

    const bySlashedId = await get(`/${encodeURIComponent("workers-ai:@cf/meta/llama-3.1-8b-instruct")}`);
    expect(bySlashedId.status).toBe(200);
    expect(await bySlashedId.json()).toMatchObject({
      id: "workers-ai:@cf/meta/llama-3.1-8b-instruct",
      owned_by: "workers-ai",
    });
    expect(await (await get("/sim-1")).json()).toMatchObject({ id: "simulated:sim-1" });
    // Not listed, but a completion naming it is served by the offline provider, so it is offered.
    const named = await get("/simulated:sim-2");
    expect(named.status).toBe(200);
    expect(await named.json()).toMatchObject({ id: "simulated:sim-2", x_mgx: { configured: true, in_chain: false } });

    const unknown = await get("/openai:gpt-4o");
    expect(unknown.status).toBe(404);
    expect(unknown.headers.get("content-type")).toContain("application/problem+json");
    expect(await unknown.json()).toMatchObject({
      status: 404,
      detail: expect.stringContaining("GET /api/v1/llm/models"),
    });

    const anonymous = await fetcher(`${BASE}/api/v1/llm/models`);
    expect(anonymous.status).toBe(401);
  });

  it("refuses an id longer than any model's with the 422 its OpenAPI entry lists", async () => {
    const workspace = await workspaceWith(null);
    const tooLong = await fetcher(`${BASE}/api/v1/llm/models/${"m".repeat(257)}`, { headers: workspace.headers });
    expect(tooLong.status).toBe(422);
    expect(await tooLong.json()).toMatchObject({ code: "VALIDATION_FAILED", errors: [{ path: "model" }] });
    const documented = documentedResponse(await openApi(), "get", "/api/v1/llm/models/{model}", 422);
    expect(documented.content["application/problem+json"]).toBeDefined();
  });
});
