import {
  type AdapterCall,
  type AdapterResult,
  errorFromResponse,
  fetchFailure,
  MessageAssembler,
  type ProviderAdapter,
  ProviderError,
  type StreamEvent,
  type ToolCallDelta,
  wholeAnswerAsStream,
} from "../provider.ts";
import { retryAfterMs } from "../retry.ts";
import { readSse } from "../sse.ts";
import { textTokens } from "../tokens.ts";
import type { ChatMessage, ChatResult, ToolChoice } from "../types.ts";
import { ToolCallIndexer, wholeToolCalls } from "./openai-tool-calls.ts";
import { type ReportedUsage, usageOf, usageOrEstimate } from "./openai-usage.ts";
import { StopCutter } from "./stop-cutter.ts";

/**
 * OpenAI-compatible chat completions: OpenAI itself, Azure OpenAI (the model
 * is the deployment name, plus `api-version`), and `local` servers (Ollama,
 * vLLM, LM Studio) by base URL. Streams ask for `stream_options.include_usage`
 * so the charge comes from the provider's own usage figures.
 */

export interface OpenAiCompatibleOptions {
  name: "openai" | "azure" | "local";
  /** OpenAI and local: up to `/v1` (a local server's bare address means its `/v1`); Azure: the resource endpoint. */
  baseUrl: string;
  apiKey?: string;
  /** Azure only. */
  apiVersion?: string;
  fetch?: typeof fetch;
}

/**
 * A reasoning model's thinking, as local servers send it beside the answer (vLLM, LM Studio and llama.cpp as
 * reasoning_content, Ollama and newer vLLM as reasoning): not passed on, but written, and counted by an estimate.
 */
interface Thinking {
  reasoning_content?: string | null;
  reasoning?: string | null;
}

interface CompletionBody {
  choices?: { message?: ChatMessage & Thinking; finish_reason?: string | null }[];
  usage?: ReportedUsage | null;
  error?: unknown;
}

interface ChunkBody {
  choices?: {
    delta?: { content?: string | null; refusal?: string | null; tool_calls?: ToolCallDelta[] } & Thinking;
    finish_reason?: string | null;
  }[];
  usage?: ReportedUsage | null;
  error?: unknown;
}

/** Azure's API version when AZURE_OPENAI_API_VERSION is unset: the latest GA one. */
const DEFAULT_AZURE_API_VERSION = "2024-10-21";

/** A version's date (`2024-12-01` of `2024-12-01-preview`); one that is not a date (`preview`, `latest`) has none. */
const versionDate = (version: string) => /^\d{4}-\d{2}-\d{2}/.exec(version)?.[0];

const FINISH_REASONS = new Set<ChatResult["finish_reason"]>(["stop", "length", "tool_calls", "content_filter"]);

export function finishReason(value: string | null | undefined): ChatResult["finish_reason"] {
  if (value === "function_call") return "tool_calls";
  return value && FINISH_REASONS.has(value as ChatResult["finish_reason"])
    ? (value as ChatResult["finish_reason"])
    : "stop";
}

/**
 * A finish reason that says the server gave up on the answer, not that the answer is over: vLLM's `abort`
 * (the engine dropped the request: preempted, shutting down) and `error`. Read as any other unknown reason,
 * such a cut answer became a whole one, finish_reason `stop`; it is a failed attempt, tried again or elsewhere.
 */
const GIVEN_UP_REASONS: ReadonlySet<string> = new Set(["abort", "error"]);

function failIfGivenUp(finish: string | null | undefined): void {
  if (finish && GIVEN_UP_REASONS.has(finish)) {
    throw new ProviderError("protocol", `the provider gave up on the answer (finish_reason "${finish}")`, {
      code: `finish_${finish}`,
    });
  }
}

/** An error status given as a number (vLLM) or as its digits (LiteLLM), else undefined. */
function httpStatusOf(value: unknown): number | undefined {
  const status = typeof value === "string" && /^\d{3}$/.test(value) ? Number(value) : value;
  return typeof status === "number" && status >= 400 && status <= 599 ? status : undefined;
}

/**
 * OpenAI's 400 to a stream of a model the deployment's organization may call but not stream until it is
 * verified (o3, gpt-5: "Your organization must be verified to stream this model…", param `stream`). Told as
 * the caller's fault, a streamed call of such a model failed with 400 though the same call whole succeeds:
 * it is asked whole, and streamed to the caller in one piece.
 */
function refusesStreamingHere(error: ProviderError): boolean {
  return error.status === 400 && /must be verified to stream/i.test(error.message);
}

/**
 * An error the server sent as data, in a stream or in a 200 answer: OpenAI's error object (vLLM's gives
 * the HTTP status as its `code`, a number), or a bare string (some local servers). Its message is the
 * caller's to read, and its status, when it gives one, says whether another attempt can help (a 400
 * cannot); without one it is taken for a 500. Read as `{message, code}` only, a string error lost its
 * message and a 400 was retried as a 500, against the provider's breaker.
 */
function errorInBody(error: unknown): ProviderError {
  const fields = typeof error === "object" && error !== null ? (error as Record<string, unknown>) : {};
  const text = typeof error === "string" ? error : typeof fields.message === "string" ? fields.message : "error";
  // LiteLLM's proxy gives the status as a string ("429"), in the stream of a provider it calls only as the stream
  // starts: read as a 500, a rate limit or a refused key was retried as one, and told in the provider's words,
  // which name the deployment's organization or the key's characters, where its status hides them.
  const status = [fields.status, fields.code].map(httpStatusOf).find((value) => value !== undefined);
  const code = [fields.code, fields.type].find(
    (value): value is string => typeof value === "string" && value !== "" && httpStatusOf(value) === undefined,
  );
  return new ProviderError("http", `provider answered ${status ?? 500}: ${text.slice(0, 300)}`, {
    status: status ?? 500,
    code,
  });
}

/**
 * OpenAI's reasoning models (o1, o3, o4-mini, gpt-5 but not gpt-5-chat)
 * refuse the sampling settings and `stop` with a 400, and `max_tokens` too:
 * their limit, `max_completion_tokens`, counts the reasoning tokens as well.
 * An Azure deployment is recognised only when it is named after its model.
 */
const REASONING_MODEL = /^(o\d|gpt-5(?!-chat))/i;
const SETTINGS_REASONING_MODELS_REFUSE: ReadonlySet<string> = new Set([
  "temperature",
  "top_p",
  "presence_penalty",
  "frequency_penalty",
  "stop",
]);

/**
 * The o-series (o1, o3, o4-mini; not gpt-5) also refuse `parallel_tool_calls`, true or false, with a 400
 * ("Unsupported parameter"): left out, and a `false` honoured here, by passing on the answer's first tool
 * call only.
 */
const PARALLEL_TOOL_CALLS_REFUSED = /^o\d/i;

function refusesParallelToolCalls(provider: OpenAiCompatibleOptions["name"], model: string): boolean {
  return provider !== "local" && PARALLEL_TOOL_CALLS_REFUSED.test(model);
}

/** A call asking for one tool call at most of a model not sent that: the answer's first is kept, here. */
function oneToolCallHere(provider: OpenAiCompatibleOptions["name"], call: AdapterCall): boolean {
  return call.parallel_tool_calls === false && refusesParallelToolCalls(provider, call.model);
}

/**
 * The settings as this provider takes them, those that are set. OpenAI itself
 * gets `max_completion_tokens` for every model (`max_tokens` is deprecated
 * there); Azure's older API versions and local servers know only `max_tokens`,
 * so they keep it unless the model is a reasoning one. A reasoning model's
 * sampling settings are left out rather than failing the call: the agent
 * runtime sets a temperature on every call, whichever model the router picks.
 */
function providerSettings(provider: OpenAiCompatibleOptions["name"], call: AdapterCall): Record<string, unknown> {
  const reasoning = provider !== "local" && REASONING_MODEL.test(call.model);
  const settings: Record<string, unknown> = {};
  for (const key of SAME_NAMED_SETTINGS) {
    if (call[key] === undefined || (reasoning && SETTINGS_REASONING_MODELS_REFUSE.has(key))) continue;
    if (key === "parallel_tool_calls" && refusesParallelToolCalls(provider, call.model)) continue;
    settings[key] = call[key];
  }
  // Other models refuse it with a 400.
  if (reasoning && call.reasoning_effort !== undefined) settings.reasoning_effort = call.reasoning_effort;
  if (call.max_tokens !== undefined) {
    const limitName = provider === "openai" || reasoning ? "max_completion_tokens" : "max_tokens";
    settings[limitName] = call.max_tokens;
  }
  return settings;
}

/**
 * The stop sequences a reasoning model is not sent (it refuses them), applied to its answer here instead, as
 * Workers AI's are: left out and not applied, a caller's `stop` was honoured or not as the chain routed the call.
 */
function unsentStops(provider: OpenAiCompatibleOptions["name"], call: AdapterCall): readonly string[] | undefined {
  return provider !== "local" && REASONING_MODEL.test(call.model) && call.stop?.length ? call.stop : undefined;
}

const SAME_NAMED_SETTINGS = [
  "temperature",
  "top_p",
  "stop",
  "seed",
  "presence_penalty",
  "frequency_penalty",
  "response_format",
  "parallel_tool_calls",
] as const satisfies readonly (keyof AdapterCall)[];

function openAiToolChoice(choice: ToolChoice) {
  return typeof choice === "string" ? choice : { type: "function" as const, function: { name: choice.name } };
}

export class OpenAiCompatibleAdapter implements ProviderAdapter {
  readonly name: string;
  readonly simulated = false;
  readonly #options: OpenAiCompatibleOptions;
  /** The server refused a stream's `stream_options` once: it is not sent again (see #post). */
  #refusesStreamOptions = false;
  /**
   * Models this deployment may call but not stream (see refusesStreamingHere): their streams are asked whole and
   * told in one piece from then on, rather than refused first each time.
   */
  readonly #wholeOnlyModels = new Set<string>();
  /** Azure deployments that refused the configured API version, and the newer one each named (see #post). */
  readonly #azureNewerVersions = new Map<string, string>();

  constructor(options: OpenAiCompatibleOptions) {
    this.name = options.name;
    this.#options = options;
  }

  /** OpenAI's (and Azure's) reasoning models stream nothing while they think; a local server's stream their thinking. */
  silentWhileThinking(model: string): boolean {
    return this.#options.name !== "local" && REASONING_MODEL.test(model);
  }

  async complete(call: AdapterCall): Promise<AdapterResult> {
    return this.#whole(call, await this.#post(call, false));
  }

  /** A whole answer, as JSON, or as a stream read to its end. */
  async #whole(call: AdapterCall, response: Response): Promise<AdapterResult> {
    // Some servers answer every call as a stream, whatever it asks (mini-sglang, KAITO's transformers runtime,
    // servers whose `stream` defaults to true): read as JSON, each answer failed as "not JSON" and was asked again.
    if (/^text\/event-stream/i.test(response.headers.get("Content-Type") ?? "")) {
      for await (const event of this.#events(call, response)) if (event.type === "done") return event.result;
      throw new ProviderError("protocol", "the stream ended without its final event");
    }
    let body: CompletionBody;
    try {
      body = (await response.json()) as CompletionBody;
    } catch (error) {
      throw call.signal.aborted
        ? fetchFailure(error, call.signal)
        : new ProviderError("protocol", "the provider's answer is not JSON");
    }
    const choice = body.choices?.[0];
    if (!choice?.message && body.error) throw errorInBody(body.error);
    if (!choice?.message) throw new ProviderError("protocol", "the provider's answer lacks a message");
    failIfGivenUp(choice.finish_reason);
    const cutter = new StopCutter(unsentStops(this.#options.name, call));
    const content = choice.message.content ? cutter.push(choice.message.content) + cutter.flush() : null;
    const message: ChatMessage = {
      role: "assistant",
      content: content ?? choice.message.content ?? null,
      // A model that declines (structured outputs) says why here, with no content: the caller needs it.
      ...(choice.message.refusal ? { refusal: choice.message.refusal } : {}),
      ...(choice.message.tool_calls?.length && !cutter.stopped
        ? {
            tool_calls: wholeToolCalls(
              oneToolCallHere(this.#options.name, call)
                ? choice.message.tool_calls.slice(0, 1)
                : choice.message.tool_calls,
            ),
          }
        : {}),
    };
    return {
      message,
      finish_reason: cutter.stopped ? "stop" : finishReason(choice.finish_reason),
      ...usageOrEstimate(
        call,
        body.usage,
        message,
        textTokens(choice.message.reasoning_content ?? choice.message.reasoning ?? ""),
      ),
    };
  }

  async *stream(call: AdapterCall): AsyncIterable<StreamEvent> {
    if (this.#wholeOnlyModels.has(call.model)) {
      yield* wholeAnswerAsStream(await this.complete(call));
      return;
    }
    let response: Response;
    try {
      response = await this.#post(call, true);
    } catch (error) {
      if (!(error instanceof ProviderError && refusesStreamingHere(error))) throw error;
      this.#wholeOnlyModels.add(call.model);
      yield* wholeAnswerAsStream(await this.complete(call));
      return;
    }
    // A server that ignores `stream` (a proxy, an older local server) answers JSON: read as the whole answer it
    // is, told in one piece, not failed as a stream that ended before its answer and asked again.
    if (/^application\/json/i.test(response.headers.get("Content-Type") ?? "")) {
      yield* wholeAnswerAsStream(await this.#whole(call, response));
      return;
    }
    yield* this.#events(call, response);
  }

  /** A streamed answer's events, its last the whole message with its usage (or an estimate, marked). */
  async *#events(call: AdapterCall, response: Response): AsyncGenerator<StreamEvent> {
    if (!response.body) throw new ProviderError("protocol", "the provider sent no stream");
    const assembler = new MessageAssembler();
    const toolCalls = new ToolCallIndexer();
    let finish: string | null | undefined;
    /** The provider's usage as it came (its last chunk with figures); read at the end. */
    let usage: ReportedUsage | undefined;
    /** The server said the stream is over: its answer is whole, even without a finish reason. */
    let done = false;
    /**
     * The usage chunk came, which include_usage sends after the last choice, with none: the answer is whole.
     * Usage on a chunk with a choice says nothing of the kind: vLLM's continuous_usage_stats puts it on every
     * chunk, so a stream cut mid-answer was taken for a whole one, finish_reason "stop", with [DONE].
     */
    let usageChunk = false;
    /** The thinking's tokens, estimated as it comes (not kept: it may be long), for an estimate of the answer's. */
    let thinkingTokens = 0;
    const cutter = new StopCutter(unsentStops(this.#options.name, call));
    const oneOnly = oneToolCallHere(this.#options.name, call);
    try {
      for await (const message of readSse(response.body)) {
        if (message.data === "[DONE]") {
          done = true;
          break;
        }
        let chunk: ChunkBody;
        try {
          chunk = JSON.parse(message.data) as ChunkBody;
        } catch {
          throw new ProviderError("protocol", "the provider sent a chunk that is not JSON");
        }
        if (chunk.error) throw errorInBody(chunk.error);
        const choice = chunk.choices?.[0];
        if (chunk.usage && usageOf(chunk.usage)) {
          usage = chunk.usage;
          if (!choice) usageChunk = true;
        }
        if (choice?.finish_reason) finish = choice.finish_reason;
        if (cutter.stopped) {
          // Past a stop sequence the model is not sent, it writes on, and is paid for all it writes: read to the
          // end (passed on to no one) for its usage, as a budget must count the reasoning it hides as well. Cut
          // off here, the call was charged an estimate of the text alone, a way round budgets.
          call.onProgress?.();
          continue;
        }
        const delta = choice?.delta;
        const thinking = delta?.reasoning_content ?? delta?.reasoning;
        if (thinking) {
          const tokens = textTokens(thinking);
          thinkingTokens += tokens;
          call.onProgress?.(tokens);
        }
        if (!delta || (!delta.content && !delta.refusal && !delta.tool_calls?.length)) {
          // Nothing for the caller (a reasoning model's thinking, reasoning_content or reasoning, is not passed
          // on), but the stream is alive: a local model that thought longer than the attempt timeout had its
          // stream cut as stalled and tried again, never answering. A delta restarts the clock by itself.
          if (!thinking) call.onProgress?.();
          continue;
        }
        const mapped = delta.tool_calls?.length ? toolCalls.map(delta.tool_calls) : [];
        const toolCallDeltas = oneOnly ? mapped.filter((piece) => piece.index === 0) : mapped;
        // Text held as the start of a stop sequence goes out before what is not text.
        const held = delta.content ? "" : cutter.flush();
        const content = delta.content ? cutter.push(delta.content) : held;
        const event = {
          type: "delta" as const,
          ...(content ? { content } : {}),
          ...(delta.refusal ? { refusal: delta.refusal } : {}),
          ...(toolCallDeltas.length > 0 && !cutter.stopped ? { tool_calls: toolCallDeltas } : {}),
        };
        if (Object.keys(event).length > 1) {
          assembler.add(event);
          yield event;
        } else call.onProgress?.();
      }
    } catch (error) {
      // Read on past a stop sequence only for its usage: the answer the caller gets is whole without it.
      if (!cutter.stopped) throw fetchFailure(error, call.signal);
    }
    const rest = cutter.flush();
    if (rest) {
      const event = { type: "delta" as const, content: rest };
      assembler.add(event);
      yield event;
    }
    if (cutter.stopped) finish = "stop";
    // Without a finish reason (or the usage chunk) and [DONE], the stream was cut, not finished: its answer is not
    // whole. [DONE] alone ends it: some servers and proxies never send a finish reason (null, or Ollama's old "",
    // ollama#4357, throughout); failing their whole answers after the caller had every delta helped nobody.
    if (!usageChunk && !finish && !done) throw new ProviderError("protocol", "the stream ended before its answer did");
    failIfGivenUp(finish);
    const message = assembler.message();
    yield {
      type: "done",
      result: {
        message,
        finish_reason: finishReason(finish),
        ...usageOrEstimate(call, usage, message, thinkingTokens),
      },
    };
  }

  #url(model: string): string {
    const base = this.#options.baseUrl.replace(/\/+$/, "");
    if (this.#options.name === "azure") {
      // The resource endpoint, also when given up to /openai or as a deployment's whole "Target URI", as the
      // portal shows it (…/openai/deployments/{name}/chat/completions?api-version=…): both were called at
      // …/openai/openai/…, a 404. The deployment is the model, and the version #azureVersion's.
      const url = new URL(base);
      const endpoint = `${url.origin}${url.pathname.replace(/\/openai(\/.*)?$/i, "").replace(/\/+$/, "")}`;
      // A deployment named "." or ".." is a dot segment, which a URL resolves away: the call, with the resource's
      // key, would go to another path of it. No deployment has such a name: answered as Azure answers one it lacks.
      if (model === "." || model === "..") {
        throw new ProviderError("http", `no deployment is named "${model}"`, {
          status: 404,
          code: "DeploymentNotFound",
        });
      }
      const version = encodeURIComponent(this.#azureVersion(model));
      return `${endpoint}/openai/deployments/${encodeURIComponent(model)}/chat/completions?api-version=${version}`;
    }
    // A local server given by its bare address (Ollama's docs give http://localhost:11434): Ollama, vLLM,
    // LM Studio and llama.cpp all serve chat completions under /v1; Ollama and vLLM answer 404 without it.
    if (this.#options.name === "local" && /^https?:\/\/[^/]+$/i.test(base)) return `${base}/v1/chat/completions`;
    return `${base}/chat/completions`;
  }

  /**
   * Azure takes `stream_options` from API version 2024-08-01-preview on; older ones (2024-06-01, still
   * the GA version many deployments pin) refuse every stream that sends it with a 400 ("Unrecognized
   * request argument supplied: stream_options"). Their streams go without, charged an estimate. A
   * version that is not a date (`preview`, `latest`) is newer than all of them.
   */
  #asksStreamUsage(model: string): boolean {
    if (this.#options.name !== "azure") return true;
    const date = versionDate(this.#azureVersion(model));
    return date === undefined || date >= "2024-08-01";
  }

  /** The API version a deployment is called with: AZURE_OPENAI_API_VERSION's, or a newer one it asked for. */
  #azureVersion(deployment: string): string {
    return this.#azureNewerVersions.get(deployment) ?? this.#options.apiVersion ?? DEFAULT_AZURE_API_VERSION;
  }

  /**
   * The newer API version an Azure refusal names, when it is newer than the one sent: reasoning models refuse
   * older versions ("Model o4-mini is enabled only for api versions 2024-12-01-preview and later"), as
   * json_schema does before 2024-08-01-preview. With the default version, 2024-10-21 GA, every call to an
   * o1, o3 or o4-mini deployment failed with that 400 unless AZURE_OPENAI_API_VERSION was set.
   */
  #newerVersionAsked(deployment: string, error: ProviderError): string | undefined {
    if (this.#options.name !== "azure" || error.status !== 400) return undefined;
    const asked = /enabled only for api versions (\d{4}-\d{2}-\d{2}[\w-]*) and later/i.exec(error.message)?.[1];
    const sent = versionDate(this.#azureVersion(deployment));
    return asked !== undefined && sent !== undefined && asked.slice(0, 10) > sent ? asked : undefined;
  }

  /**
   * Posts the call; a stream asks for its usage where the server is known to take `stream_options`. A server
   * that refuses it (vLLM before 0.4.3 and other servers that forbid fields they do not know answer 400,
   * "extra_forbidden … stream_options"; NIM 422) is asked again without, and from then on this adapter's
   * streams go without it, charged an estimate: sent as before, every stream it served failed.
   */
  async #post(call: AdapterCall, stream: boolean): Promise<Response> {
    const asksUsage = stream && this.#asksStreamUsage(call.model) && !this.#refusesStreamOptions;
    const response = await this.#send(call, stream, asksUsage);
    if (response.ok) return response;
    const error = await errorFromResponse(response, retryAfterMs(response.headers));
    const newerVersion = this.#newerVersionAsked(call.model, error);
    if (newerVersion !== undefined) {
      // Asked again in the version it names, as this deployment will be from now on.
      this.#azureNewerVersions.set(call.model, newerVersion);
      return this.#post(call, stream);
    }
    if (asksUsage && (error.status === 400 || error.status === 422) && /stream_options/i.test(error.message)) {
      this.#refusesStreamOptions = true;
      return this.#post(call, stream);
    }
    throw error;
  }

  async #send(call: AdapterCall, stream: boolean, asksUsage: boolean): Promise<Response> {
    const headers: Record<string, string> = {
      "Content-Type": "application/json",
      Accept: stream ? "text/event-stream" : "application/json",
    };
    if (this.#options.apiKey) {
      if (this.#options.name === "azure") headers["api-key"] = this.#options.apiKey;
      else headers.Authorization = `Bearer ${this.#options.apiKey}`;
    }
    // OpenAI's header for the client's own id of a request, which its logs and support can look a call up by (one
    // that timed out has no x-request-id of theirs to quote): the caller's X-Request-Id, as in our logs and events.
    if (this.#options.name === "openai" && call.clientRequestId) headers["X-Client-Request-Id"] = call.clientRequestId;
    const body = {
      // Azure names the deployment in the URL; the others read it here.
      ...(this.#options.name === "azure" ? {} : { model: call.model }),
      messages: call.messages,
      ...(call.tools ? { tools: call.tools } : {}),
      ...(call.tool_choice !== undefined ? { tool_choice: openAiToolChoice(call.tool_choice) } : {}),
      ...providerSettings(this.#options.name, call),
      // `stream: false` said, not left to the default: some servers stream unless told not to.
      ...(stream
        ? { stream: true, ...(asksUsage ? { stream_options: { include_usage: true } } : {}) }
        : { stream: false }),
    };
    try {
      return await (this.#options.fetch ?? fetch)(this.#url(call.model), {
        method: "POST",
        headers,
        body: JSON.stringify(body),
        signal: call.signal,
      });
    } catch (error) {
      throw fetchFailure(error, call.signal);
    }
  }
}
