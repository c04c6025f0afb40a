import {
  type AdapterCall,
  type AdapterResult,
  errorFromResponse,
  fetchFailure,
  MessageAssembler,
  type ProviderAdapter,
  ProviderError,
  type StreamEvent,
  wholeAnswerAsStream,
} from "../provider.ts";
import { retryAfterMs } from "../retry.ts";
import { readSse } from "../sse.ts";
import { textTokens } from "../tokens.ts";
import type { ChatMessage, ChatResult, TokenUsage, ToolCall } from "../types.ts";
import { answerText, type JsonAnswerTool, jsonAnswerTool } from "./anthropic-json.ts";
import { type Block, DEFAULT_MAX_TOKENS, toAnthropic } from "./anthropic-request.ts";
import { unsentStops } from "./anthropic-stops.ts";
import { StopCutter } from "./stop-cutter.ts";

/**
 * Anthropic's Messages API, mapped to and from the OpenAI chat shape: system
 * messages become `system`, tool calls `tool_use` blocks, tool results
 * `tool_result` blocks in a user turn. Usage is input + cache tokens as the
 * prompt, output tokens as the completion.
 */

export interface AnthropicOptions {
  apiKey: string;
  baseUrl?: string;
  fetch?: typeof fetch;
}

const API_VERSION = "2023-06-01";

interface AnthropicUsage {
  input_tokens?: number;
  output_tokens?: number;
  cache_creation_input_tokens?: number | null;
  cache_read_input_tokens?: number | null;
}

interface AnthropicEvent {
  type?: string;
  index?: number;
  message?: { usage?: AnthropicUsage };
  content_block?: { type?: string; id?: string; name?: string };
  delta?: { type?: string; text?: string; partial_json?: string; stop_reason?: string };
  usage?: AnthropicUsage;
  error?: { type?: string; message?: string };
}

function stopReason(value: string | null | undefined): ChatResult["finish_reason"] {
  // Newer models stop at the context window with their own reason: the answer is cut all the same.
  if (value === "max_tokens" || value === "model_context_window_exceeded") return "length";
  if (value === "tool_use") return "tool_calls";
  if (value === "refusal") return "content_filter";
  return "stop";
}

/** A wrapped answer cut short (max_tokens) does not parse: it is passed on as it came, with finish_reason `length`. */
function unwrappedAnswer(tool: JsonAnswerTool, json: string): string {
  try {
    return answerText(tool, JSON.parse(json || "{}"));
  } catch {
    return json;
  }
}

/** The forced answer tool ends the turn with `tool_use`: to the caller that is a plain stop. */
function answerStopReason(value: string | null | undefined): ChatResult["finish_reason"] {
  return value === "tool_use" ? "stop" : stopReason(value);
}

/**
 * The HTTP status of each of Anthropic's error types (its errors page), for an `error` event in a stream,
 * which has none of its own: told as a 500, its rate limit was retried and reported as a connection error,
 * in the provider's words, which name the organization (an answer's 429 is told by status and code alone).
 */
const STREAM_ERROR_STATUS: ReadonlyMap<string | undefined, number> = new Map([
  ["invalid_request_error", 400],
  ["authentication_error", 401],
  ["billing_error", 402],
  ["permission_error", 403],
  ["not_found_error", 404],
  ["request_too_large", 413],
  ["rate_limit_error", 429],
  ["api_error", 500],
  ["timeout_error", 504],
  ["overloaded_error", 529],
]);

function usageOf(usage: AnthropicUsage): TokenUsage {
  const prompt =
    (usage.input_tokens ?? 0) + (usage.cache_creation_input_tokens ?? 0) + (usage.cache_read_input_tokens ?? 0);
  const completion = usage.output_tokens ?? 0;
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

const USAGE_COUNTS = [
  "input_tokens",
  "output_tokens",
  "cache_creation_input_tokens",
  "cache_read_input_tokens",
] as const satisfies readonly (keyof AnthropicUsage)[];

/**
 * message_delta's usage, into what message_start told. Its counts are cumulative, and each may be null or left
 * out (Anthropic's SDKs take one only when it is `!= null`; gateways send 0 for what they do not count): copied
 * over as they came, a null `input_tokens` charged a whole stream's prompt as 0 tokens, unmarked. A count is
 * taken where it is a number, and never lowers one already told, as a cumulative count cannot.
 */
function addDeltaUsage(usage: AnthropicUsage, delta: AnthropicUsage | undefined): void {
  for (const key of USAGE_COUNTS) {
    const value = delta?.[key];
    if (typeof value === "number" && Number.isFinite(value)) usage[key] = Math.max(usage[key] ?? 0, value);
  }
}

export class AnthropicAdapter implements ProviderAdapter {
  readonly name = "anthropic";
  readonly simulated = false;
  readonly defaultMaxTokens = DEFAULT_MAX_TOKENS;
  readonly #options: AnthropicOptions;

  constructor(options: AnthropicOptions) {
    this.#options = options;
  }

  async complete(call: AdapterCall): Promise<AdapterResult> {
    return this.#whole(call, await this.#post(call, false));
  }

  /** A whole message, as JSON: Anthropic's answer to a call not streamed, or a gateway's to one that was. */
  async #whole(call: AdapterCall, response: Response): Promise<AdapterResult> {
    let body: { content?: Block[]; stop_reason?: string; usage?: AnthropicUsage };
    try {
      body = (await response.json()) as typeof body;
    } catch (error) {
      throw call.signal.aborted
        ? fetchFailure(error, call.signal)
        : new ProviderError("protocol", "the provider's answer is not JSON");
    }
    if (!body.content || !body.usage)
      throw new ProviderError("protocol", "the provider's answer lacks content or usage");
    const answerTool = jsonAnswerTool(call);
    const answer = body.content.find((block) => block.type === "tool_use" && block.name === answerTool?.name);
    if (answerTool && answer?.type === "tool_use") {
      return {
        message: { role: "assistant", content: answerText(answerTool, answer.input) },
        finish_reason: answerStopReason(body.stop_reason),
        usage: usageOf(body.usage),
      };
    }
    const cutter = new StopCutter(unsentStops(call.stop));
    let text = "";
    const toolCalls: ToolCall[] = [];
    for (const block of body.content) {
      if (cutter.stopped) break;
      if (block.type === "text") text += cutter.push(block.text);
      else if (block.type === "tool_use") {
        toolCalls.push({
          id: block.id,
          type: "function",
          function: { name: block.name, arguments: JSON.stringify(block.input ?? {}) },
        });
      }
    }
    text += cutter.flush();
    const message: ChatMessage = {
      role: "assistant",
      content: text === "" && toolCalls.length > 0 ? null : text,
      ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {}),
    };
    const finishReason = cutter.stopped ? "stop" : stopReason(body.stop_reason);
    return { message, finish_reason: finishReason, usage: usageOf(body.usage) };
  }

  /** The answer's events; the first delta carries message_start's prompt count, for a stream cut short. */
  async *stream(call: AdapterCall): AsyncIterable<StreamEvent> {
    const usage: AnthropicUsage = {};
    let promptTold = false;
    for await (const event of this.#events(call, usage)) {
      if (promptTold || event.type !== "delta" || usage.input_tokens === undefined) yield event;
      else {
        promptTold = true;
        yield { ...event, prompt_tokens: usageOf(usage).prompt_tokens };
      }
    }
  }

  /** `usage` gathers the stream's usage as it comes (message_start's, then message_delta's). */
  async *#events(call: AdapterCall, usage: AnthropicUsage): AsyncIterable<StreamEvent> {
    const response = await this.#post(call, true);
    // A gateway in front of Anthropic may answer a stream whole, as JSON (as servers behind the OpenAI-compatible
    // adapter do): read as events, it was a stream that "ended before its answer did", failed and asked again.
    // It is told in one piece, then ended: a caller's stream is its deltas, and with none it read an empty answer.
    if (/^application\/json/i.test(response.headers.get("Content-Type") ?? "")) {
      yield* wholeAnswerAsStream(await this.#whole(call, response));
      return;
    }
    if (!response.body) throw new ProviderError("protocol", "the provider sent no stream");
    const assembler = new MessageAssembler();
    let stop: string | undefined;
    let toolIndex = -1;
    const toolIndexByBlock = new Map<number, number>();
    const answerTool = jsonAnswerTool(call);
    /** The content block that carries the answer tool's input, if the model began it. */
    let answerBlock: number | undefined;
    /** A wrapped answer is unwrapped whole, at the block's end; an object streams as it comes. */
    let wrappedAnswer = "";
    let stopped = false;
    /** Ends the answer at a stop sequence Anthropic was not sent; the stream is read no further then. */
    const cutter = new StopCutter(unsentStops(call.stop));
    /** What the model wrote, passed on or not: what a stream cut by `cutter` is charged for. */
    let writtenTokens = 0;
    try {
      for await (const message of readSse(response.body)) {
        const data = JSON.parse(message.data) as AnthropicEvent;
        // Every event of the answer is a sign of life, those that carry nothing for the caller too (a JSON answer
        // held whole, text held as the start of a stop sequence): counted only by the deltas passed on, a long
        // JSON answer was cut as stalled at the attempt timeout while Anthropic wrote it. A ping is not: it keeps
        // the connection open, and counted, a stream of pings alone was waited on past the call's deadline.
        if (data.type !== "ping") call.onProgress?.();
        switch (data.type) {
          case "message_start":
            Object.assign(usage, data.message?.usage ?? {});
            break;
          case "content_block_start":
            if (data.content_block?.type === "tool_use" && data.content_block.name === answerTool?.name) {
              answerBlock = data.index ?? 0;
            } else if (data.content_block?.type === "tool_use") {
              const held = cutter.flush();
              if (held) {
                const text = { type: "delta" as const, content: held };
                assembler.add(text);
                yield text;
              }
              toolIndex++;
              toolIndexByBlock.set(data.index ?? 0, toolIndex);
              const event = {
                type: "delta" as const,
                tool_calls: [
                  {
                    index: toolIndex,
                    id: data.content_block.id,
                    type: "function" as const,
                    function: { name: data.content_block.name, arguments: "" },
                  },
                ],
              };
              assembler.add(event);
              yield event;
            }
            break;
          case "content_block_delta":
            writtenTokens += textTokens(data.delta?.text ?? data.delta?.partial_json ?? "");
            if (data.delta?.type === "text_delta" && data.delta.text) {
              const content = cutter.push(data.delta.text);
              if (!content) break;
              const event = { type: "delta" as const, content };
              assembler.add(event);
              yield event;
            } else if (data.delta?.type === "input_json_delta" && answerBlock === (data.index ?? 0)) {
              if (answerTool?.wrapped) wrappedAnswer += data.delta.partial_json ?? "";
              else if (data.delta.partial_json) {
                const event = { type: "delta" as const, content: data.delta.partial_json };
                assembler.add(event);
                yield event;
              }
            } else if (data.delta?.type === "input_json_delta" && data.delta.partial_json) {
              const event = {
                type: "delta" as const,
                tool_calls: [
                  {
                    index: toolIndexByBlock.get(data.index ?? 0) ?? 0,
                    function: { arguments: data.delta.partial_json as string },
                  },
                ],
              };
              assembler.add(event);
              yield event;
            }
            break;
          case "content_block_stop": {
            const tool = toolIndexByBlock.get(data.index ?? 0);
            if (tool !== undefined && assembler.toolCalls[tool]?.arguments === "") {
              // A tool without input streams no JSON at all; OpenAI (and our whole answer) say "{}", which parses.
              const event = { type: "delta" as const, tool_calls: [{ index: tool, function: { arguments: "{}" } }] };
              assembler.add(event);
              yield event;
            }
            if (answerTool?.wrapped && answerBlock === (data.index ?? 0)) {
              const event = {
                type: "delta" as const,
                content: unwrappedAnswer(answerTool, wrappedAnswer),
              };
              assembler.add(event);
              yield event;
            }
            break;
          }
          case "message_delta":
            if (data.delta?.stop_reason) stop = data.delta.stop_reason;
            addDeltaUsage(usage, data.usage);
            break;
          case "message_stop":
            stopped = true;
            break;
          case "error": {
            const status = STREAM_ERROR_STATUS.get(data.error?.type) ?? 500;
            throw new ProviderError(
              "http",
              // Words that do not name streaming: a refusal that does is one to stream (see whole-from-stream.ts).
              `provider answered ${status}: ${data.error?.message ?? "an error event without a message"}`,
              {
                status,
                code: data.error?.type,
              },
            );
          }
        }
        if (stopped || cutter.stopped) break;
      }
    } catch (error) {
      if (error instanceof SyntaxError)
        throw new ProviderError("protocol", "the provider sent an event that is not JSON");
      throw fetchFailure(error, call.signal);
    }
    if (cutter.stopped) {
      // The answer ended at the sequence, as at OpenAI: not read (nor generated) on to the model's own end, which
      // may be its token limit. Anthropic's usage for it never comes: the prompt is message_start's, the answer
      // what the model had written, estimated.
      const prompt = usageOf(usage).prompt_tokens;
      const completion = Math.max(1, Math.ceil(writtenTokens));
      const result = { message: assembler.message(), finish_reason: "stop" as const };
      const estimated = { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
      yield { type: "done", result: { ...result, usage: estimated, usageEstimated: true } };
      return;
    }
    // message_start already says output_tokens (1): only the stop reason, in message_delta, tells a whole answer
    // from a stream cut mid-way.
    if (stop === undefined) throw new ProviderError("protocol", "the stream ended before its answer did");
    if (usage.input_tokens === undefined || usage.output_tokens === undefined) {
      throw new ProviderError("protocol", "the stream ended without usage");
    }
    const held = cutter.flush();
    if (held) {
      const event = { type: "delta" as const, content: held };
      assembler.add(event);
      yield event;
    }
    yield {
      type: "done",
      result: {
        message: assembler.message(),
        finish_reason: answerBlock === undefined ? stopReason(stop) : answerStopReason(stop),
        usage: usageOf(usage),
      },
    };
  }

  async #post(call: AdapterCall, stream: boolean): Promise<Response> {
    const base = (this.#options.baseUrl ?? "https://api.anthropic.com").replace(/\/+$/, "");
    let response: Response;
    try {
      response = await (this.#options.fetch ?? fetch)(`${base}/v1/messages`, {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          "x-api-key": this.#options.apiKey,
          "anthropic-version": API_VERSION,
        },
        body: JSON.stringify({ ...toAnthropic(call), ...(stream ? { stream: true } : {}) }),
        signal: call.signal,
      });
    } catch (error) {
      throw fetchFailure(error, call.signal);
    }
    if (!response.ok) throw spentCredit(await errorFromResponse(response, retryAfterMs(response.headers)));
    return response;
  }
}

/**
 * Anthropic answers a spent prepaid balance with a 400 invalid_request_error ("Your credit balance is too low to
 * access the Anthropic API. Please go to Plans & Billing…"), not its 402 billing_error. Read as a request fault,
 * the caller was answered 400 "every provider refused the request" for a request without fault, in Anthropic's
 * words about the deployment's billing: it is the deployment's spent quota, `billing_error`, as the 402 is.
 */
function spentCredit(error: ProviderError): ProviderError {
  if (error.status !== 400 || !/credit balance is too low/i.test(error.message)) return error;
  return new ProviderError("http", error.message, { status: 400, code: "billing_error" });
}
