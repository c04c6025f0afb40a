/**
 * Token-bucket math as plain functions over an explicit clock. Tokens are
 * fractional and refill is computed from elapsed time, so no rounding is ever
 * stored and repeated refills do not drift.
 */

export interface BucketConfig {
  /** Tokens added per second. */
  ratePerSecond: number;
  /** Most tokens the bucket holds: the largest burst it admits. */
  burst: number;
}

export interface BucketState {
  /** Fractional; may dip a hair below zero after a take that rounding allowed (see TOKEN_EPSILON). */
  tokens: number;
  updatedAtMs: number;
}

/**
 * Float sums such as 0.1 + 0.2 land just under a whole token; without this
 * slack a bucket that has exactly refilled one token would refuse it. The
 * overdraft it allows is kept in the state (tokens go negative), never forgiven.
 */
export const TOKEN_EPSILON = 1e-9;

export function assertBucketConfig(config: BucketConfig): void {
  if (!Number.isFinite(config.ratePerSecond) || config.ratePerSecond <= 0) {
    throw new RangeError(`ratePerSecond must be a positive number, got ${config.ratePerSecond}`);
  }
  if (!Number.isFinite(config.burst) || config.burst < 1) {
    throw new RangeError(`burst must be at least 1, got ${config.burst}`);
  }
}

/** A bucket nobody has touched yet is full. */
export function fullBucket(config: BucketConfig, nowMs: number): BucketState {
  return { tokens: config.burst, updatedAtMs: nowMs };
}

/**
 * Tokens at `nowMs`, capped at burst (also when the burst has shrunk since the
 * last call). A clock that steps backwards adds nothing and keeps the later
 * timestamp, so the same interval is never credited twice.
 */
export function refill(state: BucketState, config: BucketConfig, nowMs: number): BucketState {
  const elapsedMs = Math.max(0, nowMs - state.updatedAtMs);
  const tokens = Math.min(config.burst, state.tokens + (elapsedMs * config.ratePerSecond) / 1000);
  return { tokens, updatedAtMs: Math.max(state.updatedAtMs, nowMs) };
}

/** Whole tokens that can be taken now (the state must already be refilled). */
export function wholeTokens(state: BucketState): number {
  return Math.max(0, Math.floor(state.tokens + TOKEN_EPSILON));
}

/** Removes `count` tokens; the caller checks availability first. */
export function take(state: BucketState, count: number): BucketState {
  return { tokens: state.tokens - count, updatedAtMs: state.updatedAtMs };
}

/** Adds `count` tokens back, never above burst. */
export function give(state: BucketState, config: BucketConfig, count: number): BucketState {
  return { tokens: Math.min(config.burst, state.tokens + count), updatedAtMs: state.updatedAtMs };
}

/**
 * Milliseconds from the state's time until `count` whole tokens are available
 * (0 if they are now, Infinity if `count` exceeds burst). Rounded up so a
 * caller that waits this long finds them.
 */
export function msUntilTokens(state: BucketState, config: BucketConfig, count: number): number {
  if (count > config.burst) return Number.POSITIVE_INFINITY;
  const missing = count - state.tokens - TOKEN_EPSILON;
  if (missing <= 0) return 0;
  return Math.ceil((missing * 1000) / config.ratePerSecond);
}

/** Milliseconds until the bucket is full again. */
export function msUntilFull(state: BucketState, config: BucketConfig): number {
  const missing = config.burst - state.tokens;
  if (missing <= 0) return 0;
  return Math.ceil((missing * 1000) / config.ratePerSecond);
}
