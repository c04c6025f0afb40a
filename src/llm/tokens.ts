import type { StreamEvent } from "./provider.ts";
import type { ChatMessage, TokenUsage, ToolDefinition } from "./types.ts";

/**
 * Token estimates for budgets and model choice before a call: about four
 * characters a token for English and code, which over-counts slightly, the
 * safe side for a reservation. Charges use the provider's own figures; only
 * when those never come (a stream left or cut, a provider that reports none)
 * is an estimate charged, and marked as one.
 */

const CHARS_PER_TOKEN = 4;
/** Per-message framing the chat formats add (role markers, separators). */
const MESSAGE_OVERHEAD_TOKENS = 4;
/**
 * The longest answer a call without max_tokens is taken to give, where
 * neither its provider sets a default of its own (Anthropic's adapter sends
 * 4,096) nor the price table knows its model's ceiling (gpt-4o-mini's
 * 16,384): against a budget it reserves its prompt and this much, the most it may
 * spend, so calls at once never spend more than the budget has left
 * (src/llm/router.ts).
 */
export const UNBOUNDED_ANSWER_CEILING_TOKENS = 32_768;
/**
 * Near a budget's limit, a call without max_tokens is cut to fit the room
 * left, and to this at most: every chat model answers this long, while a
 * max_tokens above what a model allows is refused (OpenAI answers 400).
 */
export const MAX_SAFE_ANSWER_CAP_TOKENS = 4_096;

function messageChars(message: ChatMessage): number {
  let chars = (message.content ?? "").length + (message.refusal?.length ?? 0);
  for (const call of message.tool_calls ?? []) chars += call.function.name.length + call.function.arguments.length;
  return chars;
}

export function estimatePromptTokens(messages: ChatMessage[], tools?: ToolDefinition[]): number {
  let chars = 0;
  for (const message of messages) chars += messageChars(message);
  if (tools && tools.length > 0) chars += JSON.stringify(tools).length;
  return Math.ceil(chars / CHARS_PER_TOKEN) + messages.length * MESSAGE_OVERHEAD_TOKENS;
}

/**
 * The usage of a whole answer whose provider reported none (some local
 * servers never do, even when asked): estimated as a reservation is, from the
 * prompt and the answer's text. The caller marks the charge as estimated.
 */
export function estimateAnswerUsage(
  call: { messages: ChatMessage[]; tools?: ToolDefinition[] },
  answer: ChatMessage,
): TokenUsage {
  const prompt = estimatePromptTokens(call.messages, call.tools);
  const completion = Math.ceil(messageChars(answer) / CHARS_PER_TOKEN);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

/** What a stream delivered, counted as it goes: its completion tokens, estimated, when the provider's usage never came. */
export class DeliveredText {
  #chars = 0;

  add(event: StreamEvent): void {
    if (event.type !== "delta") return;
    this.#chars += (event.content?.length ?? 0) + (event.refusal?.length ?? 0);
    for (const call of event.tool_calls ?? []) {
      this.#chars += (call.function?.name?.length ?? 0) + (call.function?.arguments?.length ?? 0);
    }
  }

  estimatedTokens(): number {
    return Math.ceil(this.#chars / CHARS_PER_TOKEN);
  }
}
