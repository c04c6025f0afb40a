import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app.ts";
import { createLlmRouter } from "../../src/llm/index.ts";
import { BASE, fakeUpstreams, llmConfig, openAiCompletion, quietLogger, workspaceWith } from "../support/llm.ts";

/**
 * The price table's `tools` flag: GET /api/v1/llm/models tells it as `x_mgx.tools`, and the `cost` strategy
 * tries first only a model that takes tools when the request offers some. OpenAI refuses `tools` on o1-mini
 * (400 `unsupported_parameter`: "'tools' is not supported with this model").
 */

afterEach(() => vi.restoreAllMocks());

const OPENAI = "openai.test";
const tools = [{ type: "function" as const, function: { name: "write_file", parameters: { type: "object" } } }];
const messages = [{ role: "user" as const, content: "Write the file." }];

/** OpenAI as it answers: a 400 for tools sent to o1-mini, else a completion. */
async function openAi(request: Request): Promise<Response> {
  const body = (await request.json()) as { model: string; tools?: unknown[] };
  if (body.model.startsWith("o1-mini") && body.tools) {
    return Response.json(
      {
        error: {
          message: "Unsupported parameter: 'tools' is not supported with this model.",
          type: "invalid_request_error",
          param: "tools",
          code: "unsupported_parameter",
        },
      },
      { status: 400 },
    );
  }
  return openAiCompletion(`from ${body.model}`);
}

describe("o1-mini, which takes no tools", () => {
  it("is listed by GET /api/v1/llm/models with tools: false, its dated snapshot too", async () => {
    const workspace = await workspaceWith(null);
    // A deployment with OpenAI configured.
    const toolsOf = async (id: string) => {
      const response = await createApp().fetch(
        new Request(`${BASE}/api/v1/llm/models/${id}`, { headers: workspace.headers }),
        { ...env, OPENAI_API_KEY: "sk-test" },
        createExecutionContext(),
      );
      expect(response.status).toBe(200);
      return ((await response.json()) as { x_mgx: { tools: boolean } }).x_mgx.tools;
    };
    expect(await toolsOf("openai:o1-mini")).toBe(false);
    expect(await toolsOf("o1-mini-2024-09-12")).toBe(false);
    // A model that does take them still says so.
    expect(await toolsOf("openai:gpt-4o")).toBe(true);
  });

  it("is not tried first by the cost strategy for a request with tools, though it is the cheaper model", async () => {
    const fake = fakeUpstreams({ [OPENAI]: openAi });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = createLlmRouter(llmConfig(), { logger: quietLogger });
    // o1-mini ($1.10 in, $4.40 out) costs less than gpt-4o ($2.50, $10).
    const workspace = await workspaceWith({
      strategy: "cost",
      chain: [
        { provider: "openai", model: "gpt-4o" },
        { provider: "openai", model: "o1-mini" },
      ],
    });
    const answer = await router.chat({ messages, tools }, { workspaceId: workspace.id, chargeKey: "with-tools" });
    expect(answer.model).toBe("gpt-4o");
    // Tried first, o1-mini was sent the call and refused it: a wasted attempt and an llm.provider.error per call.
    expect(fake.count(OPENAI)).toBe(1);
    // Without tools, the cheaper o1-mini is still first.
    const plain = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "without-tools" });
    expect(plain.model).toBe("o1-mini");
  });
});
