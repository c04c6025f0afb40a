import type { AttemptSpan } from "../observability/llm-spans.ts";
import { reportIfUnexpected, tellFailedAttempt } from "./attempt.ts";
import type { PreparedCall } from "./call-plan.ts";
import type { CallCharger } from "./charging.ts";
import { classifyFailure, describeFailure } from "./errors.ts";
import { type AdapterResult, fetchFailure, type ProviderAdapter, ProviderError, type StreamEvent } from "./provider.ts";
import type { RoutedStream, RouterDeps } from "./router-deps.ts";
import { modelName, type RouteTarget, targetKey } from "./routing.ts";
import { DeliveredText } from "./tokens.ts";
import { type CallContext, type ChatResult, LlmError } from "./types.ts";

/**
 * A caller's stream once an attempt has begun to answer it: its deltas as they come, then its charge. Retries and
 * fallback end with the first delta (Router.chatStream); from here a failure ends the stream, and the stream's
 * one outcome is told to the target's breaker when it ends.
 */

export interface Served<T> {
  value: T;
  target: RouteTarget;
  adapter: ProviderAdapter;
  attempts: number;
  /** Which attempt at its target served (0 for the first), as `retry_count` tells it. */
  retry: number;
  /** Ends the attempt's timer; streams call it at their last event. */
  finish: () => void;
  /** Restarts a stream's timer, as its provider is awaited again. */
  touch: () => void;
  /** Stops a stream's timer while the caller holds a delta: the wait is the caller's, not the provider's. */
  pause: () => void;
  /** The tokens the serving attempt's provider wrote and did not send (AdapterCall.onProgress), estimated. */
  unsentTokens: () => number;
  /** When the serving attempt was sent, and when the provider answered it (a stream's first event). */
  startedAtMs: number;
  answeredAtMs: number;
  /**
   * The serving attempts were the target's half-open trial, which a stream's end must settle or free (unless its
   * first delta proved the target, see routedStream: then false).
   */
  holdsTrial: boolean;
  /** The call's deadline shortened the attempt's wait below the attempt timeout (see cutByDeadline in #serve). */
  waitCutByDeadline: boolean;
  /** The serving attempt's trace span, ended with its usage when the answer is whole (a stream's at its end). */
  span: AttemptSpan;
}

/** What an attempt's span is told of an answer. */
export function answered(result: AdapterResult) {
  return { usage: result.usage, finishReason: result.finish_reason, usageEstimated: result.usageEstimated === true };
}

/**
 * The generator already run to its first yield. A generator that was never
 * stepped ignores `return()` (its body, `finally` included, never runs), so a
 * response body cancelled before its first pull would leave the call
 * uncharged and its result unsettled; once started, `return()` runs the
 * `finally` that stops the provider and charges what it did.
 */
function started<T>(generator: AsyncGenerator<T>): AsyncIterableIterator<T> {
  let first: Promise<IteratorResult<T>> | null = generator.next();
  // A failure here is also the result's rejection; the consumer sees it at its first next().
  first.catch(() => {});
  return {
    next() {
      const step = first ?? generator.next();
      first = null;
      return step;
    },
    async return(value?: unknown) {
      if (first) await first.catch(() => {});
      first = null;
      return generator.return(value as T);
    },
    throw: (error?: unknown) => generator.throw(error),
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}

/** The stream an attempt began: what Router.chatStream hands its caller, charged and told to the breaker at its end. */
export function routedStream(
  deps: RouterDeps,
  charger: CallCharger,
  served: Served<{ iterator: AsyncIterator<StreamEvent>; first: IteratorResult<StreamEvent> }>,
  call: PreparedCall,
  context: CallContext,
  startedMs: number,
): RoutedStream {
  // A streamed trial proves the target answers with its first delta: told then, rather than at the stream's end,
  // other calls use the target again while the answer runs (a long one kept them off it for minutes, and past
  // trialTimeoutMs a second trial was granted while it still streamed). Its end is then an ordinary call's outcome.
  const first = served.value.first;
  if (served.holdsTrial && !first.done && first.value.type === "delta") {
    deps.breaker.proveTrial(targetKey(served.target), {
      startedAtMs: served.startedAtMs,
      answeredAtMs: served.answeredAtMs,
    });
    served.holdsTrial = false;
  }
  let resolveResult!: (result: ChatResult) => void;
  let rejectResult!: (error: unknown) => void;
  const result = new Promise<ChatResult>((resolve, reject) => {
    resolveResult = resolve;
    rejectResult = reject;
  });
  result.catch(() => {});
  const { target, adapter, attempts, retry } = served;
  // A stream's one outcome for its breaker, told when it ends (see Router#serve): a failure of the provider's, or
  // a success (it answered whole, or was answering when its caller stopped or left).
  let outcomeTold = false;
  const told = (ok: boolean, error?: string) => {
    if (!outcomeTold) {
      deps.breaker.record(
        targetKey(target),
        ok,
        error,
        ok
          ? { answeredAtMs: served.answeredAtMs, startedAtMs: served.startedAtMs }
          : { startedAtMs: served.startedAtMs, trial: served.holdsTrial },
      );
    }
    outcomeTold = true;
  };
  async function* deltas() {
    let next = served.value.first;
    let final: AdapterResult | undefined;
    let failed = false;
    const delivered = new DeliveredText();
    try {
      while (!next.done) {
        const event = next.value;
        if (event.type === "done") final = event.result;
        else {
          delivered.add(event);
          // The attempt's timeout is for a provider that stalls: it stops while the caller holds the delta (a
          // slow reader, an SDK loop at its own work), which counted against the provider cut the stream as
          // stalled and charged its breaker a failure.
          served.pause();
          yield event;
        }
        served.touch();
        next = await served.value.iterator.next();
      }
      served.finish();
      if (!final) throw new ProviderError("protocol", "the stream ended without its final event");
      served.span.end(answered(final));
      told(true);
      resolveResult(await charger.charge(target, adapter, final, attempts, context, call, startedMs));
    } catch (error) {
      failed = true;
      served.finish();
      delivered.addUnsent(served.unsentTokens());
      await charger.chargeEstimate(target, adapter, delivered, attempts, context, call, startedMs);
      reportIfUnexpected(deps, error, new AbortController().signal, context, target);
      // Cancelled by the caller mid-stream: no failure of the provider's (see Router#serve).
      const failure = context.signal?.aborted
        ? new LlmError("cancelled", "the call was cancelled", false)
        : error instanceof ProviderError
          ? error
          : fetchFailure(error, new AbortController().signal);
      served.span.end({
        error: {
          status: failure instanceof ProviderError ? failure.status : undefined,
          code: failure instanceof ProviderError ? failure.code : failure.kind,
        },
      });
      if (!(failure instanceof ProviderError)) told(true);
      else {
        // As for a failed attempt (see Router#serve): a refusal in the stream (a 400 that vLLM or Anthropic sends as an
        // error event) says nothing of the provider's health; counted, five such streams opened its breaker.
        // So is a stall past a wait the call's deadline shortened, within the provider's attempt timeout.
        const cutByDeadline = failure.failure === "timeout" && served.waitCutByDeadline;
        const failureClass = classifyFailure(failure);
        if (failureClass.countsForBreaker && !cutByDeadline) told(false, failure.code);
        else if (!outcomeTold) {
          outcomeTold = true;
          if (served.holdsTrial) deps.breaker.releaseTrial(targetKey(target));
        }
        // The provider failed this call as surely as a failed attempt does, and is told the same way; a stream
        // that has started is never retried or failed over, since the caller already has part of the answer.
        tellFailedAttempt(deps, context, { target, simulated: adapter.simulated, retry }, failure, failureClass, {
          retryInMs: null,
          fallbackTriggered: false,
          midStream: true,
        });
      }
      // The caller reads its message in the stream's error chunk: in the words a failed call's problem uses,
      // which tell a rate limit of the deployment's account by status and code, not the provider's words.
      const forCaller =
        failure instanceof ProviderError
          ? new ProviderError(failure.failure, describeFailure(failure), {
              status: failure.status,
              retryAfterMs: failure.retryAfterMs,
              code: failure.code,
            })
          : failure;
      rejectResult(forCaller);
      throw forCaller;
    } finally {
      served.finish();
      if (!final && !failed) {
        // The consumer stopped early (the client went away): stop the provider, and charge what it did.
        served.span.end({ error: { code: "abandoned" } });
        told(true);
        await served.value.iterator.return?.().catch(() => {});
        delivered.addUnsent(served.unsentTokens());
        await charger.chargeEstimate(target, adapter, delivered, attempts, context, call, startedMs);
        rejectResult(new LlmError("cancelled", "the stream was abandoned before it ended", false));
      }
    }
  }
  return {
    provider: target.provider,
    model: modelName(target),
    simulated: adapter.simulated,
    attempts,
    deltas: started(deltas()),
    result,
  };
}
