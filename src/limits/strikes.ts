/**
 * Failure counting per client key (authentication failures, probes of foreign
 * ids) as plain functions: a sliding window over the strike times, and a block
 * for a cool-down once the count reaches the threshold.
 */

export interface StrikePolicy {
  /** Strikes within `windowMs` that trigger a block. */
  threshold: number;
  windowMs: number;
  /** How long a block lasts. */
  cooldownMs: number;
}

export interface StrikeState {
  /** Times of the strikes still inside the window, oldest first; never longer than the threshold. */
  strikeTimesMs: number[];
  blockedUntilMs: number | null;
}

export interface StrikeOutcome {
  state: StrikeState;
  /** Strikes in the window, counting this one (the count that triggered a block, if one started now). */
  strikes: number;
  blocked: boolean;
  blockedUntilMs: number | null;
  /** True only for the strike that started the block, so the caller raises one security event per block. */
  newlyBlocked: boolean;
}

export function assertStrikePolicy(policy: StrikePolicy): void {
  if (!Number.isInteger(policy.threshold) || policy.threshold < 1) {
    throw new RangeError(`threshold must be a positive integer, got ${policy.threshold}`);
  }
  for (const name of ["windowMs", "cooldownMs"] as const) {
    if (!Number.isFinite(policy[name]) || policy[name] <= 0) {
      throw new RangeError(`${name} must be a positive number, got ${policy[name]}`);
    }
  }
}

export const NO_STRIKES: StrikeState = { strikeTimesMs: [], blockedUntilMs: null };

export function activeBlock(state: StrikeState, nowMs: number): number | null {
  return state.blockedUntilMs !== null && state.blockedUntilMs > nowMs ? state.blockedUntilMs : null;
}

/**
 * Counts one strike at `nowMs`. A blocked key's strikes are not counted: the
 * block already answers them, and counting would let an attacker extend or
 * renew it forever. When a block starts the window empties, so after the
 * cool-down the key needs `threshold` fresh failures to be blocked again.
 */
export function strike(state: StrikeState, policy: StrikePolicy, nowMs: number): StrikeOutcome {
  const blockedUntilMs = activeBlock(state, nowMs);
  if (blockedUntilMs !== null) {
    return { state, strikes: state.strikeTimesMs.length, blocked: true, blockedUntilMs, newlyBlocked: false };
  }
  const windowStartMs = nowMs - policy.windowMs;
  const strikeTimesMs = [...state.strikeTimesMs.filter((timeMs) => timeMs > windowStartMs), nowMs];
  if (strikeTimesMs.length >= policy.threshold) {
    const until = nowMs + policy.cooldownMs;
    return {
      state: { strikeTimesMs: [], blockedUntilMs: until },
      strikes: strikeTimesMs.length,
      blocked: true,
      blockedUntilMs: until,
      newlyBlocked: true,
    };
  }
  return {
    state: { strikeTimesMs, blockedUntilMs: null },
    strikes: strikeTimesMs.length,
    blocked: false,
    blockedUntilMs: null,
    newlyBlocked: false,
  };
}

/** When a stored row can be forgotten: its block is over and its last strike has left the window. */
export function strikeExpiryMs(state: StrikeState, policy: StrikePolicy): number {
  const lastStrikeMs = state.strikeTimesMs.at(-1);
  const windowEndMs = lastStrikeMs === undefined ? 0 : lastStrikeMs + policy.windowMs;
  return Math.max(windowEndMs, state.blockedUntilMs ?? 0);
}
