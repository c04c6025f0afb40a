import type { AdapterCall } from "../provider.ts";

/**
 * JSON answers from Anthropic. The Messages API has no JSON mode; its way to
 * an answer that fits a schema is a tool whose `input_schema` is the schema,
 * with `tool_choice` forcing that tool: the model must answer by "calling" it,
 * and the call's input is the answer. The adapter sends that tool for a
 * `response_format` of `json_object` or `json_schema`, and hands the input back
 * as the message's text, so the caller sees what OpenAI's JSON mode gives.
 *
 * Not when the caller's own tools may be called (`tool_choice` other than
 * `none`): the answer may come after them, so nothing can be forced yet, and
 * the adapter asks for JSON in the system prompt instead.
 */

export interface JsonAnswerTool {
  name: string;
  description: string;
  input_schema: Record<string, unknown>;
  /**
   * A tool's input must be an object: a schema for anything else (an array, a
   * string) is wrapped as `{value: …}`, and the answer unwrapped.
   */
  wrapped: boolean;
}

/** Anthropic's rule for tool names. */
const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/;
const DEFAULT_TOOL_NAME = "json_answer";
const DEFAULT_DESCRIPTION = "Give your answer as this tool's input: it is returned to the user as JSON.";

export function jsonAnswerTool(
  call: Pick<AdapterCall, "response_format" | "tools" | "tool_choice">,
): JsonAnswerTool | null {
  const format = call.response_format;
  if (!format || format.type === "text") return null;
  if (call.tools?.length && call.tool_choice !== "none") return null;
  const taken = new Set(call.tools?.map((tool) => tool.function.name));
  const wanted = format.type === "json_schema" ? format.json_schema.name : DEFAULT_TOOL_NAME;
  const name = TOOL_NAME.test(wanted) && !taken.has(wanted) ? wanted : DEFAULT_TOOL_NAME;
  if (taken.has(name)) return null;
  const description = (format.type === "json_schema" && format.json_schema.description) || DEFAULT_DESCRIPTION;
  const schema = format.type === "json_schema" ? format.json_schema.schema : undefined;
  if (!schema) return { name, description, input_schema: { type: "object" }, wrapped: false };
  const objectLike = schema.type === "object" || (schema.type === undefined && "properties" in schema);
  if (objectLike) return { name, description, input_schema: { ...schema, type: "object" }, wrapped: false };
  return {
    name,
    description,
    input_schema: { type: "object", properties: { value: schema }, required: ["value"] },
    wrapped: true,
  };
}

/** The tool's input as the answer's text. */
export function answerText(tool: JsonAnswerTool, input: unknown): string {
  const value = tool.wrapped ? (input as { value?: unknown } | null)?.value : input;
  return JSON.stringify(value ?? (tool.wrapped ? null : {}));
}
