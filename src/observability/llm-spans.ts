import { type Attributes, context, type Span, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";

/**
 * One span per attempt of an LLM call at a provider, under the request's (or
 * the task run's) span, with the upstream `fetch` span inside it. The fetch
 * span alone says `POST api.openai.com 429`: which model, which attempt of
 * the call, and what it was charged are not in it (the body is not read).
 * Named and tagged after OpenTelemetry's GenAI conventions (`chat {model}`,
 * `gen_ai.*`), which trace backends chart; never the prompt or the answer.
 * Without tracing (no OTLP endpoint) the API's tracer is a no-op.
 */

const tracer = trace.getTracer("mgx-ai-edge/llm");

export interface AttemptSpanInput {
  provider: string;
  model: string;
  /** The attempt's number in the call, from 1, across targets. */
  attempt: number;
  /** Which attempt at this target (0 for the first). */
  retry: number;
  stream: boolean;
  simulated: boolean;
}

export interface AttemptOutcome {
  usage?: { prompt_tokens: number; completion_tokens: number; cached_prompt_tokens?: number };
  finishReason?: string | null;
  usageEstimated?: boolean;
  /** The attempt failed: the provider's HTTP status (none when no answer came) and the error's code. */
  error?: { status?: number; code: string; providerRequestId?: string };
}

export class AttemptSpan {
  readonly #span: Span;
  #ended = false;

  constructor(input: AttemptSpanInput) {
    const attributes: Attributes = {
      "gen_ai.operation.name": "chat",
      "gen_ai.provider.name": input.provider,
      "gen_ai.system": input.provider,
      "gen_ai.request.model": input.model,
      "mgx.llm.attempt": input.attempt,
      "mgx.llm.retry": input.retry,
      "mgx.llm.stream": input.stream,
      "mgx.llm.simulated": input.simulated,
    };
    this.#span = tracer.startSpan(`chat ${input.model}`, { kind: SpanKind.CLIENT, attributes });
  }

  /** Runs the attempt with this span as the active one, so the adapter's fetch span is its child. */
  run<T>(work: () => Promise<T>): Promise<T> {
    return context.with(trace.setSpan(context.active(), this.#span), work);
  }

  /** Ends the span with what the attempt came to; later calls do nothing (a stream ends in several places). */
  end(outcome: AttemptOutcome = {}): void {
    if (this.#ended) return;
    this.#ended = true;
    const span = this.#span;
    if (outcome.usage) {
      span.setAttributes({
        "gen_ai.usage.input_tokens": outcome.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": outcome.usage.completion_tokens,
        ...(outcome.usage.cached_prompt_tokens
          ? { "gen_ai.usage.cache_read.input_tokens": outcome.usage.cached_prompt_tokens }
          : {}),
        "mgx.llm.usage_estimated": outcome.usageEstimated === true,
      });
    }
    if (outcome.finishReason) span.setAttribute("gen_ai.response.finish_reasons", [outcome.finishReason]);
    if (outcome.error) {
      span.setAttribute("error.type", outcome.error.code);
      if (outcome.error.status !== undefined) span.setAttribute("http.response.status_code", outcome.error.status);
      if (outcome.error.providerRequestId !== undefined) {
        span.setAttribute("mgx.llm.provider_request_id", outcome.error.providerRequestId);
      }
      // The code, not the provider's message: a refusal of our credentials names the key's last characters.
      span.setStatus({ code: SpanStatusCode.ERROR, message: outcome.error.code });
    }
    span.end();
  }
}
