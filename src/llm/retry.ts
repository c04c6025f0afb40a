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
 * The longest wait a provider's answer is taken to ask: a month, as long as a quota takes to reset. Past it a wait
 * means nothing more, and ours as sent on (`Retry-After: 1e+21`, from a provider's 1e21 s) was no header value.
 */
const MAX_RETRY_AFTER_MS = 31 * 86_400_000;

/** A delay as HTTP writes one: digits, with a fraction at most (no sign, exponent or hex, which JavaScript reads). */
const DELAY = /^\s*\d+(?:\.\d+)?\s*$/;

/**
 * The wait a response asks for, in ms, or undefined. `retry-after-ms` (OpenAI,
 * Azure) is more precise than `Retry-After`, which is seconds or an HTTP date.
 * Anything else asks no wait (the backoff applies): V8's Date.parse reads "-1",
 * "1,5" or "1 2" as dates in 2001, which as HTTP dates were a wait of 0, and a
 * blank `retry-after-ms` was Number("") = 0 over the `Retry-After` beside it.
 */
export function retryAfterMs(headers: Headers, nowMs: number = Date.now()): number | undefined {
  const precise = headers.get("retry-after-ms");
  if (precise !== null && DELAY.test(precise)) return Math.min(Number(precise), MAX_RETRY_AFTER_MS);
  const header = headers.get("retry-after");
  if (header === null) return undefined;
  if (DELAY.test(header)) return Math.min(Number(header) * 1000, MAX_RETRY_AFTER_MS);
  // Every HTTP date names its day and month (IMF-fixdate, RFC 850, asctime); a number that is no delay does not.
  if (!/[a-z]/i.test(header)) return undefined;
  const dateMs = Date.parse(header);
  return Number.isNaN(dateMs) ? undefined : Math.min(Math.max(0, dateMs - nowMs), MAX_RETRY_AFTER_MS);
}
