import { describe, expect, it } from "vitest";
import { BASE, fetcher, workspaceWith } from "../support/llm.ts";

/**
 * Requests of the other popular JavaScript clients of OpenAI (the Vercel AI SDK's `@ai-sdk/openai`,
 * LangChain's `@langchain/openai`) as they send them, replayed with plain fetch: those clients are not
 * dependencies of this repository, so what they send and read is reproduced here.
 */

/** What `createOpenAI({ baseURL, apiKey })(model)` (the AI SDK's default model, not `.chat(model)`) sends for generateText. */
const AI_SDK_RESPONSES_REQUEST = {
  model: "auto",
  input: [{ role: "user", content: [{ type: "input_text", text: "Say hi" }] }],
};

describe("OpenAI's Responses API, which the AI SDK's default model and LangChain's useResponsesApi call", () => {
  it("is refused with a 404 that says it is not offered and how to reach chat completions instead", async () => {
    const workspace = await workspaceWith(null);
    for (const [method, path, body] of [
      ["POST", "/api/v1/llm/responses", AI_SDK_RESPONSES_REQUEST],
      ["POST", "/api/v1/llm/responses", { ...AI_SDK_RESPONSES_REQUEST, stream: true }],
      ["GET", "/api/v1/llm/responses/resp_123", undefined],
    ] as const) {
      const response = await fetcher(`${BASE}${path}`, {
        method,
        headers: { ...workspace.headers, ...(body ? { "Content-Type": "application/json" } : {}) },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
      expect(response.status, `${method} ${path}`).toBe(404);
      const problem = (await response.json()) as { detail: string; error: { message: string; type: string } };
      // The AI SDK and LangChain (through the openai SDK) report `error.message` as the error's message.
      expect(problem.error.type).toBe("invalid_request_error");
      expect(problem.error.message).toContain("Responses API is not offered");
      expect(problem.error.message).toContain("/api/v1/llm/chat/completions");
      expect(problem.error.message).toContain(".chat(");
      expect(problem.error.message).toContain("useResponsesApi");
      expect(problem.detail).toBe(problem.error.message);
    }
  });

  it("still asks for the caller's credentials first", async () => {
    const response = await fetcher(`${BASE}/api/v1/llm/responses`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(AI_SDK_RESPONSES_REQUEST),
    });
    expect(response.status).toBe(401);
  });
});
