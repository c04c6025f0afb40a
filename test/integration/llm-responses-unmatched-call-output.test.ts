import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import OpenAI from "openai";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app.ts";
import {
  BASE,
  fakeUpstreams,
  OPENAI_URL,
  openAiCompletion,
  openAiToolCallCompletion,
  sdkAgainstApp,
  workspaceWith,
} from "../support/llm.ts";
import type { TestWorkspace } from "../support/workspaces.ts";

/**
 * A function_call_output of POST /api/v1/llm/responses answers a function_call made before it in the conversation
 * (the request's input, or the stored conversation of `previous_response_id`): one whose call_id matches none is
 * refused up front (422 naming `input.N.call_id`), before any provider is called or anything charged, rather than
 * sent on for every provider of the chain to refuse.
 */

afterEach(() => vi.restoreAllMocks());

const chain = {
  strategy: "fallback" as const,
  chain: [
    { provider: "openai", model: "gpt-4o-mini" },
    { provider: "openai", model: "gpt-4o" },
  ],
};
const tools = [{ type: "function", name: "lookup", parameters: { type: "object", properties: {} } }];

async function postResponses(workspace: TestWorkspace, body: unknown): Promise<Response> {
  const providers = { OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: OPENAI_URL };
  const request = new Request(`${BASE}/api/v1/llm/responses`, {
    method: "POST",
    headers: { ...workspace.headers, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return createApp().fetch(request, { ...env, ...providers }, createExecutionContext());
}

/** A fake OpenAI answering from `answers` in turn, else as OpenAI answers an output with no call: a 400. */
function fakeOpenAi(...answers: (() => Response)[]) {
  const fake = fakeUpstreams({
    "openai.test": (_request, call) =>
      answers[call - 1]?.() ??
      Response.json(
        {
          error: {
            message: "No tool call found for function call output with call_id call_nope.",
            type: "invalid_request_error",
            param: "input",
            code: null,
          },
        },
        { status: 400 },
      ),
  });
  vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
  return {
    count: () => fake.count("openai.test"),
    messages: async (index: number) =>
      ((await fake.calls["openai.test"][index].clone().json()) as { messages: unknown[] }).messages,
  };
}

async function usageRows(workspace: TestWorkspace): Promise<number> {
  // Usage rows land just after an answer: give a charge time to arrive before saying there is none.
  await new Promise((wake) => setTimeout(wake, 200));
  const row = await env.DB.prepare("SELECT COUNT(*) AS n FROM usage_records WHERE workspace_id = ?")
    .bind(workspace.id)
    .first<{ n: number }>();
  return row?.n ?? 0;
}

async function expectRefused(response: Response, path: string, callId: string) {
  expect(response.status).toBe(422);
  expect(response.headers.get("Content-Type")).toBe("application/problem+json");
  const problem = (await response.json()) as Record<string, any>;
  expect(problem).toMatchObject({ status: 422, code: "VALIDATION_FAILED" });
  expect(problem.errors).toEqual([{ path, message: expect.stringContaining(`call_id '${callId}'`) }]);
  expect(problem.error).toMatchObject({ type: "invalid_request_error", param: path });
}

describe("POST /api/v1/llm/responses, a function_call_output whose call is not in the conversation", () => {
  it("is refused with 422 naming input.N.call_id, before any provider is called, and nothing is charged", async () => {
    const workspace = await workspaceWith(chain);
    const upstream = fakeOpenAi();
    for (const stream of [false, true]) {
      const response = await postResponses(workspace, {
        input: [
          { role: "user", content: "Look it up" },
          { type: "function_call", call_id: "call_a", name: "lookup", arguments: "{}" },
          { type: "function_call_output", call_id: "call_a", output: "x is 1" },
          { type: "function_call_output", call_id: "call_nope", output: "y is 2" },
        ],
        tools,
        stream,
      });
      await expectRefused(response, "input.3.call_id", "call_nope");
    }
    // An output before its call answers nothing yet: providers refuse it as well.
    const early = await postResponses(workspace, {
      input: [
        { role: "user", content: "Look it up" },
        { type: "function_call_output", call_id: "call_b", output: "x is 1" },
        { type: "function_call", call_id: "call_b", name: "lookup", arguments: "{}" },
      ],
      tools,
    });
    await expectRefused(early, "input.1.call_id", "call_b");
    expect(upstream.count()).toBe(0);
    expect(await usageRows(workspace)).toBe(0);
    // Said as the openai SDK reports an invalid request.
    const error = await sdkAgainstApp(workspace.key)
      .responses.create({
        input: [{ type: "function_call_output", call_id: "call_nope", output: "y" }],
      })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.UnprocessableEntityError);
    expect(error).toMatchObject({ param: "input.0.call_id" });
    expect(upstream.count()).toBe(0);
  });

  it("is refused when previous_response_id's conversation made no such call, with nothing stored", async () => {
    const workspace = await workspaceWith(chain);
    const upstream = fakeOpenAi(() => openAiToolCallCompletion([["call_w", "lookup", '{"q":"w"}']]));
    const first = (await (await postResponses(workspace, { input: "Weather?", tools })).json()) as Record<string, any>;
    expect(first.output.map((item: { type: string }) => item.type)).toEqual(["function_call"]);
    const response = await postResponses(workspace, {
      previous_response_id: first.id,
      input: [
        { type: "function_call_output", call_id: "call_w", output: "sunny" },
        { type: "function_call_output", call_id: "call_x", output: "rainy" },
      ],
      tools,
    });
    await expectRefused(response, "input.1.call_id", "call_x");
    expect(upstream.count()).toBe(1);
    const stored = await env.DB.prepare("SELECT COUNT(*) AS n FROM llm_responses WHERE workspace_id = ?")
      .bind(workspace.id)
      .first<{ n: number }>();
    expect(stored?.n).toBe(1);
  });
});

describe("POST /api/v1/llm/responses, function_call_outputs that answer a call", () => {
  it("takes outputs for calls of the same input, several in one request", async () => {
    const workspace = await workspaceWith(chain);
    const upstream = fakeOpenAi(() => openAiCompletion("Both sunny."));
    const response = await postResponses(workspace, {
      input: [
        { role: "user", content: "Weather in Oslo and Rome?" },
        { type: "function_call", call_id: "call_o", name: "lookup", arguments: '{"city":"Oslo"}' },
        { type: "function_call", call_id: "call_r", name: "lookup", arguments: '{"city":"Rome"}' },
        { type: "function_call_output", call_id: "call_o", output: "sunny" },
        { type: "function_call_output", call_id: "call_r", output: "sunny" },
      ],
      tools,
    });
    expect(response.status).toBe(200);
    expect(upstream.count()).toBe(1);
    expect((await upstream.messages(0)).slice(2)).toEqual([
      { role: "tool", tool_call_id: "call_o", content: "sunny" },
      { role: "tool", tool_call_id: "call_r", content: "sunny" },
    ]);
  });

  it("takes outputs answering the calls of the previous stored response, and of one before it", async () => {
    const workspace = await workspaceWith(chain);
    const upstream = fakeOpenAi(
      () =>
        openAiToolCallCompletion([
          ["call_1", "lookup", '{"q":"a"}'],
          ["call_2", "lookup", '{"q":"b"}'],
        ]),
      () => openAiCompletion("One of them is a."),
      () => openAiToolCallCompletion([["call_3", "lookup", '{"q":"c"}']]),
      () => openAiCompletion("Done."),
    );
    const sdk = sdkAgainstApp(workspace.key);
    const first = await sdk.responses.create({ input: "Look up a and b", tools: tools as never });
    const second = await sdk.responses.create({
      previous_response_id: first.id,
      input: [
        { type: "function_call_output", call_id: "call_1", output: "a is 1" },
        { type: "function_call_output", call_id: "call_2", output: "b is 2" },
      ],
      tools: tools as never,
    });
    expect(second.output_text).toBe("One of them is a.");
    const third = await sdk.responses.create({
      previous_response_id: second.id,
      input: "Now c",
      tools: tools as never,
    });
    // An output for a call two responses back (call_1 was answered already, but is still a call of the conversation).
    const fourth = await sdk.responses.create({
      previous_response_id: third.id,
      input: [{ type: "function_call_output", call_id: "call_3", output: "c is 3" }],
      tools: tools as never,
    });
    expect(fourth.output_text).toBe("Done.");
    expect(upstream.count()).toBe(4);
  });
});
