import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createApp } from "../../src/app.ts";
import { BASE, workspaceWith } from "../support/llm.ts";

/**
 * LLM_ATTEMPT_TIMEOUT_MS bounds each attempt, Workers AI's too. The binding takes no abort signal, so a Workers AI
 * model that did not answer held the call until the binding gave up, however long: the chain's next entry was never
 * tried, and the client's own timeout came first.
 */

const MODEL = "@cf/meta/llama-3.1-8b-instruct";

describe("a Workers AI model that does not answer", () => {
  it("is given up at the attempt timeout, and the chain's next entry serves the call", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [
        { provider: "workers-ai", model: MODEL },
        { provider: "simulated", model: "sim-1" },
      ],
    });
    let runs = 0;
    const hung = {
      run: () => {
        runs++;
        return new Promise<unknown>(() => {});
      },
    };
    const request = new Request(`${BASE}/api/v1/llm/chat/completions`, {
      method: "POST",
      headers: { Authorization: `Bearer ${workspace.key}`, "Content-Type": "application/json" },
      body: JSON.stringify({ model: "auto", messages: [{ role: "user", content: "Summarise the release notes" }] }),
    });
    const startedMs = Date.now();
    const answer = createApp().fetch(
      request,
      { ...env, AI: hung, LLM_ATTEMPT_TIMEOUT_MS: "200" },
      createExecutionContext(),
    );
    const response = await Promise.race([answer, new Promise<null>((wake) => setTimeout(() => wake(null), 8_000))]);
    expect(response, "still waiting on the binding after 8 s").not.toBeNull();
    expect(response!.status).toBe(200);
    expect(response!.headers.get("X-LLM-Provider")).toBe("simulated");
    // Three attempts of 200 ms and two backoffs of at most 0.5 and 1 s.
    expect(Date.now() - startedMs).toBeLessThan(6_000);
    expect(runs).toBe(3);
    const body = (await response!.json()) as { x_mgx: { timed_out_attempts: unknown[] } };
    expect(body.x_mgx.timed_out_attempts).toHaveLength(3);
  }, 15_000);
});
