import {
  type AdapterCall,
  type AdapterResult,
  fetchFailure,
  MessageAssembler,
  type ProviderAdapter,
  ProviderError,
  type StreamEvent,
} from "../provider.ts";
import { readSse } from "../sse.ts";
import { estimatePromptTokens } from "../tokens.ts";
import type { ChatMessage, ResponseFormat, TokenUsage } from "../types.ts";

/**
 * Workers AI through the `AI` binding. The binding is optional and is not
 * declared in wrangler.toml: under `wrangler dev` and the vitest pool an `[ai]`
 * binding always runs remotely and needs a Cloudflare account and login, which
 * would break the offline `npm run dev` and `npm test`. A deployment that
 * wants it adds `[ai] binding = "AI"` and names `workers-ai:<model>` in a chain.
 */

interface AiOutput {
  /** An object in JSON mode (`response_format`). */
  response?: string | Record<string, unknown> | null;
  tool_calls?: { name: string; arguments: unknown }[];
  usage?: Partial<TokenUsage>;
}

type AiRunner = {
  run(model: string, input: Record<string, unknown>, options?: Record<string, unknown>): Promise<unknown>;
};

/** JSON mode answers an object; the chat format carries it as JSON text. */
function responseText(response: AiOutput["response"]): string | null | undefined {
  return typeof response === "object" && response !== null ? JSON.stringify(response) : response;
}

/** Workers AI's JSON mode takes the JSON Schema itself as `json_schema`, not OpenAI's `{ name, schema }` wrapper. */
function workersAiResponseFormat(format: ResponseFormat | undefined) {
  if (!format || format.type === "text") return {};
  if (format.type === "json_object") return { response_format: { type: "json_object" } };
  return { response_format: { type: "json_schema", json_schema: format.json_schema.schema ?? { type: "object" } } };
}

export class WorkersAiAdapter implements ProviderAdapter {
  readonly name = "workers-ai";
  readonly simulated = false;
  readonly #ai: AiRunner;

  constructor(ai: AiRunner) {
    this.#ai = ai;
  }

  async complete(call: AdapterCall): Promise<AdapterResult> {
    const output = (await this.#run(call, false)) as AiOutput;
    const toolCalls = (output.tool_calls ?? []).map((toolCall, index) => ({
      id: `call_wai_${index}`,
      type: "function" as const,
      function: {
        name: toolCall.name,
        arguments:
          typeof toolCall.arguments === "string" ? toolCall.arguments : JSON.stringify(toolCall.arguments ?? {}),
      },
    }));
    const text = responseText(output.response);
    const message: ChatMessage = {
      role: "assistant",
      content: toolCalls.length > 0 && !text ? null : (text ?? ""),
      ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {}),
    };
    return {
      message,
      finish_reason: toolCalls.length > 0 ? "tool_calls" : "stop",
      usage: this.#usage(call, output.usage, message),
    };
  }

  async *stream(call: AdapterCall): AsyncIterable<StreamEvent> {
    const body = await this.#run(call, true);
    if (!(body instanceof ReadableStream)) throw new ProviderError("protocol", "Workers AI sent no stream");
    const assembler = new MessageAssembler();
    let usage: Partial<TokenUsage> | undefined;
    for await (const message of readSse(body as ReadableStream<Uint8Array>)) {
      if (message.data === "[DONE]") break;
      const chunk = JSON.parse(message.data) as AiOutput;
      if (chunk.usage) usage = chunk.usage;
      const text = responseText(chunk.response);
      if (text) {
        const event = { type: "delta" as const, content: text };
        assembler.add(event);
        yield event;
      }
    }
    const message = assembler.message();
    yield { type: "done", result: { message, finish_reason: "stop", usage: this.#usage(call, usage, message) } };
  }

  async #run(call: AdapterCall, stream: boolean): Promise<unknown> {
    try {
      return await this.#ai.run(
        call.model,
        {
          messages: call.messages,
          ...(call.tools ? { tools: call.tools } : {}),
          ...(call.max_tokens !== undefined ? { max_tokens: call.max_tokens } : {}),
          ...(call.temperature !== undefined ? { temperature: call.temperature } : {}),
          // What Workers AI's text-generation models take of OpenAI's settings (no stop, no tool choice).
          ...(call.top_p !== undefined ? { top_p: call.top_p } : {}),
          ...(call.seed !== undefined ? { seed: call.seed } : {}),
          ...(call.presence_penalty !== undefined ? { presence_penalty: call.presence_penalty } : {}),
          ...(call.frequency_penalty !== undefined ? { frequency_penalty: call.frequency_penalty } : {}),
          ...workersAiResponseFormat(call.response_format),
          ...(stream ? { stream: true } : {}),
        },
        { signal: call.signal },
      );
    } catch (error) {
      const status = Number((error as { status?: unknown }).status);
      if (Number.isInteger(status) && status >= 400) {
        throw new ProviderError("http", `Workers AI failed: ${String(error)}`, { status });
      }
      throw fetchFailure(error, call.signal);
    }
  }

  /** Workers AI reports usage for most models; when it does not, the estimate stands in and is marked by the log. */
  #usage(call: AdapterCall, usage: Partial<TokenUsage> | undefined, message: ChatMessage): TokenUsage {
    const prompt = usage?.prompt_tokens ?? estimatePromptTokens(call.messages, call.tools);
    const completion = usage?.completion_tokens ?? estimatePromptTokens([message]);
    return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
  }
}
