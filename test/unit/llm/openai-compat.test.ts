import { describe, expect, it } from "vitest";
import { ChatCompletionRequestSchema, toChatRequest } from "../../../src/llm/openai-compat.ts";

/** The OpenAI request as the router reads it. */

const parse = (body: Record<string, unknown>) =>
  toChatRequest(ChatCompletionRequestSchema.parse({ messages: [{ role: "user", content: "hi" }], ...body }));

describe("toChatRequest", () => {
  it("keeps the settings that are set, in the router's terms, and drops nulls and empty lists", () => {
    expect(
      parse({
        messages: [
          { role: "developer", content: "Be brief." },
          {
            role: "user",
            content: [
              { type: "text", text: "Say " },
              { type: "text", text: "hi" },
            ],
          },
        ],
        max_tokens: 100,
        max_completion_tokens: 50,
        temperature: null,
        top_p: 0.5,
        stop: "END",
        seed: 3,
        frequency_penalty: null,
        tools: [{ type: "function", function: { name: "read_file" } }],
        tool_choice: { type: "function", function: { name: "read_file" } },
        response_format: { type: "json_object" },
        parallel_tool_calls: false,
        reasoning_effort: "low",
      }),
    ).toEqual({
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Say hi" },
      ],
      tools: [{ type: "function", function: { name: "read_file", parameters: { type: "object", properties: {} } } }],
      // max_completion_tokens is OpenAI's newer name and wins.
      max_tokens: 50,
      top_p: 0.5,
      stop: ["END"],
      seed: 3,
      tool_choice: { name: "read_file" },
      response_format: { type: "json_object" },
      parallel_tool_calls: false,
      reasoning_effort: "low",
    });
    expect(parse({ parallel_tool_calls: null, reasoning_effort: null })).toEqual({
      messages: [{ role: "user", content: "hi" }],
    });
    expect(parse({ stop: [] })).not.toHaveProperty("stop");
    expect(parse({ tool_choice: "auto" })).toMatchObject({ tool_choice: "auto" });
  });
});
