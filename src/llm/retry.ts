/**
 * When to retry a provider call and how long to wait: exponential backoff
 * from 500 ms, ×2, capped at 8 s, with full jitter; a provider's own
 * `retry-after-ms` / `Retry-After` wins when it sends one.
 */

export const RETRYABLE_STATUSES: ReadonlySet<number> = new Set([408, 429, 500, 502, 503, 504, 529]);
export const BASE_DELAY_MS = 500;
export const MAX_DELAY_MS = 8_000;

/** Full jitter: uniform in [0, min(cap, base·2^retry)). `retry` counts from 0. */
export function backoffDelayMs(retry: number, random: () => number = Math.random): number {
  const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** retry);
  return Math.floor(random() * ceiling);
}

/**
 * The wait a response asks for, in ms, or undefined. `retry-after-ms` (OpenAI,
 * Azure) is more precise than `Retry-After`, which is seconds or an HTTP date.
 */
export function retryAfterMs(headers: Headers, nowMs: number = Date.now()): number | undefined {
  const precise = headers.get("retry-after-ms");
  if (precise !== null) {
    const value = Number(precise);
    if (Number.isFinite(value) && value >= 0) return value;
  }
  const header = headers.get("retry-after");
  if (header === null) return undefined;
  const seconds = Number(header);
  if (header.trim() !== "" && Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const dateMs = Date.parse(header);
  return Number.isNaN(dateMs) ? undefined : Math.max(0, dateMs - nowMs);
}
