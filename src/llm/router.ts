import { sleepMs } from "../lib/sleep.ts";
import { AttemptSpan } from "../observability/llm-spans.ts";
import { AttemptClock, reportIfUnexpected, tellFailedAttempt } from "./attempt.ts";
import { coverUnfinished } from "./budget-room.ts";
import { type CallPlanner, type PreparedCall, prepareCall } from "./call-plan.ts";
import { CallCharger, CancelledInFlight, type UnfinishedAttempt } from "./charging.ts";
import {
  BudgetExhaustedError,
  chainModelMissing,
  classifyFailure,
  describeFailure,
  FailureTally,
  fallbackReason,
} from "./errors.ts";
import { type AdapterCall, fetchFailure, type ProviderAdapter, type StreamEvent } from "./provider.ts";
import { backoffDelayMs, MAX_DELAY_MS } from "./retry.ts";
import { answered, routedStream, type Served } from "./routed-stream.ts";
import type { RoutedStream, RouterDeps } from "./router-deps.ts";
import { LatencyTracker, modelName, type RouteTarget, targetKey, targetPrice } from "./routing.ts";
import { DeliveredText, UNBOUNDED_ANSWER_CEILING_TOKENS } from "./tokens.ts";
import { type CallContext, type ChatRequest, type ChatResult, LlmError, type LlmRouter } from "./types.ts";
import { wholeFromStream } from "./whole-from-stream.ts";

/**
 * The provider router: plans the targets for a call, then tries them in
 * order with retries (backoff with full jitter, or the provider's own
 * Retry-After), per-attempt timeouts, an overall deadline and cancellation,
 * skipping targets whose circuit breaker is open. Before the call it reserves
 * the most the call may spend against the workspace's budgets; after, it charges what the
 * provider reported, once per `chargeKey`. Storage, events and the breaker's
 * shared state are behind the small interfaces of router-deps.ts, so tests drive the
 * router with fakes or with the real bindings alike.
 *
 * Here: the attempts (#serve). The plan and the reservation before them are
 * call-plan.ts; a caller's stream once it has begun, routed-stream.ts; the
 * charge after, charging.ts.
 */

const DEFAULT_ATTEMPT_TIMEOUT_MS = 60_000;
const DEFAULT_MAX_ATTEMPTS_PER_TARGET = 3;
/** A retry is not worth starting with less time than this left. */
const MIN_ATTEMPT_MS = 250;
/**
 * The longest a model may take to write one token of its answer (thinking included), as Anthropic's SDKs reckon a
 * whole answer's time: an hour for 128,000 tokens. An answer whose max_tokens takes longer than the attempt
 * timeout at that pace is asked as a stream (see #serve).
 */
const WRITE_MS_PER_TOKEN = 3_600_000 / 128_000;
/**
 * A half-open trial's lease beyond its attempt's longest wait (see #trialLeaseMs): the trial's answer from the
 * shared breaker (up to a second), and its outcome's way back there, over clocks that differ a little.
 */
const TRIAL_LEASE_SLACK_MS = 10_000;

const sharedLatency = new LatencyTracker();

export class Router implements LlmRouter {
  readonly #deps: RouterDeps;
  readonly #now: () => number;
  readonly #sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  readonly #latency: LatencyTracker;
  readonly #charger: CallCharger;
  readonly #planner: CallPlanner;

  constructor(deps: RouterDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
    this.#sleep = deps.sleep ?? sleepMs;
    this.#latency = deps.latency ?? sharedLatency;
    this.#charger = new CallCharger(deps, this.#now);
    this.#planner = { deps, latency: this.#latency, charger: this.#charger, now: this.#now };
  }

  /**
   * A whole answer. One whose max_tokens (or, without one, the model's longest answer) may take the model longer
   * to write than the attempt timeout, and every one with `context.wholeFromStream`, is asked as a stream and told
   * whole: each event restarts the attempt's clock, so a long answer is not cut and asked again (three times, each
   * charged its prompt and counted against the provider's breaker), while a provider that never answers is still
   * given up at the attempt timeout. It is retried and failed over as a whole answer is: its caller has none of it
   * until the end.
   */
  async chat(request: ChatRequest, context: CallContext): Promise<ChatResult> {
    const call = await prepareCall(this.#planner, request, context);
    const startedMs = this.#now();
    try {
      const served = await this.#serve(
        call,
        request,
        context,
        (adapter, payload, attempt) =>
          attempt.streamed
            ? // Streamed by the router's choice (or the agent runtime's, for the same long answers), never the
              // caller's: a server that refuses to stream is asked whole.
              wholeFromStream(adapter, payload, attempt, this.#deps.logger)
            : adapter.complete(payload),
        { stream: false, wholeFromStream: context.wholeFromStream === true },
      );
      served.span.end(answered(served.value));
      return await this.#charger.charge(
        served.target,
        served.adapter,
        served.value,
        served.attempts,
        context,
        call,
        startedMs,
      );
    } catch (error) {
      await this.#charger.settleUnserved(error, context, call, startedMs);
      throw error;
    }
  }

  /** Like chat, streamed: retries and fallback happen until the first delta; after that a failure ends the stream. */
  async chatStream(request: ChatRequest, context: CallContext): Promise<RoutedStream> {
    const call = await prepareCall(this.#planner, request, context);
    const startedMs = this.#now();
    let served: Served<{
      iterator: AsyncIterator<StreamEvent>;
      first: IteratorResult<StreamEvent>;
    }>;
    try {
      served = await this.#serve(
        call,
        request,
        context,
        async (adapter, payload) => {
          const iterator = adapter.stream(payload)[Symbol.asyncIterator]();
          const first = await iterator.next();
          return { iterator, first };
        },
        // Each event restarts the clock: a stream may run long, but not stall.
        { stream: true },
      );
    } catch (error) {
      await this.#charger.settleUnserved(error, context, call, startedMs);
      throw error;
    }
    return routedStream(this.#deps, this.#charger, served, call, context, startedMs);
  }

  /** How long the target's model may take to write the longest answer this attempt asks of it (WRITE_MS_PER_TOKEN). */
  #longestWriteMs(adapter: ProviderAdapter, target: RouteTarget, maxTokens: number | undefined): number {
    // The simulated provider writes its answer at once, however long: asked as a stream for its length, a whole
    // answer broke at its stream fault (cut_after_chunks), meant for the caller's streams.
    if (adapter.simulated) return 0;
    const longest =
      maxTokens ?? adapter.defaultMaxTokens ?? targetPrice(target).maxOutputTokens ?? UNBOUNDED_ANSWER_CEILING_TOKENS;
    return longest * WRITE_MS_PER_TOKEN;
  }

  /**
   * How long a half-open trial of this target holds its slot: as long as its attempt may wait for the answer to
   * begin (the attempt timeout; for a model silent while it thinks, or a server that will not stream, as long as the
   * answer may take to write), within the call's deadline, plus TRIAL_LEASE_SLACK_MS. The trial ends by then: at
   * its outcome, or at its first delta (proveTrial). Held a fixed 60 s, a second trial was granted while a reasoning
   * model's first one still ran, or under an LLM_ATTEMPT_TIMEOUT_MS above 60 s.
   */
  #trialLeaseMs(adapter: ProviderAdapter, target: RouteTarget, request: ChatRequest, call: PreparedCall): number {
    const attemptTimeoutMs = this.#deps.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS;
    const writeMs = this.#longestWriteMs(adapter, target, this.#payload(request, target, call).max_tokens);
    const attemptMs = Math.min(Math.max(attemptTimeoutMs, writeMs), call.deadlineMs - this.#now());
    return Math.max(0, attemptMs) + TRIAL_LEASE_SLACK_MS;
  }

  async #serve<T>(
    call: PreparedCall,
    request: ChatRequest,
    context: CallContext,
    /**
     * `attempt.streamed`: the provider is asked for a stream, whose events restart the attempt's clock;
     * `attempt.answered` is told each delta of a whole answer read from one, what the provider wrote;
     * `attempt.askedWhole`, that it is asked whole after all (a server that will not stream): the attempt then waits
     * as long as the answer may take to write.
     */
    run: (
      adapter: ProviderAdapter,
      call: AdapterCall,
      attempt: { streamed: boolean; answered: (event: StreamEvent) => void; askedWhole: () => void },
    ) => Promise<T>,
    /** `wholeFromStream`: a whole answer is asked as a stream however short its max_tokens (see chat). */
    options: { stream: boolean; wholeFromStream?: boolean },
  ): Promise<Served<T>> {
    const { targets, deadlineMs } = call;
    const { breaker, events } = this.#deps;
    const maxAttempts = this.#deps.maxAttemptsPerTarget ?? DEFAULT_MAX_ATTEMPTS_PER_TARGET;
    const fetching = breaker.known(targets.map(targetKey));
    if (fetching) await fetching;
    const states = new Map(targets.map((target) => [targetKey(target), breaker.state(targetKey(target))]));
    const usable = targets.filter((target) => states.get(targetKey(target)) !== "open");
    // Every target open: try them anyway; failing without a single call helps nobody.
    const allOpen = usable.length === 0;
    const candidates = allOpen ? targets : usable;
    const tally = new FailureTally();
    let attempts = 0;
    // The target this call falls back from, and why, told in `llm.provider.fallback` when the next is tried. A
    // first choice whose breaker is open (or whose half-open trial another call holds) is passed over for its
    // error rate: without the event, a call served by the fallback for that reason looked like no fallback at all.
    let previous: { target: RouteTarget; reason: ReturnType<typeof fallbackReason> } | undefined =
      !allOpen && states.get(targetKey(targets[0])) === "open"
        ? { target: targets[0], reason: "error_rate" }
        : undefined;
    /**
     * The first candidate from `from` on that this call will try, and whether it holds that target's half-open
     * trial: one whose trial another call holds is passed over, unless it is the last and nothing was tried, since
     * failing without a single call helps nobody (as when every target is open). Undefined: none is left. Asked
     * before a failure decides between retrying and failing over, not after: a call that gave up a Retry-After it
     * could wait out, for a target whose trial it then could not have, failed with nothing tried after.
     */
    const nextTried = async (from: number): Promise<{ index: number; holdsTrial: boolean } | undefined> => {
      for (let index = from; index < candidates.length; index++) {
        const target = candidates[index];
        const key = targetKey(target);
        if (allOpen || states.get(key) !== "half_open") return { index, holdsTrial: false };
        const adapter = this.#deps.adapters.get(target.provider)!;
        const leaseMs = this.#trialLeaseMs(adapter, target, request, call);
        if (await breaker.tryTrial(key, leaseMs)) return { index, holdsTrial: true };
        if (attempts === 0 && index === candidates.length - 1) return { index, holdsTrial: false };
        // Passed over before any attempt: the call falls back from it. After one, from the target that failed.
        if (attempts === 0) previous ??= { target, reason: "error_rate" };
      }
      return undefined;
    };

    let turn = await nextTried(0);
    while (turn) {
      const { index } = turn;
      const target = candidates[index];
      const key = targetKey(target);
      const adapter = this.#deps.adapters.get(target.provider)!;
      // This call's attempts are the target's one trial: an end that records no outcome frees it (see below).
      // False again once a whole answer read from a stream proved the target with its first delta (see answered).
      let holdsTrial = turn.holdsTrial;
      turn = undefined;
      // Cancelled, or out of time, while the shared breaker was asked: the trial it granted is freed at once, not
      // held by a call that will make no attempt.
      const outOfTime = this.#now() >= deadlineMs;
      if (holdsTrial && (context.signal?.aborted || outOfTime)) breaker.releaseTrial(key);
      // Out of time, no attempt follows (see below): told, the fallback event named a target never tried. So for a
      // call cancelled before it (its client gone while the call was planned, or between two targets).
      if (outOfTime) throw tally.final(true);
      this.#checkCancelled(context);
      if (previous) {
        events.fallback(context, {
          from_provider: previous.target.provider,
          from_model: modelName(previous.target),
          to_provider: target.provider,
          to_model: modelName(target),
          reason: previous.reason,
          simulated: adapter.simulated,
        });
      }
      for (let retry = 0; retry < maxAttempts; retry++) {
        this.#checkCancelled(context);
        if (this.#now() >= deadlineMs) throw tally.final(true);
        attempts++;
        const attemptTimeoutMs = this.#deps.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS;
        const payload = this.#payload(request, target, call);
        const writeMs = this.#longestWriteMs(adapter, target, payload.max_tokens);
        const streamed = options.stream || options.wholeFromStream === true || writeMs > attemptTimeoutMs;
        // A model that sends nothing while it thinks is silent for as long as its answer may take to write: cut at
        // the attempt timeout, a long think was asked again from the start, three times, then failed.
        const firstWaitMs = adapter.silentWhileThinking?.(target.model)
          ? Math.max(attemptTimeoutMs, writeMs)
          : attemptTimeoutMs;
        const timeLeftMs = deadlineMs - this.#now();
        // The call's deadline gave the provider less than the attempt timeout to show life (see cutByDeadline
        // below). A thinker's longer first wait cut by the deadline is not that: silent past the attempt timeout,
        // it may be thinking or hung (chat completions tell them apart no way), and counted as neither, a provider
        // hanging every such call never opened its breaker, each call waiting out its whole deadline.
        const waitCutByDeadline = timeLeftMs < attemptTimeoutMs;
        // A whole answer asked as a stream ends by the call's deadline, as one asked whole does: each event restarts
        // its wait, so it ran on past the deadline, the client's own timeout (X-Stainless-Timeout), while the SDK
        // asked it again, each charged in full. A caller's stream is not: it reads the answer as it comes.
        const deadlineStop =
          streamed && !options.stream ? AbortSignal.timeout(Math.max(1, Math.ceil(timeLeftMs))) : undefined;
        const parentSignal =
          deadlineStop && context.signal
            ? AbortSignal.any([context.signal, deadlineStop])
            : (deadlineStop ?? context.signal);
        /** A delta of the answer came: stopped at the deadline after it, the provider was writing, not failing. */
        let answerBegun = false;
        const clock = new AttemptClock(Math.min(attemptTimeoutMs, timeLeftMs), parentSignal, {
          resettable: streamed,
          firstWaitMs: Math.min(firstWaitMs, timeLeftMs),
        });
        const attemptStartedMs = this.#now();
        let unsentTokens = 0;
        /** A whole answer's deltas read from its stream so far: written, and billed, if the attempt goes on to fail. */
        const written = new DeliveredText();
        const span = new AttemptSpan({
          provider: target.provider,
          model: modelName(target),
          attempt: attempts,
          retry,
          stream: options.stream,
          simulated: adapter.simulated,
        });
        try {
          const value = await span.run(() =>
            run(
              adapter,
              {
                ...payload,
                ...(context.requestId !== undefined ? { clientRequestId: context.requestId } : {}),
                signal: clock.signal,
                onProgress: (tokens) => {
                  clock.alive();
                  unsentTokens += tokens ?? 0;
                },
              },
              {
                streamed,
                answered: (event) => {
                  // Its first delta proves the trial, as a caller's stream's does (see routedStream): held to the
                  // answer's end, a long one kept every other call off a target that was answering, for minutes.
                  if (holdsTrial && !answerBegun) {
                    breaker.proveTrial(key, { startedAtMs: attemptStartedMs, answeredAtMs: this.#now() });
                    holdsTrial = false;
                  }
                  answerBegun = true;
                  written.add(event);
                  clock.touch();
                },
                askedWhole: () => clock.waitUpTo(Math.min(writeMs, deadlineMs - this.#now())),
              },
            ),
          );
          // A stream's outcome is told at its end (chatStream): told at its first event as well, a stream that
          // broke mid-answer counted as a success and a failure, so providers that cut every stream short never
          // had five failures in a row, and GET /api/v1/providers read each such call as two at 50%.
          if (!options.stream) breaker.record(key, true, undefined, { startedAtMs: attemptStartedMs });
          this.#latency.observe(key, this.#now() - attemptStartedMs);
          return {
            value,
            target,
            adapter,
            attempts,
            retry,
            finish: () => clock.finish(),
            touch: () => clock.touch(),
            pause: () => clock.pause(),
            unsentTokens: () => unsentTokens,
            span,
            startedAtMs: attemptStartedMs,
            answeredAtMs: this.#now(),
            holdsTrial,
            waitCutByDeadline,
          };
        } catch (caught) {
          clock.finish();
          reportIfUnexpected(this.#deps, caught, clock.signal, context, target);
          const error = fetchFailure(caught, clock.signal);
          span.end({
            error: {
              status: error.status,
              code: context.signal?.aborted ? "cancelled" : error.code,
              providerRequestId: error.providerRequestId,
            },
          });
          // The caller's cancellation is no failure of the provider's, whatever its reason (AbortSignal.timeout's
          // reads like an attempt's own timeout): no retry, no breaker record, no provider error event.
          const writtenTokens = written.estimatedTokens() + Math.ceil(unsentTokens);
          if (context.signal?.aborted || error.failure === "cancelled") {
            if (holdsTrial) breaker.releaseTrial(key);
            throw new CancelledInFlight(target, adapter, attempts, {
              tokens: writtenTokens,
              ...(written.promptTokens !== undefined ? { promptTokens: written.promptTokens } : {}),
            });
          }
          // A failed attempt's time says how slow the target is, never how fast (see LatencyTracker.observeFailure):
          // measured by its successes alone, a target whose attempts timed out stayed first for the latency strategy.
          this.#latency.observeFailure(key, this.#now() - attemptStartedMs, error.failure === "timeout");
          // Timed out, the provider bills the prompt it read, and what it wrote (a whole answer read from a stream
          // that stalled): charged its prompt alone, a long answer that stalled near its end cost next to nothing.
          // Broken after it began writing (the connection dropped, an error event in the stream), it bills the same,
          // and the retry is billed again: charged nothing, a long answer that broke near its end was free.
          const unfinished =
            error.code === "timeout" && clock.signal.aborted
              ? "timed_out"
              : answerBegun || writtenTokens > 0
                ? "interrupted"
                : undefined;
          const failure = chainModelMissing(classifyFailure(error), error, target);
          let unfinishedAttempt: UnfinishedAttempt | undefined;
          if (unfinished) {
            unfinishedAttempt = {
              kind: unfinished,
              target,
              adapter,
              attempt: attempts,
              durationMs: this.#now() - attemptStartedMs,
              completionTokens: writtenTokens,
              ...(written.promptTokens !== undefined ? { promptTokens: written.promptTokens } : {}),
              error: { code: error.code, message: describeFailure(error, failure) },
            };
            call.unfinished.push(unfinishedAttempt);
          }
          // Cut short by the call's own deadline while the provider was still within its attempt timeout, or while
          // it wrote a whole answer's deltas: our hurry, not its failure (a task near its end would otherwise count
          // against a merely slow provider). Silent until then, a thinker counts (see waitCutByDeadline).
          const cutByDeadline =
            error.code === "timeout" &&
            clock.signal.aborted &&
            (waitCutByDeadline || (deadlineStop?.aborted === true && answerBegun));
          if (failure.countsForBreaker && !cutByDeadline) {
            breaker.record(key, false, error.code, { startedAtMs: attemptStartedMs, trial: holdsTrial });
          }
          // A trial answered 400 or 401 (or cut by the deadline) says nothing of the provider's health: held on, it
          // kept every other call off the target until trialTimeoutMs, though the breaker had half-opened.
          else if (holdsTrial) breaker.releaseTrial(key);
          tally.add(target, retry, error, failure);
          const waitMs = error.retryAfterMs ?? backoffDelayMs(retry, this.#deps.random);
          const timeLeftMs = deadlineMs - this.#now();
          const endsCall = failure.cause === "content_policy";
          const mayRetry =
            failure.retryable &&
            retry + 1 < maxAttempts &&
            waitMs + MIN_ATTEMPT_MS <= timeLeftMs &&
            breaker.state(key) !== "open";
          // The target a failover would try, asked (its half-open trial taken) only where the choice turns on it: a
          // retry within our own backoff's cap is made whatever follows. Past the call's deadline no next target is
          // tried (see the loop's start): told as a fallback, the event said one was triggered, and none followed.
          const failover =
            !endsCall && timeLeftMs > 0 && !(mayRetry && waitMs <= MAX_DELAY_MS)
              ? await nextTried(index + 1)
              : undefined;
          // Sleeping past the deadline, or through a Retry-After longer than our own backoff would ever wait while
          // another target could answer now, is worse than trying the next target now; with none to try (the rest
          // half-open, their trials held by other calls), waiting it out is the call's only answer.
          const retryHere = mayRetry && !(failover && waitMs > MAX_DELAY_MS);
          // Another attempt may spend the whole reservation again: what this one spent must first find room in the
          // budget, or the call ends here (told with the attempt's event: no retry, no fallback).
          const outOfBudget =
            unfinishedAttempt && !endsCall && (retryHere || failover)
              ? await coverUnfinished(this.#deps.budgets, call, unfinishedAttempt, request, context, this.#now())
              : undefined;
          const retriesHere = retryHere && !outOfBudget;
          tellFailedAttempt(this.#deps, context, { target, simulated: adapter.simulated, retry }, error, failure, {
            retryInMs: retriesHere ? waitMs : null,
            fallbackTriggered: !retryHere && failover !== undefined && !outOfBudget,
          });
          if (endsCall) throw tally.final(false);
          if (outOfBudget) {
            // The next target's trial, taken for a failover that will not happen, goes back at once.
            if (failover?.holdsTrial) breaker.releaseTrial(targetKey(candidates[failover.index]));
            throw outOfBudget;
          }
          if (!retryHere) {
            previous = { target, reason: fallbackReason(failure) };
            turn = failover;
            break;
          }
          try {
            await this.#sleep(waitMs, context.signal);
          } catch {
            throw new LlmError("cancelled", "the call was cancelled", false);
          }
        }
      }
    }
    throw tally.final(this.#now() >= deadlineMs);
  }

  #payload(request: ChatRequest, target: RouteTarget, call: PreparedCall): Omit<AdapterCall, "signal"> {
    const { model: _requested, tools, tool_choice, parallel_tool_calls, ...settings } = request;
    const withTools = tools !== undefined && tools.length > 0;
    // A limit above the model's longest answer asks for no more than that answer: sent as it came, the provider
    // refuses the call (Anthropic with a 400), so a fallback with a shorter ceiling than the first target could
    // never serve it.
    const maxTokens = call.answerCapTokens ?? request.max_tokens;
    const ceiling = targetPrice(target).maxOutputTokens;
    return {
      ...settings,
      ...(maxTokens !== undefined
        ? { max_tokens: ceiling === undefined ? maxTokens : Math.min(maxTokens, ceiling) }
        : {}),
      model: target.model,
      // Providers refuse a tool choice (or parallel_tool_calls) without tools.
      ...(withTools
        ? {
            tools,
            ...(tool_choice !== undefined ? { tool_choice } : {}),
            ...(parallel_tool_calls !== undefined ? { parallel_tool_calls } : {}),
          }
        : {}),
    };
  }

  #checkCancelled(context: CallContext): void {
    if (context.signal?.aborted) throw new LlmError("cancelled", "the call was cancelled", false);
  }
}

export { AttemptClock, hasAnyBudget } from "./attempt.ts";
export type * from "./router-deps.ts";
export { BudgetExhaustedError };
