import type { PublishInput } from "../events/publish.ts";
/**
 * The LLM router's contract, shared by the agent runtime (tasks), the
 * OpenAI-compatible endpoint and the provider adapters. Messages and tools use
 * the OpenAI chat-completions shape, which every adapter maps to and from.
 */

export type ChatRole = "system" | "user" | "assistant" | "tool";

export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string /** JSON text, as providers send it. */; arguments: string };
}

export interface ChatMessage {
  role: ChatRole;
  content: string | null;
  /** OpenAI's: why the model declined to answer (content is then null), e.g. under structured outputs. */
  refusal?: string;
  tool_calls?: ToolCall[];
  /** For role "tool": the call this answers. */
  tool_call_id?: string;
  name?: string;
}

export interface ToolDefinition {
  type: "function";
  /** `strict`: OpenAI holds the arguments to `parameters` (structured outputs); Anthropic is not sent it. */
  function: { name: string; description?: string; parameters: Record<string, unknown>; strict?: boolean };
}

export interface TokenUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /**
   * Of `prompt_tokens`, those the provider read from its prompt cache
   * (OpenAI's `prompt_tokens_details.cached_tokens`), billed at its cached
   * rate. Absent when none were.
   */
  cached_prompt_tokens?: number;
  /**
   * Of `completion_tokens`, the hidden reasoning a reasoning model wrote (OpenAI's
   * `completion_tokens_details.reasoning_tokens`), told back to the caller as OpenAI tells it. Absent when the
   * provider reported none.
   */
  reasoning_tokens?: number;
}

/** OpenAI's values; `{ name }` makes the model call that tool. */
export type ToolChoice = "auto" | "none" | "required" | { name: string };

export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object" }
  | {
      type: "json_schema";
      json_schema: { name: string; description?: string; schema?: Record<string, unknown>; strict?: boolean | null };
    };

/**
 * How to generate, beyond the messages: each adapter passes on what its
 * provider takes (src/llm/adapters/), in that provider's own terms.
 */
export interface GenerationSettings {
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  /** Up to 4 sequences that end the answer. */
  stop?: string[];
  seed?: number;
  presence_penalty?: number;
  frequency_penalty?: number;
  /** Only with tools. */
  tool_choice?: ToolChoice;
  /** Only with tools; false: at most one tool call per answer. */
  parallel_tool_calls?: boolean;
  response_format?: ResponseFormat;
  /** For reasoning models (OpenAI's o-series and gpt-5); others are not sent it. */
  reasoning_effort?: ReasoningEffort;
}

/** As the openai SDK's ReasoningEffort names them (7.57); which a model takes is its provider's to say. */
export const REASONING_EFFORTS = ["none", "minimal", "low", "medium", "high", "xhigh", "max"] as const;
export type ReasoningEffort = (typeof REASONING_EFFORTS)[number];

export interface ChatRequest extends GenerationSettings {
  messages: ChatMessage[];
  tools?: ToolDefinition[];
  /** A model name or "provider:model"; absent → the workspace's routing chain decides. */
  model?: string;
}

export interface ChatResult {
  /** The assistant's message, possibly with tool calls. */
  message: ChatMessage;
  finish_reason: "stop" | "length" | "tool_calls" | "content_filter";
  usage: TokenUsage;
  /** The provider reported no usage: `usage` and `cost_usd` are our estimate (and so marked in GET /api/v1/usage). */
  usage_estimated: boolean;
  cost_usd: number;
  provider: string;
  model: string;
  /** True for the offline `simulated` provider: labelled in every event, usage row and metric. */
  simulated: boolean;
  /** Attempts made across providers (1 when the first call succeeded). */
  attempts: number;
  /**
   * Earlier attempts that timed out while the provider had the request, each
   * charged the prompt it read (estimated, with a usage row of its own):
   * `usage` and `cost_usd` above are the answer's alone.
   */
  timed_out_attempts?: UnfinishedCharge[];
  /**
   * Earlier attempts whose answer broke after it began (the connection dropped, the provider sent an error in
   * its stream), each charged as a timed-out one is: the prompt and what the provider had written, estimated.
   */
  interrupted_attempts?: UnfinishedCharge[];
}

/** What one charge was: a usage row's figures. */
export type ChargedCall = Pick<ChatResult, "usage" | "cost_usd" | "provider" | "model" | "simulated">;

/**
 * Why an attempt ended unfinished: its error's code (`timeout`, `connection`, a provider's error type from
 * its stream such as `overloaded_error`) and the message the call's `failures` would give it.
 */
export interface AttemptError {
  code: string;
  message: string;
}

/** An unfinished attempt's charge, with why it ended so. */
export type UnfinishedCharge = ChargedCall & { error: AttemptError };

/**
 * How an attempt ended unfinished while its provider had the request, and was charged all the same:
 * `timed_out`, its timer ran out; `interrupted`, its answer broke after it began some other way.
 */
export type UnfinishedKind = "timed_out" | "interrupted";

/** A failed call's charge: an unfinished attempt's (which kind, and why), or the call's own (cancelled in flight). */
export type FailedCallCharge = ChargedCall | UnfinishedFailedCharge;

/** A failed call's charge for one of its unfinished attempts. */
export type UnfinishedFailedCharge = UnfinishedCharge & { unfinished: UnfinishedKind };

/**
 * An unfinished attempt as a caller is told it: x_mgx.timed_out_attempts or x_mgx.interrupted_attempts, and the same
 * members of a failed call's problem.
 */
export interface UnfinishedAttemptView {
  provider: string;
  model: string;
  prompt_tokens: number;
  /** What the provider had written when the attempt was cut or broke (a stream's deltas and thinking), else 0. */
  completion_tokens: number;
  cost_usd: number;
  /** Why the attempt ended unfinished. */
  error: AttemptError;
}

export function unfinishedAttemptView({
  provider,
  model,
  usage,
  cost_usd,
  error,
}: UnfinishedCharge): UnfinishedAttemptView {
  return {
    provider,
    model,
    prompt_tokens: usage.prompt_tokens,
    completion_tokens: usage.completion_tokens,
    cost_usd,
    error,
  };
}

/** Who a call is for, so it is metered, budgeted and attributed. */
export interface CallContext {
  workspaceId: string;
  taskId?: string;
  runId?: string;
  agentId?: string;
  requestId?: string;
  correlationId?: string;
  /** Unique per billable call (e.g. `${runId}:${step}`), so a retried consumer never charges twice. */
  chargeKey: string;
  /**
   * The key was minted for this call alone and is settled once (the OpenAI-compatible endpoint's):
   * nothing needs keeping to catch a repeated settlement.
   */
  chargeOnce?: boolean;
  signal?: AbortSignal;
  /**
   * Every whole answer asked of the provider as a stream (see Router.chat), however short its max_tokens: the
   * attempt's timeout then stops a provider that stalls, not one still writing. For a caller that may wait long
   * for whole answers (the agent runtime: a long file written in one tool call takes a model minutes).
   */
  wholeFromStream?: boolean;
  /** Absolute deadline (epoch ms) for the whole call, retries included. */
  deadlineMs?: number;
  /**
   * Where the caller publishes its own events (a task run's chain). The call's `llm.provider.error` and
   * `llm.provider.fallback` go there, to land in order with them; published apart, a run's provider error
   * could land before its `task.started` or the tool results before it.
   */
  emitEvent?: (event: PublishInput<"llm.provider.error" | "llm.provider.fallback">) => void;
}

/** Errors the router throws; `retryable` tells a task consumer whether to try the task again later. */
export type LlmErrorKind =
  | "budget_exhausted"
  | "all_providers_failed"
  | "invalid_request"
  /** A provider's content filter refused the prompt; no other provider is asked (errors.ts, classifyFailure). */
  | "content_filter"
  | "cancelled"
  | "timeout"
  | "authentication"
  /** The workspace's budget counter (its WorkspaceLimiter) did not answer: no provider was asked. */
  | "budget_unavailable"
  /** No provider the routing chain names is configured on this deployment: its operator's to mend. */
  | "no_configured_provider";

/** One target's last failed attempt, as the caller is told it: which providers were tried, and why each failed. */
export interface TargetFailure {
  provider: string;
  model: string;
  attempts: number;
  /** The provider's HTTP status; null for a timeout or a failed connection. */
  status: number | null;
  code: string;
  message: string;
}

export class LlmError extends Error {
  readonly kind: LlmErrorKind;
  readonly retryable: boolean;
  /** Every target tried, in order, when the call failed on all of them. */
  readonly failures: readonly TargetFailure[];
  /** When every target tried asked to be left alone for a while (Retry-After): the soonest one is back. */
  readonly retryAfterMs?: number;
  /**
   * What the failed call was charged all the same (a call cancelled while the provider had its prompt,
   * attempts that timed out there or broke mid-answer): the usage rows and the budget have it, so a caller
   * keeping its own tally (a task run) must add it too.
   */
  charged?: FailedCallCharge[];
  constructor(
    kind: LlmErrorKind,
    message: string,
    retryable: boolean,
    failures: readonly TargetFailure[] = [],
    retryAfterMs?: number,
  ) {
    super(message);
    this.name = "LlmError";
    this.kind = kind;
    this.retryable = retryable;
    this.failures = failures;
    this.retryAfterMs = retryAfterMs;
  }
}

export interface LlmRouter {
  chat(request: ChatRequest, context: CallContext): Promise<ChatResult>;
}
