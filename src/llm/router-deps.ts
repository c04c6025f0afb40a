import type { WorkspaceBudgets } from "../db/schema.ts";
import type { Logger } from "../lib/logger.ts";
import type { BudgetRoom } from "../limits/budget-types.ts";
import type { BreakerStateName } from "./breaker-core.ts";
import type { FailureClass } from "./errors.ts";
import type { ProviderAdapter, StreamEvent } from "./provider.ts";
import type { LatencyTracker, RouteTarget, Strategy } from "./routing.ts";
import type { CallContext, ChatResult, TokenUsage } from "./types.ts";

/**
 * What the router needs from the rest of the Worker, as small interfaces:
 * storage, events and the breaker's shared state. createLlmRouter wires the
 * real bindings; tests may wire fakes.
 */

export interface WorkspaceSettings {
  strategy: Strategy;
  chain: RouteTarget[];
  /** The chain is LLM_DEFAULT_CHAIN's: the workspace has set none of its own. */
  defaultChain?: boolean;
  budgets: WorkspaceBudgets | null;
}

/** What the breaker is told of the call behind an outcome, besides its result. */
export interface CallOutcome {
  /**
   * When the provider answered, if not now. A stream's success is told when it ends but dated when it began
   * answering: a stream begun before the breaker opened says nothing of the provider since.
   */
  answeredAtMs?: number;
  /**
   * When the attempt was sent: a failure sent before the breaker last closed is the outage's, not news; a success
   * sent before it opened does not close it.
   */
  startedAtMs?: number;
  /** The call held the target's half-open trial. */
  trial?: boolean;
}

export interface BreakerGate {
  /** Fetches the copies the local cache has never had (undefined: it has them all, nothing to wait for). */
  known(keys: readonly string[]): Promise<void> | undefined;
  /** From a local cache: no round trip. */
  state(key: string): BreakerStateName;
  /**
   * Half-open: asks the shared breaker for the single trial call, its slot held for `leaseMs` (how long its attempt
   * may run; at least the policy's trialTimeoutMs).
   */
  tryTrial(key: string, leaseMs?: number): Promise<boolean>;
  record(key: string, ok: boolean, error?: string, call?: CallOutcome): void;
  /** The trial tryTrial granted ended without a verdict (an outcome record ignores): the next call may have it. */
  releaseTrial(key: string): void;
  /**
   * The trial tryTrial granted, a stream, sent its first delta: the target answers, and its breaker closes. No
   * call's outcome: the stream's end is recorded later, once, as an ordinary call's (not the trial's).
   */
  proveTrial(key: string, call: CallOutcome): void;
}

export interface BudgetAmounts {
  workspaceId: string;
  chargeKey: string;
  /** See CallContext.chargeOnce. */
  once?: boolean;
  budgets: WorkspaceBudgets | null;
  /**
   * Settle only: the budgets in force as the call ends, which its charge's thresholds are judged against (absent:
   * `budgets`, those it reserved under). A budget raised while the call ran (the usual answer to an 80% alert, the
   * task that caused it still running) must not be told the old budget's steps, which then stay marked as told.
   */
  limitsNow?: WorkspaceBudgets | null;
  /** What reserve answered for this call, handed back to settle. */
  hold?: BudgetHold;
  tokens: number;
  costUsd: number;
  /** Reserve only: what the call spends at most with its answer cut near a limit (BudgetAmountsInput.ifCut). */
  ifCut?: { tokens: number; costUsd: number };
  /**
   * Reserve only: a hold beside a call's own, for what an unfinished attempt spent (UnfinishedHold in charging.ts).
   * Taken from the isolate's lease where it has room, but no lease is asked for with it: one would be sized by it.
   */
  beside?: boolean;
}

/** What reserve answered: the hold to hand back to settle, and near a limit the room the call must fit in. */
export interface Reservation {
  hold: BudgetHold;
  /** The room left, which the call's answer must be cut to fit (see ReserveResult.nearLimit). */
  nearLimit?: BudgetRoom;
}

/** The gate's own record of how a call was reserved (for instance, against a lease); the router only hands it back. */
export type BudgetHold = object | undefined;

export interface BudgetGate {
  /** Throws BudgetExhaustedError when a budget has nothing left. */
  reserve(amounts: BudgetAmounts, context: CallContext): Promise<Reservation>;
  /** Charges the actual amounts (0 releases the reservation) and reports threshold crossings. */
  settle(amounts: BudgetAmounts, context: CallContext): Promise<void>;
}

export interface UsageRecord {
  workspaceId: string;
  chargeKey: string;
  taskId: string | null;
  runId: string | null;
  requestId: string | null;
  provider: string;
  model: string;
  usage: TokenUsage;
  costUsd: number;
  simulated: boolean;
  /** The provider's figures never came: `usage` is an estimate (see usage_records.estimated). */
  estimated?: boolean;
  /**
   * The prompt of an attempt that timed out while the provider had the request (src/llm/charging.ts), not a
   * call: the daily sums count it in `timed_out_attempts`, not in `calls`.
   */
  timedOut?: boolean;
  /**
   * The prompt and written answer of an attempt that broke mid-answer (src/llm/charging.ts), not a call: the daily
   * sums count it in `interrupted_attempts`, not in `calls`.
   */
  interrupted?: boolean;
  latencyMs: number;
}

export interface UsageSink {
  /** Writes the usage row once per (workspace, chargeKey). */
  record(row: UsageRecord): Promise<void>;
}

export interface EventSink {
  providerError(context: CallContext, data: ProviderErrorData): void;
  fallback(context: CallContext, data: FallbackData): void;
}

export interface ProviderErrorData {
  provider: string;
  model: string;
  error_type: FailureClass["eventType"];
  error_code: string;
  retry_count: number;
  fallback_triggered: boolean;
  /** The provider's HTTP status; null when no answer came (a timeout, a failed connection). */
  http_status: number | null;
  simulated: boolean;
}

export interface FallbackData {
  from_provider: string;
  to_provider: string;
  from_model: string;
  to_model: string;
  reason: "rate_limit" | "error_rate" | "cost" | "performance";
  simulated: boolean;
}

export interface RouterDeps {
  adapters: ReadonlyMap<string, ProviderAdapter>;
  settings(workspaceId: string): Promise<WorkspaceSettings>;
  breaker: BreakerGate;
  budgets: BudgetGate;
  usage: UsageSink;
  events: EventSink;
  logger: Logger;
  waitUntil?: (promise: Promise<unknown>) => void;
  /**
   * An attempt's error that is no provider's failure: not a ProviderError (adapters turn every failure of the
   * provider's, its connection's and its answer's into one) nor a timeout or a cancellation, so a bug in the call
   * path. Sent to Sentry, tagged with the call's request or task; the call still fails over, as on a broken answer.
   */
  report?: (error: unknown, context: CallContext) => void;
  latency?: LatencyTracker;
  now?: () => number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  random?: () => number;
  /** Each attempt's limit (for a stream: until its first event, then between events). */
  attemptTimeoutMs?: number;
  /** The whole call's limit when the caller sets no deadline. */
  defaultDeadlineMs?: number;
  maxAttemptsPerTarget?: number;
}

export interface RoutedStream {
  provider: string;
  model: string;
  simulated: boolean;
  attempts: number;
  /** Content and tool-call deltas as they arrive. */
  deltas: AsyncIterable<StreamEvent>;
  /** Settles after the last delta: the whole result, charged. */
  result: Promise<ChatResult>;
}
