import type { WorkspaceBudgets } from "../db/schema.ts";
import { AttemptSpan } from "../observability/llm-spans.ts";
import { AttemptClock, sleepMs } from "./attempt.ts";
import { answerThatFits, type BudgetedCall, coverUnfinished } from "./budget-room.ts";
import { CallCharger, CancelledInFlight, type UnfinishedAttempt } from "./charging.ts";
import {
  BudgetExhaustedError,
  chainModelMissing,
  classifyFailure,
  describeFailure,
  FailureTally,
  fallbackReason,
  noConfiguredProvider,
} from "./errors.ts";
import {
  type AdapterCall,
  type AdapterResult,
  fetchFailure,
  type ProviderAdapter,
  ProviderError,
  type StreamEvent,
} from "./provider.ts";
import { backoffDelayMs, MAX_DELAY_MS } from "./retry.ts";
import type { RoutedStream, RouterDeps } from "./router-deps.ts";
import {
  LatencyTracker,
  modelName,
  planTargets,
  type RouteTarget,
  targetCostUsd,
  targetKey,
  targetPrice,
} from "./routing.ts";
import {
  DeliveredText,
  estimatePromptTokens,
  MAX_SAFE_ANSWER_CAP_TOKENS,
  UNBOUNDED_ANSWER_CEILING_TOKENS,
} from "./tokens.ts";
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
 */

const DEFAULT_ATTEMPT_TIMEOUT_MS = 60_000;
const DEFAULT_DEADLINE_MS = 180_000;
const DEFAULT_MAX_ATTEMPTS_PER_TARGET = 3;
/** A retry is not worth starting with less time than this left. */
const MIN_ATTEMPT_MS = 250;
/**
 * The longest a model may take to write one token of its answer (thinking included), as Anthropic's SDKs reckon a
 * whole answer's time: an hour for 128,000 tokens. An answer whose max_tokens takes longer than the attempt
 * timeout at that pace is asked as a stream (see #serve).
 */
const WRITE_MS_PER_TOKEN = 3_600_000 / 128_000;

const sharedLatency = new LatencyTracker();

/** A prepared call: its targets and deadline, with what charging it and its budgets need (BudgetedCall). */
interface PreparedCall extends BudgetedCall {
  deadlineMs: number;
}

interface Served<T> {
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
   * first delta proved the target, see chatStream: then false).
   */
  holdsTrial: boolean;
  /** The call's deadline shortened the attempt's wait below the attempt timeout (see cutByDeadline in #serve). */
  waitCutByDeadline: boolean;
  /** The serving attempt's trace span, ended with its usage when the answer is whole (a stream's at its end). */
  span: AttemptSpan;
}

/** What an attempt's span is told of an answer. */
function answered(result: AdapterResult) {
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

export class Router implements LlmRouter {
  readonly #deps: RouterDeps;
  readonly #now: () => number;
  readonly #sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  readonly #latency: LatencyTracker;
  readonly #charger: CallCharger;

  constructor(deps: RouterDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
    this.#sleep = deps.sleep ?? sleepMs;
    this.#latency = deps.latency ?? sharedLatency;
    this.#charger = new CallCharger(deps, this.#now);
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
    const call = await this.#prepare(request, context);
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
    const call = await this.#prepare(request, context);
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
    // A streamed trial proves the target answers with its first delta: told then, rather than at the stream's end,
    // other calls use the target again while the answer runs (a long one kept them off it for minutes, and past
    // trialTimeoutMs a second trial was granted while it still streamed). Its end is then an ordinary call's outcome.
    const first = served.value.first;
    if (served.holdsTrial && !first.done && first.value.type === "delta") {
      this.#deps.breaker.proveTrial(targetKey(served.target), {
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
    const router = this;
    const { target, adapter, attempts, retry } = served;
    // A stream's one outcome for its breaker, told when it ends (see #serve): a failure of the provider's, or
    // a success (it answered whole, or was answering when its caller stopped or left).
    let outcomeTold = false;
    const told = (ok: boolean, error?: string) => {
      if (!outcomeTold) {
        router.#deps.breaker.record(
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
        resolveResult(await router.#charger.charge(target, adapter, final, attempts, context, call, startedMs));
      } catch (error) {
        failed = true;
        served.finish();
        delivered.addUnsent(served.unsentTokens());
        await router.#charger.chargeEstimate(target, adapter, delivered, attempts, context, call, startedMs);
        router.#reportIfUnexpected(error, new AbortController().signal, context, target);
        // Cancelled by the caller mid-stream: no failure of the provider's (see #serve).
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
          // As for a failed attempt (see #serve): a refusal in the stream (a 400 that vLLM or Anthropic sends as an
          // error event) says nothing of the provider's health; counted, five such streams opened its breaker.
          // So is a stall past a wait the call's deadline shortened, within the provider's attempt timeout.
          const cutByDeadline = failure.failure === "timeout" && served.waitCutByDeadline;
          if (classifyFailure(failure).countsForBreaker && !cutByDeadline) told(false, failure.code);
          else if (!outcomeTold) {
            outcomeTold = true;
            if (served.holdsTrial) router.#deps.breaker.releaseTrial(targetKey(target));
          }
          // The provider failed this call as surely as a failed attempt does, and is told the same way; a stream
          // that has started is never retried or failed over, since the caller already has part of the answer.
          // Logged as #serve logs a failed attempt: the route's own line says the stream failed, not at which
          // provider and model, so a provider that cut streams short was named only in the event.
          router.#deps.logger.warn("llm attempt failed", {
            provider: target.provider,
            model: modelName(target),
            status: failure.status,
            code: failure.code,
            message: failure.message,
            ...(failure.providerRequestId !== undefined ? { provider_request_id: failure.providerRequestId } : {}),
            retry,
            retry_in_ms: null,
            mid_stream: true,
          });
          router.#deps.events.providerError(context, {
            provider: target.provider,
            model: modelName(target),
            error_type: classifyFailure(failure).eventType,
            error_code: failure.code,
            retry_count: retry,
            fallback_triggered: false,
            http_status: failure.status ?? null,
            simulated: adapter.simulated,
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
          await router.#charger.chargeEstimate(target, adapter, delivered, attempts, context, call, startedMs);
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

  async #prepare(request: ChatRequest, context: CallContext): Promise<PreparedCall> {
    if (!Array.isArray(request.messages) || request.messages.length === 0) {
      throw new LlmError("invalid_request", "a chat needs at least one message", false);
    }
    if (!context.workspaceId || !context.chargeKey) {
      throw new LlmError("invalid_request", "a call needs a workspace and a charge key", false);
    }
    if (context.signal?.aborted) throw new LlmError("cancelled", "the call was cancelled before it started", false);
    const settings = await this.#deps.settings(context.workspaceId);
    const promptTokens = estimatePromptTokens(request.messages, request.tools);
    const planned = planTargets({
      strategy: settings.strategy,
      chain: settings.chain,
      request,
      estimatedPromptTokens: promptTokens,
      latency: this.#latency,
      random: this.#deps.random,
      providers: [...this.#deps.adapters.keys()],
    });
    const targets = planned.filter((target) => this.#deps.adapters.has(target.provider));
    if (targets.length < planned.length) {
      const missing = planned.filter((target) => !this.#deps.adapters.has(target.provider));
      warnSkippedOnce(this.#deps.logger, missing.map(targetKey));
      if (targets.length === 0) {
        throw noConfiguredProvider(
          missing.map((target) => target.provider),
          settings.defaultChain === true,
        );
      }
    }
    // A call reserves the most it may spend: its prompt and its max_tokens (or the longest answer a call without
    // one is taken to give), at the dearest target it may end up on. Calls at once then never spend more than a
    // budget has left; near its limit, where the room cannot hold that, the call's answer is cut to fit.
    const completionTokens =
      request.max_tokens === undefined
        ? this.#longestUnboundedAnswer(targets)
        : this.#longestBoundedAnswer(targets, request.max_tokens);
    const mostSpent = (answerTokens: number) => ({
      tokens: promptTokens + answerTokens,
      costUsd: Math.max(
        ...targets.map((target) =>
          targetCostUsd(target, { prompt_tokens: promptTokens, completion_tokens: answerTokens }),
        ),
      ),
    });
    // Without max_tokens, a call cut near a limit gets MAX_SAFE_ANSWER_CAP_TOKENS at most: it need not hold all
    // the room, and calls alongside may share what is left.
    const cutsToSafeCap = request.max_tokens === undefined && completionTokens > MAX_SAFE_ANSWER_CAP_TOKENS;
    await this.#charger.settled(context.workspaceId);
    const reservation = await this.#deps.budgets.reserve(
      {
        workspaceId: context.workspaceId,
        chargeKey: context.chargeKey,
        budgets: settings.budgets,
        ...mostSpent(completionTokens),
        ...(cutsToSafeCap ? { ifCut: mostSpent(MAX_SAFE_ANSWER_CAP_TOKENS) } : {}),
      },
      context,
    );
    const answerCapTokens = reservation.nearLimit
      ? Math.min(
          answerThatFits(reservation.nearLimit, promptTokens, targets),
          request.max_tokens ?? MAX_SAFE_ANSWER_CAP_TOKENS,
        )
      : undefined;
    // As the limiter holds it (BudgetBook.reserve): near a limit, the cut call's amounts or all the room, if less.
    const asked =
      cutsToSafeCap && reservation.nearLimit ? mostSpent(MAX_SAFE_ANSWER_CAP_TOKENS) : mostSpent(completionTokens);
    const room = reservation.nearLimit;
    const held = {
      tokens: limitsTokens(settings.budgets) ? Math.min(asked.tokens, room?.tokens ?? Number.POSITIVE_INFINITY) : null,
      costUsd: limitsCost(settings.budgets) ? Math.min(asked.costUsd, room?.costUsd ?? Number.POSITIVE_INFINITY) : null,
    };
    return {
      targets,
      promptTokens,
      ...(answerCapTokens !== undefined && answerCapTokens !== request.max_tokens ? { answerCapTokens } : {}),
      budgets: settings.budgets,
      hold: reservation.hold,
      held,
      deadlineMs: context.deadlineMs ?? this.#now() + (this.#deps.defaultDeadlineMs ?? DEFAULT_DEADLINE_MS),
      unfinished: [],
      unfinishedHolds: [],
    };
  }

  /**
   * The most tokens of answer a call with this max_tokens may get from any of these targets: each is sent no more
   * than its model's ceiling (#payload), so a max_tokens above every ceiling held whole would hold budget no
   * target can spend, and refuse calls alongside (budget_held) that the budget had room for.
   */
  #longestBoundedAnswer(targets: RouteTarget[], maxTokens: number): number {
    let longest = 0;
    for (const target of targets) {
      longest = Math.max(longest, Math.min(maxTokens, targetPrice(target).maxOutputTokens ?? maxTokens));
    }
    return longest;
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

  /** The most tokens of answer a call without max_tokens may get from any of these targets. */
  #longestUnboundedAnswer(targets: RouteTarget[]): number {
    let longest = 0;
    for (const target of targets) {
      const providerDefault = this.#deps.adapters.get(target.provider)?.defaultMaxTokens;
      const ceiling = providerDefault ?? targetPrice(target).maxOutputTokens ?? UNBOUNDED_ANSWER_CEILING_TOKENS;
      longest = Math.max(longest, ceiling);
    }
    return longest;
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

    for (const [index, target] of candidates.entries()) {
      const key = targetKey(target);
      const adapter = this.#deps.adapters.get(target.provider)!;
      const halfOpen = !allOpen && states.get(key) === "half_open";
      // This call's attempts are the target's one trial: an end that records no outcome frees it (see below).
      // False again once a whole answer read from a stream proved the target with its first delta (see answered).
      let holdsTrial = halfOpen && (await breaker.tryTrial(key));
      // Cancelled, or out of time, while the shared breaker was asked: the trial it granted is freed at once, not
      // held by a call that will make no attempt.
      const outOfTime = this.#now() >= deadlineMs;
      if (holdsTrial && (context.signal?.aborted || outOfTime)) breaker.releaseTrial(key);
      const trialHeldElsewhere = halfOpen && !holdsTrial;
      // Another call holds this target's one trial: skip it, unless it is the last and nothing was tried,
      // since failing without a single call helps nobody (as when every target is open).
      const lastChance = attempts === 0 && index === candidates.length - 1;
      if (trialHeldElsewhere && !lastChance) {
        previous ??= { target, reason: "error_rate" };
        continue;
      }
      // Out of time, no attempt follows (see below): told, the fallback event named a target never tried.
      if (outOfTime) throw tally.final(true);
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
                  // Its first delta proves the trial, as a caller's stream's does (see chatStream): held to the
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
          this.#reportIfUnexpected(caught, clock.signal, context, target);
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
          // Past the call's deadline no next target is tried (see the loop's start): told as a fallback, the event
          // said one was triggered, and none followed.
          const hasNext = index < candidates.length - 1 && !endsCall && timeLeftMs > 0;
          // Sleeping past the deadline, or through a Retry-After longer than our own backoff would ever wait while
          // another target could answer now, is worse than trying the next target now.
          const retryHere =
            failure.retryable &&
            retry + 1 < maxAttempts &&
            waitMs + MIN_ATTEMPT_MS <= timeLeftMs &&
            !(hasNext && waitMs > MAX_DELAY_MS) &&
            breaker.state(key) !== "open";
          // Another attempt may spend the whole reservation again: what this one spent must first find room in the
          // budget, or the call ends here (told with the attempt's event: no retry, no fallback).
          const outOfBudget =
            unfinishedAttempt && !endsCall && (retryHere || hasNext)
              ? await coverUnfinished(this.#deps.budgets, call, unfinishedAttempt, request, context, this.#now())
              : undefined;
          const retriesHere = retryHere && !outOfBudget;
          this.#deps.logger.warn("llm attempt failed", {
            provider: target.provider,
            model: modelName(target),
            status: error.status,
            code: error.code,
            // What a code alone does not tell apart ("connection": a refused port, a header the runtime would not
            // send, a reset), for the operator.
            message: error.message,
            // The provider's own id for the request, which its support asks for (an unexplained 500).
            ...(error.providerRequestId !== undefined ? { provider_request_id: error.providerRequestId } : {}),
            retry,
            retry_in_ms: retriesHere ? waitMs : null,
          });
          events.providerError(context, {
            provider: target.provider,
            model: modelName(target),
            error_type: failure.eventType,
            error_code: error.code,
            retry_count: retry,
            fallback_triggered: !retryHere && hasNext && !outOfBudget,
            http_status: error.status ?? null,
            simulated: adapter.simulated,
          });
          if (endsCall) throw tally.final(false);
          if (outOfBudget) throw outOfBudget;
          if (!retryHere) {
            previous = { target, reason: fallbackReason(failure) };
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

  /**
   * An attempt's error that no adapter raised as the provider's (every failure of a provider, its connection and
   * its answer is a ProviderError), nor an abort: a bug in the call path. It goes on as a failed connection (the
   * call fails over, as on a broken answer), but told only as that, in a warning, it never reached Sentry.
   */
  #reportIfUnexpected(caught: unknown, attemptSignal: AbortSignal, context: CallContext, target: RouteTarget): void {
    if (caught instanceof ProviderError || caught instanceof LlmError) return;
    if (attemptSignal.aborted || context.signal?.aborted) return;
    this.#deps.logger.error("llm attempt failed unexpectedly", {
      provider: target.provider,
      model: modelName(target),
      error: caught,
    });
    this.#deps.report?.(caught, context);
  }

  #checkCancelled(context: CallContext): void {
    if (context.signal?.aborted) throw new LlmError("cancelled", "the call was cancelled", false);
  }
}

/** The chains' unconfigured entries told so far in this isolate: told once each, not at every call they are skipped. */
const skippedTold = new Set<string>();
const MAX_SKIPPED_TOLD = 1_000;

function warnSkippedOnce(logger: RouterDeps["logger"], skipped: string[]): void {
  const key = skipped.join(",");
  if (skippedTold.has(key)) return;
  if (skippedTold.size >= MAX_SKIPPED_TOLD) skippedTold.clear();
  skippedTold.add(key);
  logger.warn("routing chain names providers that are not configured here; skipped", { skipped });
}

/** The budgets limit tokens (a day's or a month's). */
function limitsTokens(budgets: WorkspaceBudgets | null): boolean {
  return budgets !== null && (budgets.daily_tokens !== null || budgets.monthly_tokens !== null);
}

/** The budgets limit dollars (a day's or a month's). */
function limitsCost(budgets: WorkspaceBudgets | null): boolean {
  return budgets !== null && (budgets.daily_cost_usd !== null || budgets.monthly_cost_usd !== null);
}

export { AttemptClock, hasAnyBudget, sleepMs } from "./attempt.ts";
export type * from "./router-deps.ts";
export { BudgetExhaustedError };
