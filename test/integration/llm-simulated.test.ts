import { env } from "cloudflare:workers";
import { zodFunction } from "openai/helpers/zod";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { createDb } from "../../src/db/client.ts";
import { checkEnv } from "../../src/env.ts";
import { Logger } from "../../src/lib/logger.ts";
import { createLlmRouter } from "../../src/llm/index.ts";
import { findCharge } from "../../src/llm/usage.ts";
import { BASE, eventsOf, fetcher, sdkAgainstApp, usageWhenWritten, workspaceWith } from "../support/llm.ts";

/** The default path: no provider secrets, the `simulated` provider, a usage row per charge key. */

const config = (() => {
  const checked = checkEnv(env);
  if (!checked.ok) throw new Error(JSON.stringify(checked.problems));
  return checked.config;
})();
const logger = new Logger({ level: "error", sampleRate: 1 });

describe("createLlmRouter with the default chain", () => {
  it("answers from the simulated provider, labelled, with usage and a zero cost", async () => {
    const router = createLlmRouter(config, { logger });
    const workspaceId = `ws_sim_${crypto.randomUUID().slice(0, 8)}`;
    const result = await router.chat(
      { messages: [{ role: "user", content: "Write a test for the parser." }] },
      { workspaceId, chargeKey: "run_1:0" },
    );
    expect(result).toMatchObject({ provider: "simulated", model: "sim-1", simulated: true, attempts: 1, cost_usd: 0 });
    expect(result.finish_reason).toBe("stop");
    expect(result.message.content).toMatch(/^\[simulated\]/);
    expect(result.usage.total_tokens).toBe(result.usage.prompt_tokens + result.usage.completion_tokens);
    const row = await findCharge(createDb(env.DB), workspaceId, "run_1:0");
    expect(row).toMatchObject({ provider: "simulated", simulated: true, totalTokens: result.usage.total_tokens });
  });

  it("is deterministic and answers tool calls while tools are offered and no tool result came back", async () => {
    const router = createLlmRouter(config, { logger });
    const tools = [{ type: "function" as const, function: { name: "write_file", parameters: { type: "object" } } }];
    const messages = [{ role: "user" as const, content: "Create README.md" }];
    const context = (key: string) => ({ workspaceId: "ws_sim_tools", chargeKey: key });
    const first = await router.chat({ messages, tools }, context("a"));
    const again = await router.chat({ messages, tools }, context("b"));
    expect(first.finish_reason).toBe("tool_calls");
    expect(first.message.tool_calls?.[0].function.name).toBe("write_file");
    expect(again.message).toEqual(first.message);
    const answered = await router.chat(
      {
        messages: [
          ...messages,
          first.message,
          { role: "tool", content: "ok", tool_call_id: first.message.tool_calls![0].id },
        ],
        tools,
      },
      context("c"),
    );
    expect(answered.finish_reason).toBe("stop");
  });

  it("answers JSON when the request asks for it, also streamed, so code that parses it works offline", async () => {
    const router = createLlmRouter(config, { logger });
    const messages = [{ role: "user" as const, content: "Rate this change." }];
    const context = (key: string) => ({ workspaceId: "ws_sim_json", chargeKey: key });
    const object = await router.chat({ messages, response_format: { type: "json_object" } }, context("a"));
    expect(JSON.parse(object.message.content!).answer).toMatch(/^\[simulated\]/);
    const schema = {
      type: "object",
      properties: {
        summary: { type: "string" },
        score: { type: "integer", minimum: 1 },
        verdict: { enum: ["approve", "reject"] },
        tags: { type: "array", items: { type: "string" } },
        risky: { type: ["boolean", "null"] },
        owner: { type: "object", properties: { team: { type: "string" } } },
      },
    };
    const response_format = { type: "json_schema" as const, json_schema: { name: "review", schema } };
    const shaped = JSON.parse((await router.chat({ messages, response_format }, context("b"))).message.content!);
    expect(shaped).toEqual({
      summary: expect.stringMatching(/^\[simulated\]/),
      score: 1,
      verdict: "approve",
      tags: [],
      risky: false,
      owner: { team: expect.stringMatching(/^\[simulated\]/) },
    });
    const streamed = await router.chatStream({ messages, response_format }, context("c"));
    let text = "";
    for await (const delta of streamed.deltas) if (delta.type === "delta") text += delta.content ?? "";
    expect(JSON.parse(text)).toEqual(shaped);
  });

  it("calls a tool with arguments its parameters schema takes, so the SDK's runTools runs the tool offline", async () => {
    const workspace = await workspaceWith({ strategy: "fallback", chain: [{ provider: "simulated", model: "sim-1" }] });
    const seen: unknown[] = [];
    const readFile = zodFunction({
      name: "read_file",
      parameters: z.object({
        path: z.string(),
        encoding: z.enum(["utf8", "base64"]),
        lines: z.object({ from: z.number().int().min(1), to: z.number().int().min(1) }).nullable(),
        verbose: z.boolean(),
      }),
      function: (args: unknown) => {
        seen.push(args);
        return "export {}";
      },
    });
    const runner = sdkAgainstApp(workspace.key).chat.completions.runTools({
      model: "auto",
      messages: [{ role: "user", content: "Read a.ts" }],
      tools: [readFile],
    });
    expect(await runner.finalContent()).toMatch(/^\[simulated\]/);
    // A strict zodFunction parses the arguments before calling: `{}` failed that, and the tool never ran.
    expect(seen).toEqual([
      { path: expect.stringMatching(/^\[simulated\]/), encoding: "utf8", lines: { from: 1, to: 1 }, verbose: false },
    ]);
  });

  it("bills tool calls no more than max_tokens, as a provider does, so a call spends no more than it reserved", async () => {
    const router = createLlmRouter(config, { logger });
    const tools = [{ type: "function" as const, function: { name: "read_file", parameters: { type: "object" } } }];
    const result = await router.chat(
      { messages: [{ role: "user", content: "Open the README." }], tools, max_tokens: 3 },
      { workspaceId: "ws_sim_tool_cap", chargeKey: "tool-cap" },
    );
    expect(result.message.tool_calls).toHaveLength(1);
    expect(result.usage.completion_tokens).toBe(3);
  });

  it("fails with an error status only: a failure_status that is none is the default 503, and its failures are told", async () => {
    for (const status of ["700", "0", "200"]) {
      const workspace = await workspaceWith({
        strategy: "fallback",
        chain: [{ provider: "simulated", model: `sim-1?failure_rate=1&failure_status=${status}` }],
      });
      const response = await fetcher(`${BASE}/api/v1/llm/chat/completions`, {
        method: "POST",
        headers: { ...workspace.headers, "Content-Type": "application/json" },
        body: JSON.stringify({ messages: [{ role: "user", content: "x" }] }),
      });
      expect(response.status).toBe(503);
      expect(await response.json()).toMatchObject({
        failures: [{ provider: "simulated", model: "sim-1", status: 503, code: "http_503" }],
      });
      // Each failed attempt is an llm.provider.error event; a status of 700 failed the event's schema, and was lost.
      const errors = await eventsOf(workspace, "llm.provider.error", 3);
      expect(errors.map((event) => event.data.http_status)).toEqual([503, 503, 503]);
    }
  });

  it("breaks a stream after cut_after_chunks deltas, as a dropped connection does, charged what it delivered", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "simulated", model: "sim-1?stream_chunks=8&cut_after_chunks=2" }],
    });
    const response = await fetcher(`${BASE}/api/v1/llm/chat/completions`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ stream: true, messages: [{ role: "user", content: "Explain the change." }] }),
    });
    expect(response.status).toBe(200);
    const chunks = (await response.text())
      .split("\n\n")
      .filter((event) => event.startsWith("data: "))
      .map((event) => event.slice("data: ".length));
    expect(chunks).not.toContain("[DONE]");
    const parsed = chunks.map((data) => JSON.parse(data) as Record<string, any>);
    expect(parsed.filter((chunk) => chunk.choices?.[0]?.delta?.content)).toHaveLength(2);
    expect(parsed.at(-1)).toMatchObject({ error: { message: expect.any(String) } });
    expect(parsed.some((chunk) => chunk.choices?.[0]?.finish_reason)).toBe(false);

    // Charged what it delivered, an estimate, as a provider's cut stream is.
    const usage = await usageWhenWritten(workspace);
    expect(usage.data).toEqual([expect.objectContaining({ provider: "simulated", simulated: true, calls: 1 })]);
    expect(usage.data[0].completion_tokens).toBeGreaterThan(0);
    expect(usage.data[0].completion_tokens).toBeLessThan(24);
  });

  it("breaks no whole answer with cut_after_chunks: the fault is its streams'", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "simulated", model: "sim-1?stream_chunks=8&cut_after_chunks=2" }],
    });
    // Without max_tokens, sim-1 may write 1,000,000 tokens: a whole answer a real provider would be asked as a
    // stream (see Router.chat). The simulated provider writes at once; asked so, every whole answer broke.
    const response = await fetcher(`${BASE}/api/v1/llm/chat/completions`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: "Explain the change." }] }),
    });
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({
      choices: [{ message: { content: expect.stringMatching(/^\[simulated\]/) }, finish_reason: "stop" }],
      x_mgx: { attempts: 1 },
    });
  });

  it("ends its answer at a stop sequence, as a real provider does, whole and streamed", async () => {
    const router = createLlmRouter(config, { logger });
    const messages = [{ role: "user" as const, content: "Explain the change." }];
    const context = (key: string) => ({ workspaceId: "ws_sim_stop", chargeKey: key });
    const full = (await router.chat({ messages }, context("a"))).message.content!;
    const stopWord = full.split(" ")[3];
    const expected = full.slice(0, full.indexOf(` ${stopWord}`));
    const stopped = await router.chat({ messages, stop: [` ${stopWord}`] }, context("b"));
    expect(stopped.message.content).toBe(expected);
    expect(stopped.finish_reason).toBe("stop");
    const streamed = await router.chatStream({ messages, stop: [` ${stopWord}`] }, context("c"));
    let text = "";
    for await (const delta of streamed.deltas) if (delta.type === "delta") text += delta.content ?? "";
    expect(text).toBe(expected);
    expect((await streamed.result).finish_reason).toBe("stop");
  });

  it("answers JSON and tool calls for schemas with boolean subschemas, or nodes that are no schema, not a 503", async () => {
    // `true` (any value) is a JSON Schema as valid as `{}`; `"string"` is none, which a real provider refuses
    // with a 400 and this one reads as any value. Reading either as an object threw, a 503 after three tries.
    const workspace = await workspaceWith({ strategy: "fallback", chain: [{ provider: "simulated", model: "sim-1" }] });
    const schema = { type: "object", properties: { note: true, tags: { anyOf: [false, "x"] }, size: "integer" } };
    const post = (body: Record<string, unknown>) =>
      fetcher(`${BASE}/api/v1/llm/chat/completions`, {
        method: "POST",
        headers: { ...workspace.headers, "Content-Type": "application/json" },
        body: JSON.stringify({ messages: [{ role: "user", content: "x" }], ...body }),
      });
    const json = await post({ response_format: { type: "json_schema", json_schema: { name: "note", schema } } });
    expect(json.status).toBe(200);
    const answer = (await json.json()) as { choices: { message: { content: string } }[] };
    expect(Object.keys(JSON.parse(answer.choices[0].message.content))).toEqual(["note", "tags", "size"]);
    const tool = await post({ tools: [{ type: "function", function: { name: "save", parameters: schema } }] });
    expect(tool.status).toBe(200);
    const called = (await tool.json()) as {
      choices: { message: { tool_calls: { function: { arguments: string } }[] } }[];
    };
    expect(Object.keys(JSON.parse(called.choices[0].message.tool_calls[0].function.arguments))).toEqual([
      "note",
      "tags",
      "size",
    ]);
  });
});
