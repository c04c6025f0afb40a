import { seededRandom } from "../../lib/seeded-random.ts";
import type { AdapterCall, AdapterResult, ProviderAdapter, StreamEvent } from "../provider.ts";
import { ProviderError } from "../provider.ts";
import { estimatePromptTokens } from "../tokens.ts";
import type { ChatMessage, ResponseFormat, ToolCall, ToolDefinition } from "../types.ts";
import { schemaExample } from "./schema-example.ts";
import { StopCutter } from "./stop-cutter.ts";

/**
 * The offline provider: deterministic answers with configurable latency,
 * token counts, tool calls and failure rate. It is what `npm run dev` and the
 * benchmarks run on, and everything it produces is labelled `simulated`.
 *
 * Settings come from the adapter's options, overridden per call by the model
 * name's query string, e.g. `sim-1?latency_ms=200&completion_tokens=50&failure_rate=0.1&tool_calls=1`,
 * so a workspace's routing chain can describe the behaviour it wants. Like a
 * real provider it honours `tool_choice` and `stop`, and answers JSON when
 * `response_format` asks for it.
 */

export interface SimulatedOptions {
  latencyMs: number;
  completionTokens: number;
  /** Tool calls made when the request offers tools and the last message is not a tool result. */
  toolCalls: number;
  /** Share of calls (0..1) answered with `failureStatus`, decided by a seeded generator. */
  failureRate: number;
  failureStatus: number;
  /** Deltas per streamed answer (one word each at most). */
  streamChunks: number;
  /**
   * A stream breaks after this many deltas, as a dropped connection does (0: never), so a client's handling of
   * a stream cut mid-answer, and the router's charge for what was delivered, can be seen offline.
   */
  cutAfterChunks: number;
}

export const SIMULATED_DEFAULTS: SimulatedOptions = {
  latencyMs: 0,
  completionTokens: 24,
  toolCalls: 1,
  failureRate: 0,
  failureStatus: 503,
  streamChunks: 8,
  cutAfterChunks: 0,
};

const QUERY_KEYS: Record<string, keyof SimulatedOptions> = {
  latency_ms: "latencyMs",
  completion_tokens: "completionTokens",
  tool_calls: "toolCalls",
  failure_rate: "failureRate",
  failure_status: "failureStatus",
  stream_chunks: "streamChunks",
  cut_after_chunks: "cutAfterChunks",
};

/**
 * Ceilings on what a model name may ask for. Any key with tasks:write names the model (a completion's
 * `model`, a task's `agent_config.model`), and the answer is built in the isolate every tenant's requests
 * share, synchronously: `completion_tokens=40000000` held it for 3 s and built a 160 MB answer, and a
 * little more exceeds its memory. The caps are what real models give: 128k output tokens, 128 tools.
 */
const QUERY_MAXIMUMS: Partial<Record<keyof SimulatedOptions, number>> = {
  completionTokens: 131_072,
  toolCalls: 128,
};

/**
 * A simulated failure is an HTTP error answer: any other status (a 200, a 700) is no failure a client, a
 * breaker or an event can tell (`llm.provider.error`'s http_status is 100..599, so its events were lost), and
 * the default stands.
 */
function isErrorStatus(status: number): boolean {
  return Number.isInteger(status) && status >= 400 && status <= 599;
}

export function simulatedSettings(model: string, base: SimulatedOptions): SimulatedOptions {
  const query = model.indexOf("?");
  if (query === -1) return base;
  const settings = { ...base };
  for (const [key, value] of new URLSearchParams(model.slice(query + 1))) {
    const field = QUERY_KEYS[key];
    const number = Number(value);
    if (field === "failureStatus" && !isErrorStatus(number)) continue;
    if (field && Number.isFinite(number) && number >= 0) {
      settings[field] = Math.min(number, QUERY_MAXIMUMS[field] ?? number);
    }
  }
  return settings;
}

/** FNV-1a: a stable seed from the request, so the same conversation gets the same answer. */
function hash(text: string): number {
  let value = 0x811c9dc5;
  for (let index = 0; index < text.length; index++) {
    value ^= text.charCodeAt(index);
    value = Math.imul(value, 0x01000193);
  }
  return value >>> 0;
}

const WORDS = [
  "the",
  "change",
  "keeps",
  "each",
  "test",
  "green",
  "and",
  "the",
  "code",
  "small",
  "so",
  "review",
  "is",
  "easy",
];

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (ms <= 0) return signal.aborted ? Promise.reject(signal.reason) : Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

export class SimulatedAdapter implements ProviderAdapter {
  readonly name = "simulated";
  readonly simulated = true;
  readonly #options: SimulatedOptions;
  /** Calls so far: part of the failure seed, so retries of one request can draw differently. */
  #calls = 0;

  constructor(options: Partial<SimulatedOptions> = {}) {
    this.#options = { ...SIMULATED_DEFAULTS, ...options };
  }

  async complete(call: AdapterCall): Promise<AdapterResult> {
    const settings = simulatedSettings(call.model, this.#options);
    await this.#wait(call, settings);
    return this.#answer(call, settings);
  }

  async *stream(call: AdapterCall): AsyncIterable<StreamEvent> {
    const settings = simulatedSettings(call.model, this.#options);
    await this.#wait(call, settings);
    const result = this.#answer(call, settings);
    if (result.message.tool_calls) {
      yield {
        type: "delta",
        tool_calls: result.message.tool_calls.map((toolCall, index) => ({
          index,
          id: toolCall.id,
          type: "function" as const,
          function: { name: toolCall.function.name, arguments: toolCall.function.arguments },
        })),
      };
    } else {
      let sent = 0;
      for (const piece of splitInto(result.message.content ?? "", settings.streamChunks)) {
        if (call.signal.aborted) throw new ProviderError("cancelled", "the call was cancelled");
        if (settings.cutAfterChunks > 0 && sent === settings.cutAfterChunks) {
          throw new ProviderError("connection", `simulated stream cut after ${sent} chunks`);
        }
        yield { type: "delta", content: piece };
        sent++;
      }
    }
    yield { type: "done", result };
  }

  async #wait(call: AdapterCall, settings: SimulatedOptions): Promise<void> {
    const seed = hash(`${call.model}\u0000${JSON.stringify(call.messages)}`) ^ this.#calls++;
    try {
      await sleep(settings.latencyMs, call.signal);
    } catch {
      const reason = call.signal.reason;
      throw reason instanceof Error && reason.name === "TimeoutError"
        ? new ProviderError("timeout", "simulated provider timed out")
        : new ProviderError("cancelled", "the call was cancelled");
    }
    if (settings.failureRate > 0 && seededRandom(seed)() < settings.failureRate) {
      throw new ProviderError("http", `simulated failure ${settings.failureStatus}`, {
        status: settings.failureStatus,
      });
    }
  }

  #answer(call: AdapterCall, settings: SimulatedOptions): AdapterResult {
    const promptTokens = estimatePromptTokens(call.messages, call.tools);
    const last = call.messages.at(-1);
    // tool_choice as a provider reads it: "none" calls nothing, `{ name }` calls that tool; parallel_tool_calls: false, one at most.
    const choice = call.tool_choice;
    const offered = choice === "none" ? [] : (call.tools ?? []);
    const tools = typeof choice === "object" ? offered.filter((tool) => tool.function.name === choice.name) : offered;
    if (tools.length > 0 && settings.toolCalls > 0 && last?.role !== "tool") {
      const seed = hash(JSON.stringify(call.messages));
      const count = call.parallel_tool_calls === false ? 1 : settings.toolCalls;
      const toolCalls: ToolCall[] = Array.from({ length: count }, (_, index) => ({
        id: `call_sim_${(seed + index).toString(36)}`,
        type: "function",
        function: {
          name: tools[index % tools.length].function.name,
          arguments: toolArguments(tools[index % tools.length]),
        },
      }));
      // Never past max_tokens, as no provider bills more: the budget reserved the prompt and max_tokens, no more.
      const completion = Math.min(settings.completionTokens, 10 * toolCalls.length, call.max_tokens ?? Infinity);
      return {
        message: { role: "assistant", content: null, tool_calls: toolCalls },
        finish_reason: "tool_calls",
        usage: { prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion },
      };
    }
    const limit =
      call.max_tokens !== undefined ? Math.min(call.max_tokens, settings.completionTokens) : settings.completionTokens;
    const words = answerText(last, limit);
    // JSON asked for: a JSON answer, so code that parses it works offline too.
    const answer =
      call.response_format && call.response_format.type !== "text" ? jsonAnswer(call.response_format, words) : words;
    // As a real provider does: the answer ends at the first stop sequence, and what was written up to it is billed.
    const cutter = new StopCutter(call.stop);
    const text = cutter.push(answer) + cutter.flush();
    const completion = cutter.stopped ? Math.min(limit, text.split(" ").filter(Boolean).length) : limit;
    return {
      message: { role: "assistant", content: text },
      finish_reason: !cutter.stopped && limit < settings.completionTokens ? "length" : "stop",
      usage: { prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion },
    };
  }
}

/** `tokens` words: "[simulated]" then words drawn by a generator seeded with the last message's hash. */
function answerText(last: ChatMessage | undefined, tokens: number): string {
  if (tokens <= 0) return "";
  const next = seededRandom(hash(last?.content ?? ""));
  const words = ["[simulated]"];
  for (let index = 1; index < tokens; index++) words.push(WORDS[Math.floor(next() * WORDS.length)]);
  return words.join(" ");
}

/**
 * Arguments its parameters schema takes, built as a JSON answer is: `{}` failed every tool with a required
 * parameter (the SDK's zodFunction parses the arguments before calling, so under `npm run dev` the tool never ran).
 */
function toolArguments(tool: ToolDefinition): string {
  const schema = tool.function.parameters ?? {};
  return JSON.stringify(schemaExample(schema, "[simulated]"));
}

/** `{"answer": …}`, or for a JSON Schema the plainest value it allows (see schema-example.ts). */
function jsonAnswer(format: Exclude<ResponseFormat, { type: "text" }>, words: string): string {
  if (format.type === "json_object" || !format.json_schema.schema) return JSON.stringify({ answer: words });
  const schema = format.json_schema.schema;
  return JSON.stringify(schemaExample(schema, words));
}

function splitInto(text: string, pieces: number): string[] {
  const words = text.split(/(?<= )/);
  const count = Math.max(1, Math.min(pieces, words.length));
  const size = Math.ceil(words.length / count);
  const out: string[] = [];
  for (let index = 0; index < words.length; index += size) out.push(words.slice(index, index + size).join(""));
  return out;
}
