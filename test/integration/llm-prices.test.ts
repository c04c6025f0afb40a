import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { WorkspacePrice } from "../../src/db/schema.ts";
import { createLlmRouter } from "../../src/llm/index.ts";
import { costUsd } from "../../src/llm/prices.ts";
import {
  anthropicMessage,
  BASE,
  fakeUpstreams,
  fetcher,
  llmConfig,
  openAiCompletion,
  quietLogger,
  workspaceWith,
} from "../support/llm.ts";
import type { TestWorkspace } from "../support/workspaces.ts";

/**
 * A chain entry's own price (PATCH /api/v1/workspace `llm.chain[].price`): the workspace's calls to that
 * (provider, model) are charged, reserved and ranked at it, and GET /api/v1/llm/models says where each
 * price comes from.
 */

afterEach(() => vi.restoreAllMocks());

const OPENAI = "openai.test";
const ANTHROPIC = "anthropic.test";
const messages = [{ role: "user" as const, content: "Refactor the parser." }];

function patchLlm(workspace: TestWorkspace, llm: unknown) {
  return fetcher(`${BASE}/api/v1/workspace`, {
    method: "PATCH",
    headers: { ...workspace.headers, "Content-Type": "application/json" },
    body: JSON.stringify({ llm }),
  });
}

async function usageOf(workspace: TestWorkspace, atLeastCalls = 1) {
  let body = { data: [] as Record<string, unknown>[], totals: {} as Record<string, number> };
  // Usage rows are written just after the answer (coalesced per isolate).
  for (let tries = 0; tries < 100; tries++) {
    body = (await (await fetcher(`${BASE}/api/v1/usage`, { headers: workspace.headers })).json()) as typeof body;
    if ((body.totals.calls ?? 0) >= atLeastCalls) break;
    await new Promise((wake) => setTimeout(wake, 20));
  }
  return body;
}

describe("a chain entry's own price", () => {
  // A fine-tuned model the price table cannot know, at what the workspace's contract says it costs.
  const fineTuned = "ft:gpt-4o-mini:acme:parser:v1";
  const price: WorkspacePrice = {
    input_per_million_usd: 0.3,
    cached_input_per_million_usd: 0.15,
    output_per_million_usd: 1.2,
  };

  it("is what a call costs: its cost_usd, its usage row and GET /api/v1/usage are tokens × that price", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "openai", model: fineTuned, price }],
    });
    const reported = {
      prompt_tokens: 10_000,
      completion_tokens: 200,
      total_tokens: 10_200,
      prompt_tokens_details: { cached_tokens: 8_000 },
    };
    const fake = fakeUpstreams({
      [OPENAI]: () =>
        Response.json({
          choices: [{ index: 0, message: { role: "assistant", content: "done" }, finish_reason: "stop" }],
          usage: reported,
        }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const result = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "own-price" });
    // 2,000 input at $0.30, 8,000 cached at $0.15, 200 output at $1.20, per million.
    const expectedUsd = 0.00204;
    expect(result).toMatchObject({ provider: "openai", model: fineTuned, cost_usd: expectedUsd });
    // Not the unknown-model guess it was charged before.
    expect(costUsd("openai", fineTuned, result.usage)).toBe(0.053);
    const usage = await usageOf(workspace);
    expect(usage.data).toEqual([
      expect.objectContaining({ provider: "openai", model: fineTuned, calls: 1, cost_usd: expectedUsd }),
    ]);
    const status = await env.WORKSPACE_LIMITER.getByName(workspace.id).budgetStatus();
    expect(status.daily).toMatchObject({ cost_usd: expectedUsd });
  });

  it("is what the budget reserves for a call before it is made", async () => {
    const expensive: WorkspacePrice = { input_per_million_usd: 1_000, output_per_million_usd: 2_000 };
    const workspace = await workspaceWith(
      { strategy: "fallback", chain: [{ provider: "openai", model: fineTuned, price: expensive }] },
      // Room for a few such calls only: no lease, so the call's own reservation shows.
      { daily_tokens: null, monthly_tokens: null, daily_cost_usd: 1, monthly_cost_usd: null },
    );
    let answer!: () => void;
    const answered = new Promise<void>((resolve) => {
      answer = resolve;
    });
    let reached!: () => void;
    const atUpstream = new Promise<void>((resolve) => {
      reached = resolve;
    });
    const fake = fakeUpstreams({
      [OPENAI]: async () => {
        reached();
        await answered;
        return openAiCompletion("done", { prompt_tokens: 9, completion_tokens: 10 });
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const call = router.chat({ messages, max_tokens: 100 }, { workspaceId: workspace.id, chargeKey: "reserved" });
    await atUpstream;
    const limiter = env.WORKSPACE_LIMITER.getByName(workspace.id);
    // The estimate (9 prompt tokens, the 100 asked for) at $1,000 in and $2,000 out per million.
    expect((await limiter.budgetStatus()).daily).toMatchObject({ reserved_tokens: 109, reserved_cost_usd: 0.209 });
    answer();
    expect((await call).cost_usd).toBe(0.029);
    expect((await limiter.budgetStatus()).daily).toMatchObject({ reserved_cost_usd: 0, cost_usd: 0.029 });
  });

  it("ranks the cost strategy's targets, over the table's price", async () => {
    const fake = fakeUpstreams({
      [OPENAI]: () => openAiCompletion("from openai"),
      [ANTHROPIC]: () => anthropicMessage("from claude"),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    const chain = (openAiPrice?: WorkspacePrice) => [
      { provider: "openai", model: "gpt-4o-mini", ...(openAiPrice ? { price: openAiPrice } : {}) },
      { provider: "anthropic", model: "claude-3-5-haiku-latest" },
    ];
    // By the table, gpt-4o-mini ($0.15 in, $0.60 out) is cheaper than Haiku ($0.80, $4).
    const byTable = await workspaceWith({ strategy: "cost", chain: chain() });
    const tableFirst = await router.chat({ messages }, { workspaceId: byTable.id, chargeKey: "by-table" });
    expect(tableFirst.provider).toBe("openai");
    // At what this workspace pays for it (a reseller's markup, say), Haiku is the cheaper one.
    const byOwn = await workspaceWith({
      strategy: "cost",
      chain: chain({ input_per_million_usd: 50, output_per_million_usd: 100 }),
    });
    const ownFirst = await router.chat({ messages }, { workspaceId: byOwn.id, chargeKey: "by-own" });
    expect(ownFirst.provider).toBe("anthropic");
    expect(fake.count(OPENAI)).toBe(1);
    expect(fake.count(ANTHROPIC)).toBe(1);
  });
});

describe("PATCH /api/v1/workspace with priced chain entries, and what the workspace then sees", () => {
  const llm = {
    strategy: "fallback",
    chain: [
      { provider: "simulated", model: "sim-1", price: { input_per_million_usd: 3, output_per_million_usd: 7 } },
      { provider: "openai", model: "gpt-4o-mini" },
      // A paid provider's model the table lacks, without a price: accepted, priced as a guess.
      { provider: "azure", model: "prod-chat" },
    ],
  };

  it("charges an OpenAI-compatible completion at the price set", async () => {
    const workspace = await workspaceWith(null);
    const patched = await patchLlm(workspace, llm);
    expect(patched.status).toBe(200);
    expect(((await patched.json()) as { llm: unknown }).llm).toEqual(llm);

    const completion = await fetcher(`${BASE}/api/v1/llm/chat/completions`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: "hi" }], max_tokens: 10 }),
    });
    expect(completion.status).toBe(200);
    const body = (await completion.json()) as {
      usage: { prompt_tokens: number; completion_tokens: number };
      x_mgx: { cost_usd: number };
    };
    const expectedUsd = (body.usage.prompt_tokens * 3 + body.usage.completion_tokens * 7) / 1_000_000;
    expect(body.usage.completion_tokens).toBe(10);
    expect(body.x_mgx.cost_usd).toBe(expectedUsd);
    const usage = await usageOf(workspace);
    expect(usage.data).toEqual([
      expect.objectContaining({ provider: "simulated", model: "sim-1", calls: 1, cost_usd: expectedUsd }),
    ]);
  });

  it("lists each model's price in force for the workspace and where it comes from", async () => {
    const workspace = await workspaceWith(null);
    expect((await patchLlm(workspace, llm)).status).toBe(200);
    const models = (await (await fetcher(`${BASE}/api/v1/llm/models`, { headers: workspace.headers })).json()) as {
      data: { id: string; x_mgx: Record<string, unknown> }[];
    };
    const sourceOf = Object.fromEntries(models.data.map((model) => [model.id, model.x_mgx.price_source]));
    expect(sourceOf).toMatchObject({
      auto: null,
      "simulated:sim-1": "workspace",
      "openai:gpt-4o-mini": "table",
      "azure:prod-chat": "unknown",
    });
    const one = await fetcher(`${BASE}/api/v1/llm/models/simulated:sim-1`, { headers: workspace.headers });
    expect(((await one.json()) as { x_mgx: unknown }).x_mgx).toMatchObject({
      input_per_million_usd: 3,
      cached_input_per_million_usd: null,
      output_per_million_usd: 7,
      price_source: "workspace",
    });
    const guess = await fetcher(`${BASE}/api/v1/llm/models/prod-chat`, { headers: workspace.headers });
    expect(((await guess.json()) as { x_mgx: unknown }).x_mgx).toMatchObject({
      input_per_million_usd: 5,
      output_per_million_usd: 15,
      price_source: "unknown",
    });

    const providers = (await (await fetcher(`${BASE}/api/v1/providers`, { headers: workspace.headers })).json()) as {
      data: { provider: string; models: { model: string }[] }[];
    };
    const modelOf = (provider: string, model: string) =>
      providers.data.find((entry) => entry.provider === provider)?.models.find((entry) => entry.model === model);
    expect(modelOf("simulated", "sim-1")).toMatchObject({
      input_per_million_usd: 3,
      output_per_million_usd: 7,
      price_source: "workspace",
    });
    expect(modelOf("openai", "gpt-4o-mini")).toMatchObject({ input_per_million_usd: 0.15, price_source: "table" });
    expect(modelOf("azure", "prod-chat")).toMatchObject({ input_per_million_usd: 5, price_source: "unknown" });
  });

  it("logs a warning for a paid provider's model without a price, and none once it has one", async () => {
    const workspace = await workspaceWith(null);
    const lines: string[] = [];
    vi.spyOn(console, "log").mockImplementation((line: unknown) => void lines.push(String(line)));
    const unpricedWarnings = () =>
      lines.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => "unpriced" in line);

    const chain = [
      { provider: "azure", model: "prod-chat" },
      { provider: "openai", model: "gpt-4o-mini" },
    ];
    expect((await patchLlm(workspace, { strategy: "fallback", chain })).status).toBe(200);
    expect(unpricedWarnings()).toEqual([
      expect.objectContaining({ level: "warn", workspace_id: workspace.id, unpriced: ["azure:prod-chat"] }),
    ]);

    lines.length = 0;
    const priced = [{ ...chain[0], price: { input_per_million_usd: 2, output_per_million_usd: 8 } }, chain[1]];
    expect((await patchLlm(workspace, { strategy: "fallback", chain: priced })).status).toBe(200);
    expect(unpricedWarnings()).toEqual([]);
  });

  it("refuses an invalid price with 422 and keeps the chain it had, but not one price written two ways", async () => {
    const workspace = await workspaceWith(null);
    const entry = (price: unknown) => ({ provider: "azure", model: "prod-chat", price });
    const refused = async (chain: unknown[]) => {
      const response = await patchLlm(workspace, { strategy: "fallback", chain });
      expect(response.status).toBe(422);
      expect(response.headers.get("content-type")).toContain("application/problem+json");
      return ((await response.json()) as { errors: { path: string; message: string }[] }).errors;
    };
    const valid = { input_per_million_usd: 2, output_per_million_usd: 8 };
    expect(await refused([entry({ ...valid, input_per_million_usd: -1 })])).toEqual([
      { path: "llm.chain.0.price.input_per_million_usd", message: expect.any(String) },
    ]);
    expect(await refused([entry({ ...valid, output_per_million_usd: "8" })])).toEqual([
      { path: "llm.chain.0.price.output_per_million_usd", message: expect.any(String) },
    ]);
    expect(await refused([entry({ input_per_million_usd: 2 })])).toEqual([
      { path: "llm.chain.0.price.output_per_million_usd", message: expect.any(String) },
    ]);
    // Per token instead of per million, or a JSON number too big to be finite.
    expect((await refused([entry({ ...valid, cached_input_per_million_usd: 1e9 })]))[0].path).toBe(
      "llm.chain.0.price.cached_input_per_million_usd",
    );
    const overflowing = await fetcher(`${BASE}/api/v1/workspace`, {
      method: "PATCH",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: `{"llm":{"strategy":"fallback","chain":[{"provider":"azure","model":"prod-chat","price":{"input_per_million_usd":1e999,"output_per_million_usd":1}}]}}`,
    });
    expect(overflowing.status).toBe(422);
    // A misspelt cached rate is refused, not dropped (cached input would cost as full input).
    expect(await refused([entry({ ...valid, cache_input_per_million_usd: 1 })])).toEqual([
      {
        path: "llm.chain.0.price.cache_input_per_million_usd",
        message: "is not a field of this request; remove it or check its spelling",
      },
    ]);
    // The same model twice at two prices (or once priced, once not): which one a call costs would be a guess.
    expect(await refused([entry(valid), entry({ ...valid, output_per_million_usd: 9 })])).toEqual([
      { path: "llm.chain.1.price", message: expect.stringContaining("entry 0") },
    ]);
    expect(await refused([entry(valid), { provider: "azure", model: "prod-chat" }])).toEqual([
      { path: "llm.chain.1.price", message: expect.stringContaining("entry 0") },
    ]);
    const read = await fetcher(`${BASE}/api/v1/workspace`, { headers: workspace.headers });
    expect(((await read.json()) as { llm: unknown }).llm).toBeNull();
    // The same price twice, its fields in another order (and a null cached rate, as GET /api/v1/providers
    // shows one that is absent), is one price.
    const reordered = { output_per_million_usd: 8, cached_input_per_million_usd: null, input_per_million_usd: 2 };
    expect((await patchLlm(workspace, { strategy: "weighted", chain: [entry(valid), entry(reordered)] })).status).toBe(
      200,
    );
    // A null price is no price: the table's (an unpriced guess here).
    expect((await patchLlm(workspace, { strategy: "fallback", chain: [entry(null)] })).status).toBe(200);
    const models = await fetcher(`${BASE}/api/v1/llm/models/azure:prod-chat`, { headers: workspace.headers });
    expect(((await models.json()) as { x_mgx: { price_source: string } }).x_mgx.price_source).toBe("unknown");
  });
});
