import type { StreamEvent } from "./provider.ts";
import type { ChatMessage, ToolDefinition } from "./types.ts";

/**
 * Token estimates for budgets and model choice before a call: about four
 * characters a token for English and code, which over-counts slightly, the
 * safe side for a reservation. Charges always use the provider's own figures.
 */

const CHARS_PER_TOKEN = 4;
/** Per-message framing the chat formats add (role markers, separators). */
const MESSAGE_OVERHEAD_TOKENS = 4;
/** Reserved for the answer when the request sets no max_tokens. */
export const DEFAULT_COMPLETION_ESTIMATE_TOKENS = 1_024;

export function estimatePromptTokens(messages: ChatMessage[], tools?: ToolDefinition[]): number {
  let chars = 0;
  for (const message of messages) {
    chars += (message.content ?? "").length;
    for (const call of message.tool_calls ?? []) chars += call.function.name.length + call.function.arguments.length;
  }
  if (tools && tools.length > 0) chars += JSON.stringify(tools).length;
  return Math.ceil(chars / CHARS_PER_TOKEN) + messages.length * MESSAGE_OVERHEAD_TOKENS;
}

export function estimateCallTokens(messages: ChatMessage[], tools?: ToolDefinition[], maxTokens?: number): number {
  return estimatePromptTokens(messages, tools) + (maxTokens ?? DEFAULT_COMPLETION_ESTIMATE_TOKENS);
}

/** What a stream delivered, counted as it goes: its completion tokens, estimated, when the provider's usage never came. */
export class DeliveredText {
  #chars = 0;

  add(event: StreamEvent): void {
    if (event.type !== "delta") return;
    this.#chars += event.content?.length ?? 0;
    for (const call of event.tool_calls ?? []) {
      this.#chars += (call.function?.name?.length ?? 0) + (call.function?.arguments?.length ?? 0);
    }
  }

  estimatedTokens(): number {
    return Math.ceil(this.#chars / CHARS_PER_TOKEN);
  }
}
