import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FakeOpenAi, startFakeOpenAi } from "../fakes/openai.ts";
import { createTestWorkspace, TEST_ADMIN_TOKEN, type TestWorkspace } from "../support/workspaces.ts";
import { startWorker, type WorkerProcess } from "./harness.ts";

/**
 * OpenAI's Responses API end to end: `wrangler dev` with a fake OpenAI server on loopback, driven by the
 * official `openai` npm client's `responses.create()`, `responses.stream()`, `retrieve()`, `inputItems.list()`
 * and `delete()` through /api/v1/llm/responses.
 */

let worker: WorkerProcess;
let openaiFake: FakeOpenAi;
let workspace: TestWorkspace;
let client: OpenAI;

beforeAll(async () => {
  openaiFake = await startFakeOpenAi();
  worker = await startWorker({
    vars: {
      ADMIN_TOKEN: TEST_ADMIN_TOKEN,
      OPENAI_API_KEY: "sk-fake",
      OPENAI_BASE_URL: `${openaiFake.url}/v1`,
      LLM_DEFAULT_CHAIN: "openai:gpt-4o-mini",
      LOG_LEVEL: "warn",
    },
  });
  workspace = await createTestWorkspace(fetch, worker.baseUrl);
  // The SDK's own retries are off so every answer is seen as it came.
  client = new OpenAI({ apiKey: workspace.key, baseURL: `${worker.baseUrl}/api/v1/llm`, maxRetries: 0 });
});
afterAll(async () => {
  await worker?.stop();
  await openaiFake?.close();
});

/** The chat request the fake OpenAI was last sent. */
function lastSent(): Record<string, any> {
  return JSON.parse(openaiFake.requests.at(-1)!.body.toString()) as Record<string, any>;
}

describe("the openai client's Responses API", () => {
  it("creates a response from text: output_text, usage and cost as the upstream's usage implies", async () => {
    openaiFake.faults.plan([{ ok: true, content: "Hello from the fake", usage: { prompt: 1_000, completion: 500 } }]);
    const { data, response } = await client.responses
      .create({ model: "gpt-4o-mini", instructions: "Be brief.", input: "Say hello", store: false })
      .withResponse();
    expect(response.headers.get("x-llm-provider")).toBe("openai");
    expect(data.id).toMatch(/^resp_/);
    expect(data.status).toBe("completed");
    expect(data.output_text).toBe("Hello from the fake");
    expect(data.usage).toMatchObject({ input_tokens: 1_000, output_tokens: 500, total_tokens: 1_500 });
    // gpt-4o-mini: $0.15 in, $0.60 out per million.
    expect((data as unknown as { x_mgx: { cost_usd: number } }).x_mgx.cost_usd).toBe(0.00045);
    expect(lastSent().messages).toEqual([
      { role: "system", content: "Be brief." },
      { role: "user", content: "Say hello" },
    ]);
  });

  it("calls a function tool and takes its output back", async () => {
    openaiFake.faults.plan([
      { ok: true, toolCall: { id: "call_e2e", name: "get_weather", arguments: '{"city":"Paris"}' } },
      { ok: true, content: "Sunny in Paris" },
    ]);
    const tools: OpenAI.Responses.FunctionTool[] = [
      {
        type: "function",
        name: "get_weather",
        description: "The weather in a city",
        parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
        strict: false,
      },
    ];
    const input: OpenAI.Responses.ResponseInput = [{ role: "user", content: "Weather in Paris?" }];
    const first = await client.responses.create({ model: "gpt-4o-mini", input, tools });
    const call = first.output.find((item) => item.type === "function_call");
    expect(call).toMatchObject({ call_id: "call_e2e", name: "get_weather", arguments: '{"city":"Paris"}' });
    expect(lastSent().tools).toEqual([
      {
        type: "function",
        function: {
          name: "get_weather",
          description: "The weather in a city",
          parameters: tools[0].parameters,
          strict: false,
        },
      },
    ]);

    const second = await client.responses.create({
      model: "gpt-4o-mini",
      input: [
        ...input,
        ...(first.output as OpenAI.Responses.ResponseInputItem[]),
        {
          type: "function_call_output",
          call_id: "call_e2e",
          output: '{"sky":"sunny"}',
        },
      ],
      tools,
    });
    expect(second.output_text).toBe("Sunny in Paris");
    expect(lastSent().messages.slice(1)).toEqual([
      {
        role: "assistant",
        content: null,
        tool_calls: [
          { id: "call_e2e", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } },
        ],
      },
      { role: "tool", tool_call_id: "call_e2e", content: '{"sky":"sunny"}' },
    ]);
  });

  it("streams with responses.stream(): the deltas as they come, then finalResponse()", async () => {
    openaiFake.faults.plan([{ ok: true, chunks: 12, usage: { prompt: 40, completion: 12 } }]);
    const stream = client.responses.stream({ model: "gpt-4o-mini", input: "Stream it" });
    const deltas: string[] = [];
    const types: string[] = [];
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === "response.output_text.delta") deltas.push(event.delta);
    }
    const final = await stream.finalResponse();
    expect(deltas).toHaveLength(12);
    expect(deltas.join("")).toBe(Array(12).fill("chunk").join(" "));
    expect(final.status).toBe("completed");
    expect(final.output_text).toBe(deltas.join(""));
    expect(final.usage).toMatchObject({ input_tokens: 40, output_tokens: 12, total_tokens: 52 });
    expect(types[0]).toBe("response.created");
    expect(types.at(-1)).toBe("response.completed");
    expect(lastSent()).toMatchObject({ stream: true, stream_options: { include_usage: true } });
  });

  it("continues a stored response with previous_response_id, and reads, lists and deletes it", async () => {
    openaiFake.faults.plan([
      { ok: true, content: "Paris" },
      { ok: true, content: "About two million" },
    ]);
    const first = await client.responses.create({
      model: "gpt-4o-mini",
      instructions: "Be brief.",
      input: "Capital of France?",
    });
    expect(first).toMatchObject({ store: true });
    const second = await client.responses.create({
      model: "gpt-4o-mini",
      previous_response_id: first.id,
      input: "How many live there?",
    });
    expect(second).toMatchObject({ previous_response_id: first.id, output_text: "About two million" });
    // The whole conversation went upstream; the first request's instructions were not carried over.
    expect(lastSent().messages).toEqual([
      { role: "user", content: "Capital of France?" },
      { role: "assistant", content: "Paris" },
      { role: "user", content: "How many live there?" },
    ]);

    const retrieved = await client.responses.retrieve(first.id);
    expect(retrieved).toMatchObject({ id: first.id, status: "completed", output_text: "Paris", store: true });
    const items = await client.responses.inputItems.list(second.id);
    expect(items.data).toEqual([
      expect.objectContaining({ role: "user", content: [{ type: "input_text", text: "How many live there?" }] }),
    ]);
    await client.responses.delete(first.id);
    await expect(client.responses.retrieve(first.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    const error = await client.responses
      .create({ model: "gpt-4o-mini", input: "hi", previous_response_id: first.id })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect(error).toMatchObject({ status: 400, code: "previous_response_not_found", param: "previous_response_id" });
  });

  it("tells a refused parameter as the SDK's error, naming it", async () => {
    const error = await client.responses
      .create({ model: "gpt-4o-mini", input: "hi", conversation: "conv_earlier" })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.UnprocessableEntityError);
    expect(error).toMatchObject({ status: 422, param: "conversation" });
  });
});
