import type { ChatMessage, ChatResult, GenerationSettings, TokenUsage, ToolDefinition } from "./types.ts";

/** What every provider adapter implements; the router knows nothing else about a provider. */

export interface AdapterCall extends GenerationSettings {
  model: string;
  messages: ChatMessage[];
  tools?: ToolDefinition[];
  /** Aborts on the per-attempt timeout, the overall deadline, or the caller's cancellation. */
  signal: AbortSignal;
  /** The API request the call serves (its X-Request-Id), sent where a provider takes a client's own id for it. */
  clientRequestId?: string;
  /**
   * A stream's adapter calls it as the provider's chunks arrive, also those that carry nothing for the caller
   * (a reasoning model's thinking): the provider is alive, and a stream's timeout is for one that stalls.
   * `unsentTokens`: what the chunk held that the caller is not sent (the thinking), estimated; a stream cut
   * before its usage came is charged it with what was delivered, as the provider wrote it.
   */
  onProgress?: (unsentTokens?: number) => void;
}

export interface AdapterResult {
  message: ChatMessage;
  finish_reason: ChatResult["finish_reason"];
  usage: TokenUsage;
  /** The provider reported no usage for this whole answer: `usage` is our estimate, and the charge says so. */
  usageEstimated?: true;
}

/** A streamed tool-call fragment, in the OpenAI chunk shape every adapter maps to. */
export interface ToolCallDelta {
  index: number;
  id?: string;
  type?: "function";
  function?: { name?: string; arguments?: string };
}

export type StreamEvent =
  | {
      type: "delta";
      content?: string;
      refusal?: string;
      tool_calls?: ToolCallDelta[];
      /**
       * The provider's count of the prompt, on the first delta where it tells it before the answer ends
       * (Anthropic's message_start): a stream cut short is charged that rather than our estimate.
       */
      prompt_tokens?: number;
    }
  /** Last event of a stream: the whole message and the provider's own usage figures. */
  | { type: "done"; result: AdapterResult };

/**
 * A whole answer told as a stream: one delta with all of it, then the end. For a provider that answers a
 * call whole though the caller asked for a stream (Workers AI in JSON mode, OpenAI for an unverified
 * organization's reasoning models): the caller still gets a stream, in one piece.
 */
export async function* wholeAnswerAsStream(result: AdapterResult): AsyncGenerator<StreamEvent> {
  const { content, refusal, tool_calls: toolCalls } = result.message;
  const delta = {
    type: "delta" as const,
    ...(content ? { content } : {}),
    ...(refusal ? { refusal } : {}),
    ...(toolCalls?.length ? { tool_calls: toolCalls.map((toolCall, index) => ({ index, ...toolCall })) } : {}),
  };
  if (Object.keys(delta).length > 1) yield delta;
  yield { type: "done", result };
}

export interface ProviderAdapter {
  /** `openai`, `azure`, `local`, `anthropic`, `workers-ai` or `simulated`. */
  readonly name: string;
  readonly simulated: boolean;
  /**
   * The longest answer a call without max_tokens gets from this provider, where it sets one (Anthropic
   * requires max_tokens, so the adapter sends a default; Workers AI's binding has its own); absent: the
   * model's own ceiling (ModelPrice.maxOutputTokens), which may be long.
   */
  readonly defaultMaxTokens?: number;
  /**
   * The model sends nothing, not even a stream's first event, while it thinks (OpenAI's reasoning models through
   * chat completions): its attempt waits as long as its answer may take to write before taking it for stalled.
   */
  silentWhileThinking?(model: string): boolean;
  complete(call: AdapterCall): Promise<AdapterResult>;
  stream(call: AdapterCall): AsyncIterable<StreamEvent>;
}

export type ProviderFailure = "http" | "timeout" | "connection" | "protocol" | "cancelled";

/** A failed attempt, with what the router needs to decide: retry, fail over, or give up. */
export class ProviderError extends Error {
  readonly failure: ProviderFailure;
  readonly status?: number;
  readonly retryAfterMs?: number;
  /** The provider's error code (e.g. `rate_limit_exceeded`, `insufficient_quota`) or `http_<status>`. */
  readonly code: string;
  /** The provider's id for the request it refused (its `x-request-id`, `request-id`): what its support asks for. */
  readonly providerRequestId?: string;
  constructor(
    failure: ProviderFailure,
    message: string,
    options: { status?: number; retryAfterMs?: number; code?: string; providerRequestId?: string } = {},
  ) {
    super(message);
    this.name = "ProviderError";
    this.failure = failure;
    this.status = options.status;
    this.retryAfterMs = options.retryAfterMs;
    this.code = options.code ?? (options.status !== undefined ? `http_${options.status}` : failure);
    if (options.providerRequestId !== undefined) this.providerRequestId = options.providerRequestId;
  }
}

/**
 * The headers providers name a request by: OpenAI's (and vLLM's, many gateways') `x-request-id`, Anthropic's
 * `request-id`, Azure's `apim-request-id`. Kept only when short and plain, as it goes into log lines.
 */
const PROVIDER_REQUEST_ID_HEADERS = ["x-request-id", "request-id", "apim-request-id"] as const;
const PLAIN_REQUEST_ID = /^[\x21-\x7e]{1,200}$/;

export function providerRequestIdOf(headers: Headers): string | undefined {
  for (const name of PROVIDER_REQUEST_ID_HEADERS) {
    const value = headers.get(name)?.trim();
    if (value && PLAIN_REQUEST_ID.test(value)) return value;
  }
  return undefined;
}

/** Turns a fetch failure into a ProviderError: an abort is a timeout or a cancellation, anything else the connection. */
export function fetchFailure(error: unknown, signal: AbortSignal): ProviderError {
  if (error instanceof ProviderError) return error;
  if (signal.aborted) {
    const reason = signal.reason;
    const timedOut = reason instanceof Error && reason.name === "TimeoutError";
    return timedOut
      ? new ProviderError("timeout", "the provider did not answer in time")
      : new ProviderError("cancelled", "the call was cancelled");
  }
  const message = error instanceof Error ? error.message : String(error);
  return new ProviderError("connection", `connection to the provider failed: ${message}`);
}

/** Accumulates streamed deltas into the final message, for adapters whose stream does not repeat it. */
export class MessageAssembler {
  content = "";
  refusal = "";
  readonly toolCalls: { id: string; name: string; arguments: string }[] = [];

  add(delta: { content?: string; refusal?: string; tool_calls?: ToolCallDelta[] }): void {
    if (delta.content) this.content += delta.content;
    if (delta.refusal) this.refusal += delta.refusal;
    for (const part of delta.tool_calls ?? []) {
      if (!this.toolCalls[part.index]) this.toolCalls[part.index] = { id: "", name: "", arguments: "" };
      const call = this.toolCalls[part.index];
      if (part.id) call.id = part.id;
      if (part.function?.name) call.name += part.function.name;
      if (part.function?.arguments) call.arguments += part.function.arguments;
    }
  }

  message(): ChatMessage {
    const calls = this.toolCalls.filter(Boolean);
    return {
      role: "assistant",
      content: this.content === "" && (calls.length > 0 || this.refusal !== "") ? null : this.content,
      ...(this.refusal !== "" ? { refusal: this.refusal } : {}),
      ...(calls.length > 0
        ? {
            tool_calls: calls.map((call) => ({
              id: call.id,
              type: "function" as const,
              function: { name: call.name, arguments: call.arguments },
            })),
          }
        : {}),
    };
  }
}

interface ErrorFields {
  code?: unknown;
  type?: unknown;
  message?: unknown;
}

/**
 * FastAPI's own error body, which servers built on it answer a request their schema refuses with (llama-cpp-python,
 * text-generation-webui): `{detail: "…"}`, or pydantic's list of `{loc, msg}`, told as "body.stream_options: Extra
 * inputs are not permitted". Unread, the refusal reached the caller as "Unprocessable Entity", and a server refusing
 * `stream_options` or `stream` was not recognized as one (see whole-from-stream.ts).
 */
function fastApiDetail(detail: unknown): string | undefined {
  if (typeof detail === "string") return detail;
  if (!Array.isArray(detail)) return undefined;
  const lines = detail.flatMap((issue: { loc?: unknown; msg?: unknown } | null) => {
    if (typeof issue?.msg !== "string") return [];
    const where = Array.isArray(issue.loc) ? issue.loc.join(".") : "";
    return [where ? `${where}: ${issue.msg}` : issue.msg];
  });
  return lines.length > 0 ? lines.join("; ") : undefined;
}

/**
 * Reads an error body for its code and message without trusting its shape: OpenAI's and Anthropic's
 * `{error: {…}}`, a bare `{error: "…"}` (LM Studio, TGI), or vLLM's error object itself at the top
 * (`{object: "error", message, type, code: 400}`, before vLLM 0.9), or FastAPI's `{detail}`. Read as the first
 * shape only, the others' message was lost: a vLLM refusal reached the caller as "provider answered 400: Bad Request".
 */
export async function errorFromResponse(response: Response, retryAfterMs: number | undefined): Promise<ProviderError> {
  let code = `http_${response.status}`;
  let detail = response.statusText;
  try {
    const text = await response.text();
    const body = JSON.parse(text) as ErrorFields & { error?: ErrorFields | string; detail?: unknown };
    const error: ErrorFields | undefined =
      typeof body.error === "object" && body.error !== null
        ? body.error
        : typeof body.error === "string"
          ? { message: body.error }
          : typeof body.message === "string"
            ? body
            : { message: fastApiDetail(body.detail) };
    if (error && typeof error.code === "string") code = error.code;
    else if (error && typeof error.type === "string") code = error.type;
    if (error && typeof error.message === "string") detail = error.message;
  } catch {
    // Not JSON: the status says enough.
  }
  const providerRequestId = providerRequestIdOf(response.headers);
  return new ProviderError("http", `provider answered ${response.status}: ${detail.slice(0, 300)}`, {
    status: response.status,
    retryAfterMs,
    code,
    ...(providerRequestId !== undefined ? { providerRequestId } : {}),
  });
}
