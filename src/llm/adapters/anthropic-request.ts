import { toBase64Url } from "../../lib/crypto.ts";
import type { AdapterCall } from "../provider.ts";
import type { ResponseFormat, ToolChoice } from "../types.ts";
import { type JsonAnswerTool, jsonAnswerTool } from "./anthropic-json.ts";
import { sentStops } from "./anthropic-stops.ts";

/**
 * An OpenAI-shaped call as a request of Anthropic's Messages API (the adapter, anthropic.ts, sends it and
 * maps the answer back).
 */

/** Anthropic requires max_tokens; this is used when the request sets none. */
export const DEFAULT_MAX_TOKENS = 4_096;

/** The user's turn sent for a conversation whose every message is blank: Anthropic takes no turn without text. */
export const BLANK_TURN_TEXT = ".";

export type Block =
  | { type: "text"; text: string }
  | { type: "tool_use"; id: string; name: string; input: unknown }
  | { type: "tool_result"; tool_use_id: string; content: string };

/**
 * A request in the Messages API's terms. OpenAI's settings map where
 * Anthropic has them (`stop` → `stop_sequences`, `required` → `any`, a
 * temperature above Anthropic's ceiling of 1 → 1, one of temperature and top_p); it has
 * no seed or penalties. It has no JSON mode either: a `response_format` asking
 * for JSON becomes a forced answer tool (anthropic-json.ts), or, while the
 * caller's own tools may be called, an instruction at the end of the system prompt.
 */
export function toAnthropic(call: AdapterCall) {
  // Blank ones say nothing: a system prompt of whitespace alone is not sent.
  const instructions = call.messages
    .filter((message) => message.role === "system")
    .map((message) => message.content ?? "")
    .filter((text) => text.trim());
  const answerTool = jsonAnswerTool(call);
  const json = answerTool ? null : jsonInstruction(call.response_format);
  const turns: { role: "user" | "assistant"; content: Block[] }[] = [];
  const push = (role: "user" | "assistant", blocks: Block[]) => {
    const last = turns.at(-1);
    // The API wants alternating turns: consecutive same-role messages merge.
    if (last && last.role === role) last.content.push(...blocks);
    else turns.push({ role, content: blocks });
  };
  for (const message of call.messages) {
    if (message.role === "system") continue;
    if (message.role === "tool") {
      push("user", [
        {
          type: "tool_result",
          tool_use_id: anthropicToolId(message.tool_call_id ?? ""),
          content: message.content ?? "",
        },
      ]);
      continue;
    }
    // Anthropic refuses a text block with nothing but whitespace in it; such a message says nothing anyway.
    // It has no refusal field: an OpenAI refusal sent back is the assistant's text, what the model said.
    const text = message.content?.trim() ? message.content : message.refusal;
    const blocks: Block[] = text?.trim() ? [{ type: "text", text }] : [];
    for (const toolCall of message.tool_calls ?? []) {
      blocks.push({
        type: "tool_use",
        id: anthropicToolId(toolCall.id),
        name: toolCall.function.name,
        input: parseArguments(toolCall.function.arguments),
      });
    }
    if (blocks.length > 0) push(message.role === "assistant" ? "assistant" : "user", blocks);
  }
  // OpenAI answers instructions alone ("Write a haiku" as the only, system, message) as a request; Anthropic
  // refuses a call without a turn. The instructions are then the user's turn, which the model answers alike.
  const asked = instructions.join("\n\n");
  const promptAsTurn = turns.length === 0 && asked !== "";
  if (promptAsTurn) turns.push({ role: "user", content: [{ type: "text", text: asked }] });
  // Every message blank (a user's "" alone, which OpenAI answers): Anthropic refuses a call without a turn
  // (`messages: []`), and a turn of whitespace alone, with a 400 that no fallback follows. The least a turn says
  // stands for the blank one, so the model answers it as OpenAI's does.
  if (turns.length === 0) turns.push({ role: "user", content: [{ type: "text", text: BLANK_TURN_TEXT }] });
  const systemParts = promptAsTurn ? [] : instructions;
  const system = (json ? [...systemParts, json] : systemParts).join("\n\n");
  return {
    model: call.model,
    max_tokens: call.max_tokens ?? DEFAULT_MAX_TOKENS,
    ...(system ? { system } : {}),
    messages: turns,
    ...samplingOf(call),
    // Sequences of whitespace alone, which Anthropic refuses, are applied to the answer here (anthropic-stops.ts).
    ...(sentStops(call.stop).length ? { stop_sequences: sentStops(call.stop) } : {}),
    ...toolsOf(call, answerTool),
  };
}

/**
 * OpenAI's temperature and top_p, as Anthropic takes them: one of the two. Its newer models (Sonnet 4.5,
 * Haiku 4.5, Opus 4.1) refuse both with a 400, which OpenAI's clients often send (e.g. top_p 1 beside a
 * temperature); Anthropic's advice for every model is to alter one. The one at its default (1, which
 * changes nothing) is left out; when both change sampling, the temperature is kept.
 */
function samplingOf(call: AdapterCall): { temperature?: number; top_p?: number } {
  // OpenAI's range is 0 to 2, Anthropic's 0 to 1 (it refuses more with a 400): its most random is as far as it goes.
  const temperature = call.temperature === undefined ? undefined : Math.min(call.temperature, 1);
  const topP = call.top_p;
  if (temperature !== undefined && topP !== undefined) {
    return topP === 1 || temperature < 1 ? { temperature } : { top_p: topP };
  }
  return { ...(temperature !== undefined ? { temperature } : {}), ...(topP !== undefined ? { top_p: topP } : {}) };
}

type AnthropicToolChoice = ({ type: "tool"; name: string } | { type: "any" | "auto" | "none" }) & {
  disable_parallel_tool_use?: boolean;
};

interface AnthropicTools {
  tools?: { name: string; description?: string; input_schema: Record<string, unknown> }[];
  tool_choice?: AnthropicToolChoice;
}

function toolsOf(call: AdapterCall, answerTool: JsonAnswerTool | null): AnthropicTools {
  const tools = (call.tools ?? []).map((tool) => ({
    name: tool.function.name,
    ...(tool.function.description ? { description: tool.function.description } : {}),
    // Anthropic refuses a schema without `type: "object"`; OpenAI takes `parameters: {}` for a tool without input.
    input_schema: { ...tool.function.parameters, type: "object" },
  }));
  if (answerTool) {
    const { name, description, input_schema } = answerTool;
    return { tools: [...tools, { name, description, input_schema }], tool_choice: { type: "tool", name } };
  }
  if (!call.tools) return {};
  const choice = call.tool_choice !== undefined ? anthropicToolChoice(call.tool_choice) : undefined;
  // OpenAI's parallel_tool_calls: false is a flag on Anthropic's tool choice (auto when none was asked for); `none` calls nothing anyway.
  if (call.parallel_tool_calls === false && choice?.type !== "none") {
    return { tools, tool_choice: { ...(choice ?? { type: "auto" }), disable_parallel_tool_use: true } };
  }
  return { tools, ...(choice ? { tool_choice: choice } : {}) };
}

function anthropicToolChoice(choice: ToolChoice): AnthropicToolChoice {
  if (typeof choice !== "string") return { type: "tool", name: choice.name };
  return { type: choice === "required" ? "any" : choice };
}

function jsonInstruction(format: ResponseFormat | undefined): string | null {
  if (!format || format.type === "text") return null;
  const answer = "Answer with a single JSON object and nothing else: no prose, no code fences.";
  if (format.type === "json_object" || !format.json_schema.schema) return answer;
  return `${answer} It must match this JSON Schema (${format.json_schema.name}): ${JSON.stringify(format.json_schema.schema)}`;
}

/** Anthropic's rule for a tool_use block's id (and so a tool_result's tool_use_id); OpenAI takes any string. */
const ANTHROPIC_TOOL_ID = /^[a-zA-Z0-9_-]+$/;

/**
 * A tool call's id as Anthropic takes it. Ids another model gave (Kimi's `functions.read_file:0`, sent back in the
 * conversation after a fallback to Claude) or a client made up were refused with a 400 for the whole conversation,
 * and every later turn of it. Such an id is sent as the base64url of its UTF-8 (letters, digits, `-` and `_`
 * only), the same for the call and its result, so each result still names its call; an id Anthropic takes is
 * sent as it is (its own `toolu_…`, OpenAI's `call_…`).
 */
function anthropicToolId(id: string): string {
  return ANTHROPIC_TOOL_ID.test(id) ? id : `id_${toBase64Url(new TextEncoder().encode(id))}`;
}

/**
 * A tool call's arguments as Anthropic's `input`, which must be an object: a model's truncated JSON, sent
 * back in the conversation, or a value that is no object (`[1]`) is sent as `{}` rather than have
 * Anthropic refuse the whole conversation with a 400.
 */
function parseArguments(text: string): Record<string, unknown> {
  try {
    const input: unknown = JSON.parse(text || "{}");
    return typeof input === "object" && input !== null && !Array.isArray(input)
      ? (input as Record<string, unknown>)
      : {};
  } catch {
    return {};
  }
}
