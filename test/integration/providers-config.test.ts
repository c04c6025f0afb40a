import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createApp } from "../../src/app.ts";
import { BASE, workspaceWith } from "../support/llm.ts";

/** What GET /api/v1/providers tells of a deployment whose providers are configured in part. */

describe("GET /api/v1/providers on a deployment configured in part", () => {
  it("names the settings that configure each provider, so a chain's unconfigured entry says what to put", async () => {
    // Before, `configured: false` was all a workspace whose chain named such a provider was told.
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [
        { provider: "anthropic", model: "claude-3-5-haiku-latest" },
        { provider: "openai", model: "gpt-4o-mini" },
      ],
    });
    const response = await createApp().fetch(
      new Request(`${BASE}/api/v1/providers`, { headers: workspace.headers }),
      { ...env, OPENAI_API_KEY: "sk-test" },
      createExecutionContext(),
    );
    expect(response.status).toBe(200);
    const body = (await response.json()) as {
      data: { provider: string; configured: boolean; configured_by: string | null }[];
    };
    expect(body.data.map(({ provider, configured, configured_by }) => [provider, configured, configured_by])).toEqual([
      ["simulated", true, null],
      ["openai", true, "OPENAI_API_KEY or OPENAI_BASE_URL"],
      ["azure", false, "AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT"],
      ["anthropic", false, "ANTHROPIC_API_KEY"],
      ["workers-ai", false, "the AI binding"],
      ["local", false, "LOCAL_LLM_BASE_URL"],
    ]);
  });
});
