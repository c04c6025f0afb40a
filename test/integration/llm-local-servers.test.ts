import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app.ts";
import { BASE, fakeUpstreams, workspaceWith } from "../support/llm.ts";

/**
 * POST /api/v1/llm/chat/completions on a `local` server (vLLM, Ollama, LM Studio) as those servers answer,
 * which is not always as OpenAI does: their error bodies, the request fields they refuse, their usage figures.
 */

afterEach(() => vi.restoreAllMocks());

const LOCAL = "local.test";
const providers = { LOCAL_LLM_BASE_URL: `http://${LOCAL}/v1` };
const localChain = () => workspaceWith({ strategy: "fallback", chain: [{ provider: "local", model: "qwen2.5" }] });

async function chat(key: string, body: Record<string, unknown>): Promise<Response> {
  const request = new Request(`${BASE}/api/v1/llm/chat/completions`, {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ model: "auto", messages: [{ role: "user", content: "Say hello" }], ...body }),
  });
  return createApp().fetch(request, { ...env, ...providers }, createExecutionContext());
}

describe("a local server's errors", () => {
  it("tells the caller the message of vLLM's error object and of a bare error string, not 'Bad Request'", async () => {
    const workspace = await localChain();
    const vllm = {
      object: "error",
      message: "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
      type: "BadRequestError",
      param: null,
      code: 400,
    };
    const fake = fakeUpstreams({
      [LOCAL]: (_request, call) =>
        call === 1
          ? Response.json(vllm, { status: 400, statusText: "Bad Request" })
          : Response.json({ error: "Model does not support images" }, { status: 400, statusText: "Bad Request" }),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);

    const refused = await chat(workspace.key, {});
    expect(refused.status).toBe(400);
    const body = (await refused.json()) as { detail: string; failures: { status: number; message: string }[] };
    expect(body.failures).toEqual([
      expect.objectContaining({ status: 400, message: `provider answered 400: ${vllm.message}` }),
    ]);
    expect(body.detail).toContain("maximum context length is 4096 tokens");

    const lmStudio = (await (await chat(workspace.key, {})).json()) as { failures: { message: string }[] };
    expect(lmStudio.failures[0].message).toBe("provider answered 400: Model does not support images");
  });
});
