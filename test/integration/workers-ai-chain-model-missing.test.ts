import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createApp } from "../../src/app.ts";
import { BASE, workspaceWith } from "../support/llm.ts";

/**
 * A Workers AI model the account does not have. The binding throws "5007: No such model … or task" (documented with
 * HTTP 400, as Workers AI's own API answers it), its `InferenceUpstreamError` message, where OpenAI, Azure and local
 * servers answer a 404. On the workspace's chain (a misspelt name, a model Cloudflare retired) it is the chain's to
 * mend, as theirs are: a 503 no retry mends, not the 400 that told a caller who named no model to change its request.
 */

const MODEL = "@cf/meta/llama-3.1-8b-instrcut";

/** The binding as the runtime's makes it throw: the internal code and its description in the message, no status. */
function missingModelBinding(seen: string[]) {
  return {
    run: async (model: string) => {
      seen.push(model);
      const error = new Error(`5007: No such model ${model} or task`);
      error.name = "AiError";
      throw error;
    },
  };
}

async function chat(key: string, model: string, seen: string[]): Promise<Response> {
  const request = new Request(`${BASE}/api/v1/llm/chat/completions`, {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ model, messages: [{ role: "user", content: "Summarise the release notes" }] }),
  });
  return createApp().fetch(request, { ...env, AI: missingModelBinding(seen) }, createExecutionContext());
}

describe("a Workers AI model the binding does not have", () => {
  it("on the workspace's chain is the chain's to mend: 503 with X-Should-Retry: false, not the caller's 400", async () => {
    const workspace = await workspaceWith({ strategy: "fallback", chain: [{ provider: "workers-ai", model: MODEL }] });
    const seen: string[] = [];
    const response = await chat(workspace.key, "auto", seen);
    expect(seen).toEqual([MODEL]);
    expect(response.status).toBe(503);
    expect(response.headers.get("X-Should-Retry")).toBe("false");
    expect(await response.json()).toMatchObject({
      reason: "all_providers_failed",
      retryable: false,
      failures: [expect.objectContaining({ provider: "workers-ai", model: MODEL, code: "workers_ai_5007" })],
    });
  });

  it("named by the request is the caller's: the chain serves the call", async () => {
    const workspace = await workspaceWith({ strategy: "fallback", chain: [{ provider: "simulated", model: "sim-1" }] });
    const seen: string[] = [];
    const response = await chat(workspace.key, `workers-ai:${MODEL}`, seen);
    expect(seen).toEqual([MODEL]);
    expect(response.status).toBe(200);
    expect(response.headers.get("X-LLM-Provider")).toBe("simulated");
  });
});
