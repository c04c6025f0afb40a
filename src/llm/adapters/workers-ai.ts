import { abortableBody, abortion } from "../../lib/abortable.ts";
import {
  type AdapterCall,
  type AdapterResult,
  fetchFailure,
  MessageAssembler,
  type ProviderAdapter,
  ProviderError,
  type StreamEvent,
  wholeAnswerAsStream,
} from "../provider.ts";
import { readSse } from "../sse.ts";
import { estimateAnswerUsage, textTokens } from "../tokens.ts";
import type { ChatMessage, ResponseFormat, TokenUsage } from "../types.ts";
import { newCallId } from "./openai-tool-calls.ts";
import { StopCutter } from "./stop-cutter.ts";

/**
 * Workers AI through the `AI` binding. The binding is optional and is not
 * declared in wrangler.toml: under `wrangler dev` and the vitest pool an `[ai]`
 * binding always runs remotely and needs a Cloudflare account and login, which
 * would break the offline `npm run dev` and `npm test`. A deployment that
 * wants it adds `[ai] binding = "AI"` and names `workers-ai:<model>` in a chain.
 */

/**
 * What a text-generation model answers. Older models answer Workers AI's own
 * shape (`response`, flat `tool_calls` of `{name, arguments}`); newer ones
 * (Llama 4, gpt-oss, Qwen…) answer OpenAI's `choices`. A stream's chunks are
 * the same shapes, `choices[0].delta` for the OpenAI one.
 */
interface AiToolCall {
  index?: number;
  id?: string;
  name?: string;
  arguments?: unknown;
  function?: { name?: string; arguments?: unknown };
}

interface AiChoicePart {
  content?: string | null;
  /** A reasoning model's thinking (Qwen3, QwQ, gpt-oss): not passed on, but written, and paid for. */
  reasoning_content?: string | null;
  reasoning?: string | null;
  tool_calls?: AiToolCall[];
}

interface AiOutput {
  /** An object in JSON mode (`response_format`); a number from some models. */
  response?: string | number | Record<string, unknown> | null;
  tool_calls?: AiToolCall[];
  choices?: { message?: AiChoicePart; delta?: AiChoicePart; finish_reason?: string | null }[];
  usage?: Partial<TokenUsage>;
}

type AiRunner = {
  run(model: string, input: Record<string, unknown>, options?: Record<string, unknown>): Promise<unknown>;
};

/** The thinking a reasoning model wrote beside its answer, in a whole answer's message or a stream's delta. */
function thinkingOf(part: AiChoicePart | undefined): string {
  return part?.reasoning_content ?? part?.reasoning ?? "";
}

/** The answer's text in any of the shapes; JSON mode's object comes back as JSON text. */
function textOf(output: AiOutput): string | undefined {
  const choice = output.choices?.[0];
  const fromChoice = choice?.message?.content ?? choice?.delta?.content;
  if (fromChoice) return fromChoice;
  const response = output.response;
  if (response === null || response === undefined) return undefined;
  return typeof response === "object" ? JSON.stringify(response) : String(response);
}

/**
 * Whether the answer was cut at its token limit. OpenAI's shape says so (`finish_reason: "length"`); Workers AI's
 * own shape says nothing, so an answer whose reported length is the limit in force (the call's max_tokens, else
 * the binding's own default) was cut there. Told as a whole answer, half a sentence passed for all of it.
 */
function reachedLimit(
  call: AdapterCall,
  finishReason: string | null | undefined,
  usage: Partial<TokenUsage> | undefined,
  defaultMaxTokens: number,
): boolean {
  if (finishReason === "length") return true;
  if (finishReason) return false;
  const answerTokens = usage?.completion_tokens;
  if (typeof answerTokens !== "number") return false;
  if (call.max_tokens !== undefined) return answerTokens >= call.max_tokens;
  // A longer answer shows that this model's own default is longer than the binding's usual one, and was not reached.
  return answerTokens === defaultMaxTokens;
}

function toolCallsOf(output: AiOutput): AiToolCall[] {
  const choice = output.choices?.[0];
  return output.tool_calls ?? choice?.message?.tool_calls ?? choice?.delta?.tool_calls ?? [];
}

/** Arguments arrive as JSON text (OpenAI's shape, or a streamed piece of it) or as the object itself. */
function argumentsText(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value ?? {});
}

/**
 * The binding's schema refuses `content: null` (an assistant turn that only called tools, or refused): an
 * OpenAI refusal sent back is the turn's text, as for Anthropic.
 */
function bindingMessages(messages: ChatMessage[]) {
  return messages.map(({ refusal, ...message }) =>
    message.content === null ? { ...message, content: refusal ?? "" } : message,
  );
}

/**
 * Workers AI takes `auto`, `none` and `required`; a named tool becomes
 * `required` with only that tool offered, the nearest it has.
 */
function workersAiTools(call: AdapterCall) {
  if (!call.tools) return {};
  const choice = call.tool_choice;
  if (choice === undefined) return { tools: call.tools };
  if (typeof choice === "string") return { tools: call.tools, tool_choice: choice };
  return { tools: call.tools.filter((tool) => tool.function.name === choice.name), tool_choice: "required" };
}

/** Workers AI's JSON mode takes the JSON Schema itself as `json_schema`, not OpenAI's `{ name, schema }` wrapper. */
function workersAiResponseFormat(format: ResponseFormat | undefined) {
  if (!format || format.type === "text") return {};
  if (format.type === "json_object") return { response_format: { type: "json_object" } };
  return { response_format: { type: "json_schema", json_schema: format.json_schema.schema ?? { type: "object" } } };
}

/**
 * Workers AI's documented error codes and the HTTP status each stands for
 * (developers.cloudflare.com/workers-ai/platform/errors). The binding throws
 * them in its message ("3040: …"), mostly without a status of its own, and the
 * router's choice (retry, fail over, count for the breaker) rests on the status.
 */
const STATUS_BY_ERROR_CODE: Readonly<Record<string, number>> = {
  "3003": 400,
  "3039": 400,
  "5004": 400,
  // "No such model … or task": documented as a 400, but it is the binding's model-not-found (as 3042 is), the 404
  // OpenAI, Azure and local servers answer. As a 400, a chain entry naming a model the account lacks (misspelt,
  // retired) was the caller's fault, "every provider refused the request", rather than the chain's to mend (a 503).
  "5007": 404,
  "3023": 403,
  "3041": 403,
  "5016": 403,
  "5018": 403,
  "3042": 404,
  "5005": 405,
  "5019": 405,
  "3007": 408,
  "3008": 408,
  "3006": 413,
  "3040": 429,
};

/**
 * The account's daily allocation is spent: documented as 3036, and answered as 4006 by the binding as well
 * ("4006: you have used up your daily free allocation of 10,000 neurons"). Told as OpenAI tells a spent quota
 * (`insufficient_quota`), so the router fails over at once rather than retry what no retry mends, and does
 * not count it against the provider's breaker.
 */
const SPENT_ALLOCATION_CODES: ReadonlySet<string> = new Set(["3036", "4006"]);

function bindingFailure(error: unknown): { status?: number; code?: string } {
  const code = /\b([345]\d{3}):/.exec(String((error as { message?: unknown } | null)?.message ?? error))?.[1];
  if (code && SPENT_ALLOCATION_CODES.has(code)) return { status: 429, code: "insufficient_quota" };
  const ownStatus = Number((error as { status?: unknown } | null)?.status);
  const status = Number.isInteger(ownStatus) && ownStatus >= 400 ? ownStatus : code && STATUS_BY_ERROR_CODE[code];
  return { ...(status ? { status } : {}), ...(code ? { code: `workers_ai_${code}` } : {}) };
}

export class WorkersAiAdapter implements ProviderAdapter {
  readonly name = "workers-ai";
  readonly simulated = false;
  /** The binding's own default: its text-generation models answer this many tokens when no max_tokens is sent. */
  readonly defaultMaxTokens = 256;
  readonly #ai: AiRunner;

  constructor(ai: AiRunner) {
    this.#ai = ai;
  }

  async complete(call: AdapterCall): Promise<AdapterResult> {
    const output = (await this.#run(call, false)) as AiOutput;
    const toolCalls = toolCallsOf(output).map((toolCall) => ({
      // Unique across turns: a conversation that falls over to Anthropic is refused for repeated tool_use ids.
      id: toolCall.id || newCallId(),
      type: "function" as const,
      function: {
        name: toolCall.function?.name ?? toolCall.name ?? "",
        arguments: argumentsText(toolCall.function?.arguments ?? toolCall.arguments),
      },
    }));
    const whole = textOf(output);
    // Its models take no stop sequences: the answer ends at the first one here, as at a provider that took them.
    const cutter = new StopCutter(call.stop);
    const text = whole === undefined ? undefined : cutter.push(whole) + cutter.flush();
    if (cutter.stopped) toolCalls.length = 0;
    const message: ChatMessage = {
      role: "assistant",
      content: toolCalls.length > 0 && !text ? null : (text ?? ""),
      ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {}),
    };
    const cut = reachedLimit(call, output.choices?.[0]?.finish_reason, output.usage, this.defaultMaxTokens);
    return {
      message,
      finish_reason: toolCalls.length > 0 ? "tool_calls" : cut && !cutter.stopped ? "length" : "stop",
      ...this.#usage(call, output.usage, message, textTokens(thinkingOf(output.choices?.[0]?.message))),
    };
  }

  async *stream(call: AdapterCall): AsyncIterable<StreamEvent> {
    if (call.response_format && call.response_format.type !== "text") {
      // "JSON Mode currently doesn't support streaming" (Cloudflare's docs): the whole answer, as one piece.
      yield* wholeAnswerAsStream(await this.complete(call));
      return;
    }
    const answer = await this.#run(call, true);
    if (!(answer instanceof ReadableStream)) throw new ProviderError("protocol", "Workers AI sent no stream");
    const body = abortableBody(answer as ReadableStream<Uint8Array>, call.signal);
    const assembler = new MessageAssembler();
    let usage: Partial<TokenUsage> | undefined;
    let finishReason: string | undefined;
    /** Tool calls begun so far, by index: a call's id and name are sent once, with its first piece. */
    const toolCallsBegun = new Set<number>();
    /** Workers AI ends every stream with [DONE], in either shape; a stream that ends without it was cut. */
    let done = false;
    /** Its models take no stop sequences: the answer ends at the first one here, and is read no further. */
    const cutter = new StopCutter(call.stop);
    /** The thinking written so far, by an estimate: paid for, though the caller is sent none of it. */
    let thinkingTokens = 0;
    try {
      for await (const message of readSse(body)) {
        if (message.data === "[DONE]") {
          done = true;
          const held = cutter.flush();
          if (held) {
            const event = { type: "delta" as const, content: held };
            assembler.add(event);
            yield event;
          }
          break;
        }
        const chunk = JSON.parse(message.data) as AiOutput;
        if (chunk.usage) usage = chunk.usage;
        finishReason = chunk.choices?.[0]?.finish_reason ?? finishReason;
        const toolCalls = toolCallsOf(chunk).map((part, position) => {
          // Pieces without an index belong to the call at their place in the chunk, as Cloudflare's own provider reads them.
          const index = part.index ?? position;
          const first = !toolCallsBegun.has(index);
          toolCallsBegun.add(index);
          const name = part.function?.name ?? part.name;
          const pieces = part.function?.arguments ?? part.arguments;
          return {
            index,
            ...(first ? { id: part.id || newCallId(), type: "function" as const } : {}),
            function: {
              ...(first && name ? { name } : {}),
              ...(pieces !== undefined ? { arguments: argumentsText(pieces) } : {}),
            },
          };
        });
        const chunkText = textOf(chunk);
        let text = chunkText ? cutter.push(chunkText) : "";
        if (cutter.stopped) {
          // At a stop sequence the answer is whole: nothing after it (a tool call neither) is part of it.
          toolCalls.length = 0;
          done = true;
        } else if (toolCalls.length > 0) {
          // Text held as a sequence's possible start was no sequence: it comes before the tool call.
          text += cutter.flush();
        }
        if (text || toolCalls.length > 0) {
          const event = {
            type: "delta" as const,
            ...(text ? { content: text } : {}),
            ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {}),
          };
          assembler.add(event);
          yield event;
        } else {
          // Nothing for the caller (a model's thinking, reasoning_content, is not passed on), but the stream is
          // alive: the router cuts one silent for the attempt's timeout as stalled, and a delta restarts the clock
          // by itself, so a model that thought longer than that was cut and tried again, never answering. The
          // thinking's tokens are told too: a stream cut while the model thinks is charged them.
          const thinking = textTokens(thinkingOf(chunk.choices?.[0]?.delta));
          thinkingTokens += thinking;
          call.onProgress?.(thinking || undefined);
        }
        if (done) break;
      }
    } catch (error) {
      if (error instanceof SyntaxError) throw new ProviderError("protocol", "Workers AI sent a chunk that is not JSON");
      throw fetchFailure(error, call.signal);
    }
    // Its chunks carry no finish reason to tell a whole answer from a cut one: without [DONE] it was cut, and
    // passing it for whole (finish_reason stop) would hand the caller half an answer as if it were all.
    if (!done) throw new ProviderError("protocol", "the stream ended before its answer did");
    const message = assembler.message();
    const cut = reachedLimit(call, finishReason, usage, this.defaultMaxTokens);
    const finish = message.tool_calls ? "tool_calls" : cut && !cutter.stopped ? "length" : "stop";
    yield {
      type: "done",
      result: { message, finish_reason: finish, ...this.#usage(call, usage, message, thinkingTokens) },
    };
  }

  async #run(call: AdapterCall, stream: boolean): Promise<unknown> {
    const aborted = abortion(call.signal);
    try {
      // Not started for an attempt given up already, as fetch does not start a request whose signal has aborted.
      if (call.signal.aborted) throw call.signal.reason;
      const running = this.#ai.run(
        call.model,
        {
          messages: bindingMessages(call.messages),
          ...workersAiTools(call),
          ...(call.max_tokens !== undefined ? { max_tokens: call.max_tokens } : {}),
          ...(call.temperature !== undefined ? { temperature: call.temperature } : {}),
          // What Workers AI's text-generation models take of OpenAI's settings (no stop sequences: see StopCutter).
          ...(call.top_p !== undefined ? { top_p: call.top_p } : {}),
          ...(call.seed !== undefined ? { seed: call.seed } : {}),
          ...(call.presence_penalty !== undefined ? { presence_penalty: call.presence_penalty } : {}),
          ...(call.frequency_penalty !== undefined ? { frequency_penalty: call.frequency_penalty } : {}),
          ...workersAiResponseFormat(call.response_format),
          ...(stream ? { stream: true } : {}),
        },
        { signal: call.signal },
      );
      // A stream the binding opens after the attempt was given up is cancelled, not left running.
      running.then(
        (late) => {
          if (call.signal.aborted && late instanceof ReadableStream) late.cancel().catch(() => {});
        },
        () => {},
      );
      return await Promise.race([running, aborted.promise]);
    } catch (error) {
      if (call.signal.aborted) throw fetchFailure(error, call.signal);
      const { status, code } = bindingFailure(error);
      if (status !== undefined)
        throw new ProviderError("http", `Workers AI failed: ${String(error)}`, { status, code });
      throw fetchFailure(error, call.signal);
    } finally {
      aborted.dispose();
    }
  }

  /**
   * Workers AI reports usage for most models; when it does not, the estimate (thinking and all) stands in, and
   * the charge is marked.
   */
  #usage(
    call: AdapterCall,
    usage: Partial<TokenUsage> | undefined,
    message: ChatMessage,
    thinkingTokens: number,
  ): Pick<AdapterResult, "usage" | "usageEstimated"> {
    if (typeof usage?.prompt_tokens === "number" && typeof usage.completion_tokens === "number") {
      const { prompt_tokens, completion_tokens } = usage;
      return { usage: { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens } };
    }
    return { usage: estimateAnswerUsage(call, message, thinkingTokens), usageEstimated: true };
  }
}
