/** Reconnection delays: exponential backoff with full jitter (AWS architecture blog's "Full Jitter"). */

export interface BackoffOptions {
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseDelayMs: 500, maxDelayMs: 30_000 };

/**
 * The delay before attempt `attempt` (0-based): uniform between the base and
 * `min(max, base · 2^(attempt+1))`, so even the first retry is spread over 0.5–1 s. Spreading clients over the whole interval keeps
 * a hub that just restarted from being hit by every client at once.
 */
export function backoffDelayMs(
  attempt: number,
  options: BackoffOptions = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): number {
  const ceilingMs = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** Math.min(attempt + 1, 30));
  return options.baseDelayMs + random() * (ceilingMs - options.baseDelayMs);
}
