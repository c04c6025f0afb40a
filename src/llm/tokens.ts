import type { StreamEvent } from "./provider.ts";
import type { ChatMessage, TokenUsage, ToolDefinition } from "./types.ts";

/**
 * Token estimates for budgets and model choice before a call: about four
 * characters a token for English and code, which over-counts slightly, the
 * safe side for a reservation. Other scripts take more tokens a character in
 * the tokenizers providers use: Chinese, Japanese and Korean about one a
 * character, other non-ASCII text (accented Latin, Cyrillic, Greek, Arabic,
 * emoji) about one per two. Charges use the provider's own figures; only
 * when those never come (a stream left or cut, a provider that reports none)
 * is an estimate charged, and marked as one.
 */

const CHARS_PER_TOKEN = 4;
const NON_ASCII_CHARS_PER_TOKEN = 2;
const NON_ASCII = /[\u0080-\uffff]/;

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

/** CJK ideographs and radicals, kana, Hangul, and full-width forms: a token a character or more. */
function isWide(code: number): boolean {
  return (
    (code >= 0x2e80 && code <= 0x9fff) ||
    (code >= 0xac00 && code <= 0xd7af) ||
    (code >= 0xf900 && code <= 0xfaff) ||
    (code >= 0xff00 && code <= 0xffef)
  );
}

/** A text's tokens, estimated (a fraction: callers sum, then round up). ASCII, the usual case, is one regex test. */
export function textTokens(text: string): number {
  if (!NON_ASCII.test(text)) return text.length / CHARS_PER_TOKEN;
  let ascii = 0;
  let wide = 0;
  let other = 0;
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index);
    if (code < 0x80) ascii++;
    else if (isWide(code)) wide++;
    // A character beyond the BMP (most emoji) is two UTF-16 units: counted once, by its first.
    else if (code < 0xdc00 || code > 0xdfff) other++;
  }
  return ascii / CHARS_PER_TOKEN + wide + other / NON_ASCII_CHARS_PER_TOKEN;
}

function messageTokens(message: ChatMessage): number {
  let tokens = textTokens(message.content ?? "") + textTokens(message.refusal ?? "");
  for (const call of message.tool_calls ?? []) tokens += textTokens(call.function.name + call.function.arguments);
  return tokens;
}

export function estimatePromptTokens(messages: ChatMessage[], tools?: ToolDefinition[]): number {
  let tokens = 0;
  for (const message of messages) tokens += messageTokens(message);
  if (tools && tools.length > 0) tokens += textTokens(JSON.stringify(tools));
  return Math.ceil(tokens) + messages.length * MESSAGE_OVERHEAD_TOKENS;
}

/**
 * The usage of a whole answer whose provider reported none (some local
 * servers never do, even when asked): estimated as a reservation is, from the
 * prompt and the answer's text. The caller marks the charge as estimated.
 */
export function estimateAnswerUsage(
  call: { messages: ChatMessage[]; tools?: ToolDefinition[] },
  answer: ChatMessage,
  thinkingTokens = 0,
): TokenUsage {
  const prompt = estimatePromptTokens(call.messages, call.tools);
  // The thinking is written as the answer is: estimated without it, a reasoning model's call that thought
  // thousands of tokens was charged the few of its answer.
  const completion = Math.ceil(messageTokens(answer)) + Math.ceil(thinkingTokens);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

/**
 * What a stream delivered, counted as it goes, for a charge when the provider's usage never came: its
 * completion tokens (with the thinking it wrote but did not send), estimated, and the prompt's, where the
 * provider told them early.
 */
export class DeliveredText {
  #tokens = 0;
  /** The provider's own count of the prompt, if it told it (StreamEvent's prompt_tokens). */
  promptTokens: number | undefined;

  add(event: StreamEvent): void {
    if (event.type !== "delta") return;
    if (event.prompt_tokens !== undefined) this.promptTokens = event.prompt_tokens;
    this.#tokens += textTokens(event.content ?? "") + textTokens(event.refusal ?? "");
    for (const call of event.tool_calls ?? []) {
      this.#tokens += textTokens((call.function?.name ?? "") + (call.function?.arguments ?? ""));
    }
  }

  /** What the provider wrote that the caller was not sent (a reasoning model's thinking), already estimated. */
  addUnsent(tokens: number): void {
    this.#tokens += tokens;
  }

  estimatedTokens(): number {
    return Math.ceil(this.#tokens);
  }
}
