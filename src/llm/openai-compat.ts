import type { z } from "@hono/zod-openapi";
import type { ChatCompletionRequest, ChatCompletionSchema } from "./openai-schemas.ts";
import type { StreamEvent } from "./provider.ts";
import { routedSseBody } from "./sse-body.ts";
import {
  type ChatMessage,
  type ChatRequest,
  type ChatResult,
  type ResponseFormat,
  type TokenUsage,
  unfinishedAttemptView,
} from "./types.ts";

/**
 * The OpenAI chat-completions wire format (src/llm/openai-schemas.ts) to and
 * from the router's types: the request as a ChatRequest, the result as a
 * completion, and a streamed answer as OpenAI's SSE chunks. Our own figures
 * ride along under `x_mgx`.
 */

function textOf(content: ChatCompletionRequest["messages"][number]["content"]): string | null {
  if (content === undefined || content === null) return null;
  if (typeof content === "string") return content;
  const texts = content.flatMap((part) => (part.type === "text" ? [part.text] : []));
  // Refusal parts alone are no text: the message's refusal carries them (see refusalOf).
  return texts.length === 0 && content.length > 0 ? null : texts.join("");
}

/** An assistant's refusal, given in its field or as content parts, as OpenAI takes either. */
function refusalOf(message: ChatCompletionRequest["messages"][number]): string | undefined {
  if (message.role !== "assistant") return undefined;
  const parts = Array.isArray(message.content)
    ? message.content.flatMap((part) => (part.type === "refusal" ? [part.refusal] : []))
    : [];
  return message.refusal || parts.join("") || undefined;
}

export function toChatRequest(body: ChatCompletionRequest): ChatRequest {
  const messages: ChatMessage[] = body.messages.map((message) => {
    const refusal = refusalOf(message);
    return {
      // `developer` is OpenAI's newer name for the system role.
      role: message.role === "developer" ? "system" : message.role,
      content: textOf(message.content),
      // Kept: OpenAI refuses an assistant message whose content is null with neither tool calls nor a refusal,
      // so a conversation that went on after a refusal failed with a 400 once the refusal was dropped.
      ...(refusal ? { refusal } : {}),
      // An empty list is no tool calls (clients send an answer back as they parsed it, and some parse none as []):
      // passed on, OpenAI refused the message with a 400 "empty array".
      ...(message.tool_calls?.length ? { tool_calls: message.tool_calls } : {}),
      ...(message.tool_call_id ? { tool_call_id: message.tool_call_id } : {}),
      ...(message.name ? { name: message.name } : {}),
    };
  });
  const maxTokensValue = body.max_completion_tokens ?? body.max_tokens ?? undefined;
  return {
    messages,
    ...(body.model ? { model: body.model } : {}),
    ...(body.tools?.length
      ? {
          tools: body.tools.map((tool) => ({
            type: "function" as const,
            function: {
              name: tool.function.name,
              ...(tool.function.description ? { description: tool.function.description } : {}),
              parameters: tool.function.parameters ?? { type: "object", properties: {} },
              // OpenAI then holds the arguments to the schema (structured outputs); dropping it drops that promise.
              ...(tool.function.strict != null ? { strict: tool.function.strict } : {}),
            },
          })),
        }
      : {}),
    ...(maxTokensValue !== undefined ? { max_tokens: maxTokensValue } : {}),
    ...(body.temperature != null ? { temperature: body.temperature } : {}),
    ...(body.top_p != null ? { top_p: body.top_p } : {}),
    // An empty list stops nothing: not sent, as some providers refuse it.
    ...(body.stop != null && body.stop.length > 0
      ? { stop: typeof body.stop === "string" ? [body.stop] : body.stop }
      : {}),
    ...(body.seed != null ? { seed: body.seed } : {}),
    ...(body.presence_penalty != null ? { presence_penalty: body.presence_penalty } : {}),
    ...(body.frequency_penalty != null ? { frequency_penalty: body.frequency_penalty } : {}),
    ...(body.response_format != null ? { response_format: responseFormatOf(body.response_format) } : {}),
    ...(body.parallel_tool_calls != null ? { parallel_tool_calls: body.parallel_tool_calls } : {}),
    ...(body.reasoning_effort != null ? { reasoning_effort: body.reasoning_effort } : {}),
    ...(body.tool_choice != null
      ? {
          tool_choice:
            typeof body.tool_choice === "string" ? body.tool_choice : { name: body.tool_choice.function.name },
        }
      : {}),
  };
}

/**
 * The format as providers are sent it: a JSON schema's null fields (`description`, `schema`, `strict`) left out, as
 * absent, which is what the request meant by them.
 */
function responseFormatOf(format: NonNullable<ChatCompletionRequest["response_format"]>): ResponseFormat {
  if (format.type !== "json_schema") return format;
  const jsonSchema = Object.fromEntries(Object.entries(format.json_schema).filter(([, value]) => value !== null));
  return {
    type: "json_schema",
    json_schema: jsonSchema as Extract<ResponseFormat, { type: "json_schema" }>["json_schema"],
  };
}

/** The completion's id, from the call's own ulid (which also keys its charge). */
export function completionId(callId: string): string {
  return `chatcmpl-${callId}`;
}

export function toCompletion(id: string, result: ChatResult) {
  return {
    id,
    object: "chat.completion" as const,
    created: Math.floor(Date.now() / 1000),
    model: result.model,
    choices: [
      {
        index: 0,
        message: {
          role: "assistant" as const,
          content: result.message.content,
          // Always present, null when the model answered, as OpenAI sends it: the SDK's types promise
          // `string | null`, so a caller's `message.refusal !== null` took every answer for a refusal.
          refusal: result.message.refusal || null,
          ...(result.message.tool_calls ? { tool_calls: result.message.tool_calls } : {}),
        },
        finish_reason: result.finish_reason,
        logprobs: null,
      },
    ],
    usage: openAiUsage(result.usage),
    x_mgx: routerFigures(result),
  };
}

/** Our own figures for a call, beside OpenAI's: who answered, what it cost, what else was charged. */
export function routerFigures(result: ChatResult): z.input<typeof ChatCompletionSchema>["x_mgx"] {
  const { timed_out_attempts: timedOut, interrupted_attempts: interrupted } = result;
  return {
    provider: result.provider,
    simulated: result.simulated,
    cost_usd: result.cost_usd,
    attempts: result.attempts,
    usage_estimated: result.usage_estimated,
    ...(timedOut ? { timed_out_attempts: timedOut.map(unfinishedAttemptView) } : {}),
    ...(interrupted ? { interrupted_attempts: interrupted.map(unfinishedAttemptView) } : {}),
  };
}

/**
 * Usage in OpenAI's terms: its SDKs and dashboards read cached input under `prompt_tokens_details`, and a
 * reasoning model's thinking under `completion_tokens_details` (the AI SDK's `reasoningTokens`, LangChain's
 * `output_token_details.reasoning`), told when the provider reported it.
 */
export function openAiUsage({ cached_prompt_tokens, reasoning_tokens, ...usage }: TokenUsage) {
  return {
    ...usage,
    prompt_tokens_details: { cached_tokens: cached_prompt_tokens ?? 0 },
    ...(reasoning_tokens ? { completion_tokens_details: { reasoning_tokens } } : {}),
  };
}

/**
 * The SSE body of a streamed answer: a chunk per delta as it arrives, then
 * the finish reason, the usage chunk (when asked for, as OpenAI does), and
 * `[DONE]`. A failure after the first byte can only be reported in-stream.
 */
export function completionStream(
  id: string,
  model: string,
  deltas: AsyncIterable<StreamEvent>,
  result: Promise<ChatResult>,
  includeUsage: boolean,
  onError: (error: unknown) => void,
  onCancel?: () => void,
): ReadableStream<Uint8Array> {
  const created = Math.floor(Date.now() / 1000);
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    `data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model, choices, ...extra })}\n\n`;
  let first = true;
  return routedSseBody(
    deltas,
    result,
    {
      delta(event) {
        const delta = {
          ...(first ? { role: "assistant" } : {}),
          ...(event.content !== undefined ? { content: event.content } : {}),
          ...(event.refusal !== undefined ? { refusal: event.refusal } : {}),
          ...(event.tool_calls ? { tool_calls: event.tool_calls } : {}),
        };
        first = false;
        return [chunk([{ index: 0, delta, finish_reason: null, logprobs: null }])];
      },
      end(final) {
        const frames: string[] = [];
        if (first) {
          // No delta came (an empty answer): the role still opens the stream, as OpenAI's first chunk does;
          // the openai SDK's stream helper fails a stream without it ("missing role for choice 0").
          first = false;
          frames.push(
            chunk([{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null, logprobs: null }]),
          );
        }
        frames.push(chunk([{ index: 0, delta: {}, finish_reason: final.finish_reason, logprobs: null }]));
        if (includeUsage) frames.push(chunk([], { usage: openAiUsage(final.usage), x_mgx: routerFigures(final) }));
        frames.push("data: [DONE]\n\n");
        return frames;
      },
      failed(error) {
        const message = error instanceof Error ? error.message : "the stream failed";
        return [`data: ${JSON.stringify({ error: { message, type: "provider_error" } })}\n\n`];
      },
    },
    onError,
    onCancel,
  );
}
