/**
 * Circuit-breaker state per (provider, model), as plain data and functions so
 * the Durable Object, the isolate's cache and the tests share one definition.
 *
 * Opens after 5 consecutive failures, or at ≥50% failures over ≥10 calls in
 * the last 60 s. After 30 s it is half-open: one trial call is let through,
 * its slot leased for as long as its attempt may run; its success closes the
 * breaker (a streamed trial's first delta does), its failure opens it for
 * another 30 s.
 * Outcomes that say nothing about the provider's health (400, 401, 404) are
 * never recorded.
 */

export type BreakerStateName = "closed" | "open" | "half_open";

export interface BreakerPolicy {
  consecutiveFailures: number;
  minCalls: number;
  failureRatio: number;
  windowMs: number;
  openMs: number;
  /**
   * A trial that never reports back (its isolate died) frees the slot after this long, unless its caller leased it
   * for longer (an attempt that may run past it: see acquireTrial); never sooner.
   */
  trialTimeoutMs: number;
}

export const DEFAULT_BREAKER_POLICY: BreakerPolicy = {
  consecutiveFailures: 5,
  minCalls: 10,
  failureRatio: 0.5,
  windowMs: 60_000,
  openMs: 30_000,
  trialTimeoutMs: 60_000,
};

/**
 * The longest a half-open trial's slot is leased: 15 minutes, the longest deadline an OpenAI-compatible caller may
 * state (X-Stainless-Timeout, 900 s) and above the longest attempt timeout (LLM_ATTEMPT_TIMEOUT_MS, 600 s). A lease
 * asked beyond it is held this long: a trial whose isolate died keeps every other call off the target no longer.
 */
export const MAX_TRIAL_LEASE_MS = 15 * 60_000;

/** The window keeps at most this many outcomes: enough for the ratio, bounded under load. */
const MAX_OUTCOMES = 200;

export interface BreakerState {
  /** "open" is stored; "half_open" is derived from the time (see `viewOf`). */
  open: boolean;
  openedAtMs: number | null;
  consecutiveFailures: number;
  /** [epoch ms, 1 = success | 0 = failure], oldest first, within the window. */
  outcomes: [number, 0 | 1][];
  trialStartedAtMs: number | null;
  /**
   * How long the trial started at trialStartedAtMs holds the slot (see acquireTrial); absent or null (rows stored
   * before leases, a trial granted without one): the policy's trialTimeoutMs.
   */
  trialLeaseMs?: number | null;
  lastError: string | null;
  /**
   * When a success last closed the open breaker (a streamed trial's first delta: when that trial was sent; absent
   * in rows stored before it was kept). Calls sent before then belong to the outage it ended: their failures,
   * arriving later, do not count again.
   */
  closedAtMs?: number | null;
}

/** One call's outcome, as the breaker is told it. */
export interface Outcome {
  /** When the provider answered (or failed). */
  atMs: number;
  ok: boolean;
  error?: string;
  /** When the attempt was sent, where known. */
  startedAtMs?: number;
  /** The call held the half-open trial: its failure reopens the breaker. */
  trial?: true;
  /** Not a call's outcome: the half-open trial this isolate held ended without a verdict (releaseTrial). */
  trialReleased?: true;
  /**
   * Not a call's outcome: the half-open trial, a stream, sent its first delta (atMs; startedAtMs when it was sent).
   * It closes the breaker; the stream's one outcome is told at its end as an ordinary call's (see trialProvedBy).
   */
  trialProved?: true;
}

export interface BreakerView {
  state: BreakerStateName;
  /** Failures / calls within the window (0 without calls). */
  errorRate: number;
  calls: number;
  consecutiveFailures: number;
  openedAtMs: number | null;
  /** When a half-open trial becomes possible (open only). */
  retryAtMs: number | null;
  lastError: string | null;
}

export const CLOSED: BreakerState = {
  open: false,
  openedAtMs: null,
  consecutiveFailures: 0,
  outcomes: [],
  trialStartedAtMs: null,
  trialLeaseMs: null,
  lastError: null,
  closedAtMs: null,
};

/** Where the kept part of a window starts: within windowMs of now, and at most MAX_OUTCOMES long. */
function keptFrom(outcomes: [number, 0 | 1][], nowMs: number, policy: BreakerPolicy): number {
  const since = nowMs - policy.windowMs;
  let start = Math.max(0, outcomes.length - MAX_OUTCOMES);
  while (start < outcomes.length && outcomes[start][0] <= since) start++;
  return start;
}

function prune(outcomes: [number, 0 | 1][], nowMs: number, policy: BreakerPolicy): [number, 0 | 1][] {
  const start = keptFrom(outcomes, nowMs, policy);
  return start > 0 ? outcomes.slice(start) : outcomes;
}

/** Just the state's name: what the hot path asks on every call, without looking at the window. */
export function stateNameOf(
  state: BreakerState,
  nowMs: number,
  policy: BreakerPolicy = DEFAULT_BREAKER_POLICY,
): BreakerStateName {
  if (!state.open) return "closed";
  return state.openedAtMs !== null && nowMs >= state.openedAtMs + policy.openMs ? "half_open" : "open";
}

export function viewOf(
  state: BreakerState,
  nowMs: number,
  policy: BreakerPolicy = DEFAULT_BREAKER_POLICY,
): BreakerView {
  const outcomes = prune(state.outcomes, nowMs, policy);
  const failures = outcomes.reduce((sum, [, ok]) => sum + (ok ? 0 : 1), 0);
  const retryAtMs = state.open && state.openedAtMs !== null ? state.openedAtMs + policy.openMs : null;
  return {
    state: stateNameOf(state, nowMs, policy),
    errorRate: outcomes.length === 0 ? 0 : failures / outcomes.length,
    calls: outcomes.length,
    consecutiveFailures: state.consecutiveFailures,
    openedAtMs: state.openedAtMs,
    retryAtMs,
    lastError: state.lastError,
  };
}

/** Applies outcomes (oldest first); `trialReleased` and `trialProved` ones are no call's outcome (see below). */
export function recordOutcomes(
  state: BreakerState,
  outcomes: Outcome[],
  nowMs: number,
  policy: BreakerPolicy = DEFAULT_BREAKER_POLICY,
): BreakerState {
  let next: BreakerState = { ...state, outcomes: [...state.outcomes] };
  for (const outcome of outcomes) {
    if (outcome.trialReleased) {
      // The half-open trial ended saying nothing of the provider's health (a 400, a cancelled call): the next
      // call may have the trial now, rather than once trialTimeoutMs has passed with the target unused.
      if (next.trialStartedAtMs !== null) next = { ...next, trialStartedAtMs: null };
      continue;
    }
    if (outcome.trialProved) {
      next = trialProvedBy(next, outcome);
      continue;
    }
    if (outcome.ok) {
      if (sentBeforeOpening(next, outcome) || answeredBeforeLastFailure(next, outcome.atMs)) {
        // A success older than the breaker's opening or its latest failure (another isolate's, batched for up to a
        // second; a stream that began answering before and ended after) says nothing of the provider since: it
        // takes its place in the window. Applied as news, it closed a breaker opened a moment later elsewhere, and
        // wiped the failures that opened it from the error rate, or broke a run of consecutive failures it preceded.
        insertByTime(next.outcomes, [outcome.atMs, 1]);
        continue;
      }
      // Any success (a trial, or a call tried while every target was open) proves the target works. The ratio
      // rule starts afresh from it (closedAtMs): the failures that opened the breaker would otherwise hold it
      // above 50% and reopen it at once, for another 30 s, however well the provider now answers. They stay in
      // the window, which GET /api/v1/providers reads as the last minute's calls and error rate (wiped, a
      // provider just recovered read as one call and 0% errors).
      const closes = next.open;
      insertByTime(next.outcomes, [outcome.atMs, 1]);
      next = { ...next, open: false, openedAtMs: null, consecutiveFailures: 0, trialStartedAtMs: null };
      if (closes) next.closedAtMs = outcome.atMs;
      continue;
    }
    // A call sent before a success closed the breaker, failing after it (one that hung through the outage, or was
    // tried while every target was open), is the outage's: counted again, five such stragglers reopened a breaker
    // the trial had just found well, and kept the target unused for another 30 s.
    const closedAtMs = next.closedAtMs ?? null;
    if (closedAtMs !== null && outcome.startedAtMs !== undefined && outcome.startedAtMs < closedAtMs) continue;
    insertByTime(next.outcomes, [outcome.atMs, 0]);
    // Answered before a success already recorded (another isolate's failure, batched up to a second late), it
    // takes its place in the window, and so in the error rate, but ends no run of failures: the provider answered
    // since. Counted, five such stragglers opened the breaker of a provider that was answering.
    if (!succeededAfter(next.outcomes, outcome.atMs)) next.consecutiveFailures += 1;
    next.lastError = outcome.error ?? next.lastError;
    // Only the trial's own failure reopens it: another call's (one tried anyway, or sent before the trial and
    // arriving late) reopened it from its own time, maybe half-open at once, and freed the slot for a second trial
    // while the first was still out.
    if (next.open && outcome.trial) {
      next = {
        ...next,
        openedAtMs: Math.max(next.openedAtMs ?? outcome.atMs, outcome.atMs),
        trialStartedAtMs: null,
      };
      continue;
    }
    if (!next.open && shouldOpen(next, outcome.atMs, policy)) {
      next = { ...next, open: true, openedAtMs: outcome.atMs, trialStartedAtMs: null };
    }
  }
  // next.outcomes is this call's own copy: pruned in place (the hot path records one success per call).
  next.outcomes.splice(0, keptFrom(next.outcomes, nowMs, policy));
  // The ratio rule looks at the whole window, which outcomes from other isolates may complete late.
  if (!next.open && windowSaysOpen(next, next.outcomes, policy)) next = { ...next, open: true, openedAtMs: nowMs };
  return next;
}

/**
 * Sent before the breaker opened and answered since (a slow answer, a queue the provider still drains while it
 * refuses new calls): no proof that a call sent now is answered. Only a call sent since (the trial, or one tried
 * while every target was open) closes it; in flight by the dozen, such answers kept closing it.
 */
function sentBeforeOpening(state: BreakerState, outcome: Outcome): boolean {
  return (
    state.open &&
    state.openedAtMs !== null &&
    outcome.startedAtMs !== undefined &&
    outcome.startedAtMs < state.openedAtMs
  );
}

/**
 * The half-open trial, a stream, sent its first delta: the provider answers calls sent now. Settled only at the
 * stream's end, the trial held the target for the whole answer (minutes, for a long one): every other call passed
 * over a target that was answering, and past trialTimeoutMs a second trial was granted while the first still
 * streamed. It closes the breaker as a success does, but takes no place in the window: the stream's end is told
 * later as its one outcome, so GET /api/v1/providers does not read one stream as two calls, nor one cut mid-answer
 * as a success and a failure. A closed breaker (another call closed it) or a stale proof changes nothing.
 */
function trialProvedBy(state: BreakerState, outcome: Outcome): BreakerState {
  if (!state.open || sentBeforeOpening(state, outcome) || answeredBeforeLastFailure(state, outcome.atMs)) return state;
  return {
    ...state,
    open: false,
    openedAtMs: null,
    consecutiveFailures: 0,
    trialStartedAtMs: null,
    // Calls are counted afresh from the trial's sending, not its first delta: the stream's own end, a failure
    // mid-answer included, is the first call since, not a straggler of the outage it ended (dropped, a trial that
    // then broke counted nothing at all).
    closedAtMs: outcome.startedAtMs ?? outcome.atMs,
  };
}

/** The success at `atMs` came before the breaker opened, or before a failure already recorded. */
function answeredBeforeLastFailure(state: BreakerState, atMs: number): boolean {
  if (state.open && state.openedAtMs !== null && atMs < state.openedAtMs) return true;
  const outcomes = state.outcomes;
  for (let index = outcomes.length - 1; index >= 0 && outcomes[index][0] > atMs; index--) {
    if (outcomes[index][1] === 0) return true;
  }
  return false;
}

/** A success answered after `atMs` is in the window (kept in time order, so read from its newest end). */
function succeededAfter(outcomes: [number, 0 | 1][], atMs: number): boolean {
  for (let index = outcomes.length - 1; index >= 0 && outcomes[index][0] > atMs; index--) {
    if (outcomes[index][1] === 1) return true;
  }
  return false;
}

/** Keeps the window in time order (pruning reads it from the oldest), though outcomes may arrive late. */
function insertByTime(outcomes: [number, 0 | 1][], outcome: [number, 0 | 1]): void {
  let at = outcomes.length;
  while (at > 0 && outcomes[at - 1][0] > outcome[0]) at--;
  outcomes.splice(at, 0, outcome);
}

function shouldOpen(state: BreakerState, nowMs: number, policy: BreakerPolicy): boolean {
  return windowSaysOpen(state, prune(state.outcomes, nowMs, policy), policy);
}

/** The opening rules over an already pruned window. */
function windowSaysOpen(state: BreakerState, window: [number, 0 | 1][], policy: BreakerPolicy): boolean {
  if (state.consecutiveFailures >= policy.consecutiveFailures) return true;
  // Only the calls since the breaker last closed: those before belong to the outage that closing ended.
  const sinceMs = state.closedAtMs ?? Number.NEGATIVE_INFINITY;
  let calls = 0;
  let failures = 0;
  for (let index = 0; index < window.length; index++) {
    if (window[index][0] < sinceMs) continue;
    calls++;
    if (window[index][1] === 0) failures++;
  }
  return calls >= policy.minCalls && failures / calls >= policy.failureRatio;
}

/** A trial's lease as held: at least trialTimeoutMs, at most MAX_TRIAL_LEASE_MS. */
function leaseWithin(leaseMs: number | null | undefined, policy: BreakerPolicy): number {
  return Math.min(MAX_TRIAL_LEASE_MS, Math.max(policy.trialTimeoutMs, leaseMs ?? 0));
}

/**
 * Half-open: grants the one trial call, unless another is in flight. The slot is held for `leaseMs` (at least the
 * policy's trialTimeoutMs), as long as the trial's attempt may run: held for a fixed 60 s, a second trial was granted
 * while the first, a reasoning model's, still legitimately ran. A trial that never reports back (its isolate died)
 * frees the slot once its lease is up.
 */
export function acquireTrial(
  state: BreakerState,
  nowMs: number,
  policy: BreakerPolicy = DEFAULT_BREAKER_POLICY,
  leaseMs?: number,
): { granted: boolean; state: BreakerState } {
  const name = stateNameOf(state, nowMs, policy);
  if (name === "closed") return { granted: true, state };
  if (name === "open") return { granted: false, state };
  const trialBusy =
    state.trialStartedAtMs !== null && nowMs - state.trialStartedAtMs < leaseWithin(state.trialLeaseMs, policy);
  if (trialBusy) return { granted: false, state };
  return {
    granted: true,
    state: {
      ...state,
      trialStartedAtMs: nowMs,
      trialLeaseMs: leaseMs === undefined ? null : leaseWithin(leaseMs, policy),
    },
  };
}
