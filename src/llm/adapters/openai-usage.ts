import type { AdapterCall, AdapterResult } from "../provider.ts";
import { estimateAnswerUsage } from "../tokens.ts";
import type { ChatMessage, TokenUsage } from "../types.ts";

/** The usage an OpenAI-compatible server reports, and what is charged when it reports none, or figures it belies. */

/**
 * The provider's usage, or for a whole answer that came without it (or with a prompt of 0 tokens) our
 * estimate, marked. Failing the call instead would retry an answer already paid for, and a local server
 * that never reports usage could not be used at all (its breaker would open after five answers).
 */
export function usageOrEstimate(
  call: AdapterCall,
  reported: ReportedUsage | null | undefined,
  message: ChatMessage,
  thinkingTokens: number,
): Pick<AdapterResult, "usage" | "usageEstimated"> {
  const usage = usageOf(reported);
  // A prompt of 0 tokens was not counted: Ollama reports prompt_tokens 0 when it read the whole prompt from its
  // cache (ollama#5370), and no chat prompt is 0 tokens. Taken as reported, such calls were charged nothing for
  // their prompt, unmarked. Beside it, an answer of 0 tokens (usage of zeros throughout) is not counted either;
  // beside a prompt that was, it is taken as reported.
  if (usage && usage.prompt_tokens !== 0) return { usage };
  const estimate = estimateAnswerUsage(call, message, thinkingTokens);
  if (!usage) return { usage: estimate, usageEstimated: true };
  const prompt = estimate.prompt_tokens;
  const completion = usage.completion_tokens === 0 ? estimate.completion_tokens : usage.completion_tokens;
  return {
    usage: { ...usage, prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
    usageEstimated: true,
  };
}

/** Usage as OpenAI-compatible APIs report it (Azure's and vLLM's too). */
export interface ReportedUsage extends Partial<Omit<TokenUsage, "cached_prompt_tokens" | "reasoning_tokens">> {
  /** OpenAI caches long prompts' prefixes by itself, and bills what it read from there at a lower rate. */
  prompt_tokens_details?: { cached_tokens?: number | null } | null;
  /** A reasoning model's thinking, counted in completion_tokens too. */
  completion_tokens_details?: { reasoning_tokens?: number | null } | null;
}

export function usageOf(usage: ReportedUsage | null | undefined): TokenUsage | undefined {
  if (!usage || typeof usage.prompt_tokens !== "number" || typeof usage.completion_tokens !== "number")
    return undefined;
  const cached = usage.prompt_tokens_details?.cached_tokens;
  const reasoning = usage.completion_tokens_details?.reasoning_tokens;
  return {
    prompt_tokens: usage.prompt_tokens,
    completion_tokens: usage.completion_tokens,
    total_tokens: usage.total_tokens ?? usage.prompt_tokens + usage.completion_tokens,
    ...(typeof cached === "number" && cached > 0 ? { cached_prompt_tokens: cached } : {}),
    ...(typeof reasoning === "number" && reasoning > 0 ? { reasoning_tokens: reasoning } : {}),
  };
}
