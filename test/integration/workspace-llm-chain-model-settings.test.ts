import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { chainProblems } from "../../src/llm/routing.ts";
import { bearer, createTestWorkspace } from "../support/workspaces.ts";

/**
 * A model name's query string (`sim-1?failure_rate=1`) is the simulated provider's settings. On any other provider
 * it is sent as part of the name (`gpt-4o-mini?temperature=0` to OpenAI, to the Workers AI binding, in an Azure
 * deployment's path), which no provider has: every call of the chain failed, a 503, while the price table, which
 * reads the name without it, showed the entry priced as the model it is not.
 */

const BASE = "http://edge.test";
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));

function patch(token: string, body: unknown) {
  return fetcher(`${BASE}/api/v1/workspace`, {
    method: "PATCH",
    headers: { ...bearer(token), "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

describe("PATCH /api/v1/workspace: a chain entry's model with settings", () => {
  it("refuses a query string on a provider other than simulated (422 naming the model), rather than fail every call", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE, { plan: "team" });
    const chain = [
      { provider: "simulated", model: "sim-1" },
      { provider: "openai", model: "gpt-4o-mini?temperature=0" },
      { provider: "workers-ai", model: "@cf/meta/llama-3.1-8b-instruct?max_tokens=512" },
    ];
    const refused = await patch(workspace.key, { llm: { strategy: "fallback", chain } });
    expect(refused.status).toBe(422);
    const problem = (await refused.json()) as { errors: { path: string; message: string }[] };
    expect(problem.errors).toEqual([
      { path: "llm.chain.1.model", message: expect.stringContaining("simulated") },
      { path: "llm.chain.2.model", message: expect.stringContaining("simulated") },
    ]);
    const read = await fetcher(`${BASE}/api/v1/workspace`, { headers: bearer(workspace.key) });
    expect(((await read.json()) as { llm: unknown }).llm).toBeNull();
  });

  it("still takes the simulated provider's settings", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE, { plan: "team" });
    const llm = { strategy: "fallback", chain: [{ provider: "simulated", model: "sim-1?failure_rate=1" }] };
    const accepted = await patch(workspace.key, { llm });
    expect(accepted.status).toBe(200);
    expect(((await accepted.json()) as { llm: unknown }).llm).toEqual(llm);
  });
});

describe("LLM_DEFAULT_CHAIN: a model with settings", () => {
  it("is a problem on a provider other than simulated, as a workspace's chain entry is", () => {
    expect(chainProblems("simulated:sim-1?latency_ms=5")).toEqual([]);
    expect(chainProblems("simulated:sim-1,anthropic:claude-3-5-haiku-latest?temperature=0")).toEqual([
      expect.stringMatching(/^entry 2: .*simulated/),
    ]);
  });
});
