import type { Logger } from "../lib/logger.ts";
import {
  type AdapterCall,
  type AdapterResult,
  type ProviderAdapter,
  ProviderError,
  type StreamEvent,
} from "./provider.ts";
import { targetKey } from "./routing.ts";

/**
 * A whole answer asked of its provider as a stream (see Router.chat), and what to do with a server that will not
 * stream it. The router asks a long whole answer as a stream by its own choice, not the caller's: a local server
 * or gateway that refuses `stream: true` had answered such a call when it was asked whole, and failed it with a
 * 400 once it was asked as a stream. It is asked whole again at once, as a short answer is, and so are its later
 * long answers, in this isolate.
 */

/**
 * The statuses a server refuses a request's form with: 400 (vLLM, llama.cpp, OpenAI), 422 (servers built on
 * FastAPI or pydantic, NIM: a field their schema lacks), 415 (a gateway that serves no `text/event-stream`).
 */
const REFUSAL_STATUSES: ReadonlySet<number> = new Set([400, 415, 422]);

/**
 * The refusal names streaming: `stream`, `streams`, `streamed`, `streaming`, `stream_options`, `event-stream`, as
 * words (not `upstream`). Any 400 would not do: a refusal of the request itself (a prompt past the context window, a tool
 * schema the server rejects, an unknown model) asked again whole fails again, and its target, taken for one that
 * does not stream, would have its long answers asked whole, cut at the attempt timeout, for the isolate's life.
 * The servers we know name the field in their words ("streaming is not supported", vLLM's "extra_forbidden …
 * stream_options", OpenAI's "'stream' does not support true with this model"); the `param` some give is not kept
 * by errorFromResponse, and says no more than those words.
 */
const NAMES_STREAMING = /\bstream(?:s|ed|ing|_options)?\b/i;

export function refusesStreaming(error: unknown): boolean {
  return refusesRequest(error) && NAMES_STREAMING.test((error as ProviderError).message);
}

/** Targets (provider:model) that refused a whole answer asked as a stream, in this isolate: asked whole since. */
const wholeOnlyTargets = new Set<string>();
/** Enough for every target a deployment's chains name; the oldest is forgotten past it (asked as a stream again). */
const MAX_WHOLE_ONLY_TARGETS = 1_000;

function rememberWholeOnly(key: string): boolean {
  if (wholeOnlyTargets.has(key)) return false;
  if (wholeOnlyTargets.size >= MAX_WHOLE_ONLY_TARGETS) {
    const oldest = wholeOnlyTargets.values().next().value;
    if (oldest !== undefined) wholeOnlyTargets.delete(oldest);
  }
  wholeOnlyTargets.add(key);
  return true;
}

/**
 * A stream's answer, read to its end and told whole; every delta is progress, for the attempt's clock.
 *
 * The stream is the router's choice (a long answer) or the agent runtime's (`wholeFromStream`, for the same long
 * answers), never the caller's: a refusal that names streaming, before any of the answer, is answered by asking the
 * same provider whole at once, within the same attempt. So the refusal is no failed attempt: no retry delay, nothing
 * against the breaker, nothing charged (a refused request bills nothing). The target is asked whole from then on.
 *
 * Asked whole, the answer gives no sign of progress until it is all written: `askedWhole` is told first, so the
 * attempt waits as long as the answer may take to write rather than the attempt timeout, which cut every long
 * answer of such a server, and asked it again, three times.
 */
export async function wholeFromStream(
  adapter: ProviderAdapter,
  payload: AdapterCall,
  progress: { answered: (event: StreamEvent) => void; askedWhole: () => void },
  logger: Logger,
): Promise<AdapterResult> {
  const { answered, askedWhole } = progress;
  const key = targetKey({ provider: adapter.name, model: payload.model });
  if (wholeOnlyTargets.has(key)) {
    askedWhole();
    return adapter.complete(payload);
  }
  let answerBegun = false;
  try {
    for await (const event of adapter.stream(payload)) {
      if (event.type === "done") return event.result;
      answerBegun = true;
      answered(event);
    }
  } catch (error) {
    if (answerBegun || !refusesStreaming(error)) throw error;
    let result: AdapterResult;
    try {
      askedWhole();
      result = await adapter.complete(payload);
    } catch (wholeError) {
      // Refused whole as well, it was the request that was refused (a tool or a schema named "stream", an echo of
      // the caller's words), not its streaming: remembered, one caller's bad request had every workspace's long
      // answers to the target asked whole, and cut at the attempt timeout, for the isolate's life.
      if (!refusesRequest(wholeError)) rememberAndWarn(key, adapter, payload, error as ProviderError, logger);
      throw wholeError;
    }
    rememberAndWarn(key, adapter, payload, error as ProviderError, logger);
    return result;
  }
  throw new ProviderError("protocol", "the stream ended without its final event");
}

/** A refusal of the request's form (a status REFUSAL_STATUSES names), whatever its words. */
function refusesRequest(error: unknown): boolean {
  return (
    error instanceof ProviderError &&
    error.failure === "http" &&
    error.status !== undefined &&
    REFUSAL_STATUSES.has(error.status)
  );
}

function rememberAndWarn(
  key: string,
  adapter: ProviderAdapter,
  payload: AdapterCall,
  refusal: ProviderError,
  logger: Logger,
): void {
  if (!rememberWholeOnly(key)) return;
  // Once per target: asked whole, a long answer shows no progress, and a hung server is waited on as long.
  logger.warn("llm provider refuses to stream; its long whole answers are asked whole", {
    provider: adapter.name,
    model: payload.model,
    message: refusal.message,
    consequence:
      "a long answer is waited for as long as it may take to write, with no sign of progress meanwhile, so a hung server is given up only then",
  });
}
