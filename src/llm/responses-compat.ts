import { routerFigures } from "./openai-compat.ts";
import type {
  ResponseCreateRequest,
  ResponseOutputItem,
  ResponsesFunctionTool,
  ResponsesInputItem,
} from "./responses-schemas.ts";
import type { ChatMessage, ChatRequest, ChatResult, ResponseFormat, TokenUsage, ToolDefinition } from "./types.ts";

/**
 * OpenAI's Responses API (src/llm/responses-schemas.ts) to and from the router's types: the request as a
 * ChatRequest, the result as a `response` object. The stream's events are src/llm/responses-stream.ts's; what is
 * stored, src/llm/responses-store.ts's.
 */

function partsText(content: string | { type: string; text?: string }[]): string {
  if (typeof content === "string") return content;
  return content.flatMap((part) => (part.type === "refusal" ? [] : [part.text ?? ""])).join("");
}

function partsRefusal(content: string | { type: string; refusal?: string }[]): string | undefined {
  if (typeof content === "string") return undefined;
  return content.flatMap((part) => (part.type === "refusal" ? [part.refusal ?? ""] : [])).join("") || undefined;
}

function inputMessages(input: readonly ResponsesInputItem[]): ChatMessage[] {
  const messages: ChatMessage[] = [];
  for (const item of input) {
    if (item.type === "function_call") {
      const call = {
        id: item.call_id,
        type: "function" as const,
        function: { name: item.name, arguments: item.arguments },
      };
      const last = messages.at(-1);
      // The calls of one answer follow its message (or each other), as the Responses API lists its output:
      // in chat terms they are that assistant message's tool calls.
      if (last?.role === "assistant") last.tool_calls = [...(last.tool_calls ?? []), call];
      else messages.push({ role: "assistant", content: null, tool_calls: [call] });
    } else if (item.type === "function_call_output") {
      messages.push({ role: "tool", tool_call_id: item.call_id, content: partsText(item.output) });
    } else if (item.type === "reasoning") {
      // An earlier answer's hidden thinking, sent back as it came: no provider here reads another's, so it is
      // dropped (this API returns no reasoning items itself).
    } else {
      const refusal = item.role === "assistant" ? partsRefusal(item.content) : undefined;
      const text = partsText(item.content);
      const last = messages.at(-1);
      if (item.role === "assistant" && last?.role === "assistant" && last.tool_calls?.length) {
        // Text after a call of the same answer (a streamed answer whose text goes on after a call stores it as a
        // message of its own, as OpenAI streams it): still that answer, so that assistant message's. Pushed as a
        // message of its own, it parted the calls from their outputs, which OpenAI refuses (400: tool_calls
        // "must be followed by tool messages").
        if (text !== "") last.content = (last.content ?? "") + text;
        if (refusal) last.refusal = (last.refusal ?? "") + refusal;
        continue;
      }
      messages.push({
        // `developer` is OpenAI's newer name for the system role.
        role: item.role === "developer" ? "system" : item.role,
        content: text === "" && refusal ? null : text,
        ...(refusal ? { refusal } : {}),
      });
    }
  }
  return messages;
}

function chatTools(tools: ResponseCreateRequest["tools"]): ToolDefinition[] | undefined {
  // Refused by the schema unless every tool is a function.
  const functions = (tools ?? []) as ResponsesFunctionTool[];
  if (functions.length === 0) return undefined;
  return functions.map((tool) => ({
    type: "function" as const,
    function: {
      name: tool.name,
      ...(tool.description ? { description: tool.description } : {}),
      parameters: tool.parameters ?? { type: "object", properties: {} },
      ...(tool.strict != null ? { strict: tool.strict } : {}),
    },
  }));
}

function responseFormat(format: NonNullable<ResponseCreateRequest["text"]>["format"]): ResponseFormat | undefined {
  if (!format) return undefined;
  if (format.type !== "json_schema") return { type: format.type };
  return {
    type: "json_schema",
    json_schema: {
      name: format.name,
      ...(format.description ? { description: format.description } : {}),
      schema: format.schema,
      ...(format.strict != null ? { strict: format.strict } : {}),
    },
  };
}

/**
 * The chat request of a Responses request whose conversation is `conversation`: a previous response's items, if
 * any, then the request's own input, references resolved (src/llm/responses-store.ts). Only this request's
 * `instructions` apply, as at OpenAI: a previous response's are not carried over.
 */
export function responsesToChatRequest(
  body: ResponseCreateRequest,
  conversation: readonly ResponsesInputItem[],
): ChatRequest {
  const messages = inputMessages(conversation);
  if (body.instructions) messages.unshift({ role: "system", content: body.instructions });
  const tools = chatTools(body.tools);
  const format = responseFormat(body.text?.format);
  const choice = body.tool_choice;
  return {
    messages,
    ...(body.model ? { model: body.model } : {}),
    ...(tools ? { tools } : {}),
    ...(body.max_output_tokens != null ? { max_tokens: body.max_output_tokens } : {}),
    ...(body.temperature != null ? { temperature: body.temperature } : {}),
    ...(body.top_p != null ? { top_p: body.top_p } : {}),
    ...(format ? { response_format: format } : {}),
    ...(body.parallel_tool_calls != null ? { parallel_tool_calls: body.parallel_tool_calls } : {}),
    ...(body.reasoning?.effort != null ? { reasoning_effort: body.reasoning.effort } : {}),
    ...(choice != null ? { tool_choice: typeof choice === "string" ? choice : { name: choice.name } } : {}),
  };
}

/** The response's id, from the call's own ulid (which also keys its charge); its items' ids likewise. */
export function responseId(callId: string): string {
  return `resp_${callId}`;
}

export function messageItemId(callId: string): string {
  return `msg_${callId}`;
}

export function functionCallItemId(callId: string, index: number): string {
  return `fc_${callId}_${index}`;
}

const INPUT_ITEM_ID_PREFIXES = { message: "msg", function_call: "fc", function_call_output: "fco", reasoning: "rs" };

/**
 * A request's own input as items, each with an id, as OpenAI lists a response's input items: a string is a user
 * message; an item the client gave an id keeps it, others get `<prefix>_<call ulid>_in<n>`.
 */
export function ownInputItems(input: string | readonly ResponsesInputItem[], callId: string): ResponsesInputItem[] {
  const items: readonly ResponsesInputItem[] =
    typeof input === "string"
      ? [{ type: "message", role: "user", content: [{ type: "input_text", text: input }] }]
      : input;
  return items.map((item, index) => {
    const type = item.type ?? "message";
    if (typeof item.id === "string" && item.id !== "") return { ...item, type } as unknown as ResponsesInputItem;
    return {
      ...item,
      type,
      id: `${INPUT_ITEM_ID_PREFIXES[type]}_${callId}_in${index}`,
    } as unknown as ResponsesInputItem;
  });
}

export type ResponseStatus = "in_progress" | "completed" | "incomplete" | "failed";

/** Why an answer is incomplete, in OpenAI's terms: cut at its length, or by a content filter. */
export function incompleteReason(
  finish: ChatResult["finish_reason"],
): "max_output_tokens" | "content_filter" | undefined {
  if (finish === "length") return "max_output_tokens";
  if (finish === "content_filter") return "content_filter";
  return undefined;
}

/** Usage in the Responses API's terms (input and output rather than prompt and completion). */
export function responsesUsage(usage: TokenUsage) {
  return {
    input_tokens: usage.prompt_tokens,
    input_tokens_details: { cached_tokens: usage.cached_prompt_tokens ?? 0 },
    output_tokens: usage.completion_tokens,
    output_tokens_details: { reasoning_tokens: usage.reasoning_tokens ?? 0 },
    total_tokens: usage.total_tokens,
  };
}

/** What a response echoes of its request, as OpenAI's does, whatever its status. */
export interface ResponseShell {
  id: string;
  created_at: number;
  model: string;
  body: ResponseCreateRequest;
}

export function responseObject(
  shell: ResponseShell,
  state: {
    status: ResponseStatus;
    output: ResponseOutputItem[];
    incomplete?: "max_output_tokens" | "content_filter";
    error?: { code: string; message: string };
    result?: ChatResult;
    /** Whether it is stored; by default what the request asked (`store`, true unless false). */
    stored?: boolean;
  },
) {
  const { body } = shell;
  return {
    id: shell.id,
    object: "response" as const,
    created_at: shell.created_at,
    status: state.status,
    incomplete_details: state.incomplete ? { reason: state.incomplete } : null,
    error: state.error ?? null,
    model: state.result?.model ?? shell.model,
    output: state.output,
    instructions: body.instructions ?? null,
    tools: body.tools ?? [],
    tool_choice: body.tool_choice ?? "auto",
    parallel_tool_calls: body.parallel_tool_calls ?? true,
    temperature: body.temperature ?? null,
    top_p: body.top_p ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    previous_response_id: body.previous_response_id ?? null,
    reasoning: { effort: body.reasoning?.effort ?? null, summary: null },
    text: { format: body.text?.format ?? { type: "text" } },
    truncation: "disabled" as const,
    store: state.stored ?? body.store !== false,
    metadata: body.metadata ?? {},
    user: body.user ?? null,
    usage: state.result ? responsesUsage(state.result.usage) : null,
    ...(state.result ? { x_mgx: routerFigures(state.result) } : {}),
  };
}

/**
 * The output items of a whole answer: its message (text or refusal), then its function calls. In an answer cut
 * short, the last item is the one cut (`incomplete`), as in its stream (src/llm/responses-stream.ts).
 */
export function outputItems(callId: string, result: ChatResult) {
  const { content, refusal, tool_calls: toolCalls } = result.message;
  const items: ResponseOutputItem[] = [];
  // A message whenever there is text, a refusal, or nothing else (an empty answer is an empty message).
  if (content || refusal || !toolCalls?.length) {
    items.push({
      type: "message",
      id: messageItemId(callId),
      status: "completed",
      role: "assistant",
      content: [
        ...(content || !refusal
          ? [{ type: "output_text" as const, text: content ?? "", annotations: [], logprobs: [] }]
          : []),
        ...(refusal ? [{ type: "refusal" as const, refusal }] : []),
      ],
    });
  }
  toolCalls?.forEach((call, index) => {
    items.push({
      type: "function_call",
      id: functionCallItemId(callId, index),
      call_id: call.id,
      name: call.function.name,
      arguments: call.function.arguments,
      status: "completed",
    });
  });
  const last = items.at(-1);
  if (last && incompleteReason(result.finish_reason)) last.status = "incomplete";
  return items;
}

export function toResponse(shell: ResponseShell, callId: string, result: ChatResult) {
  const incomplete = incompleteReason(result.finish_reason);
  return responseObject(shell, {
    status: incomplete ? "incomplete" : "completed",
    output: outputItems(callId, result),
    ...(incomplete ? { incomplete } : {}),
    result,
  });
}
