import type { RateLimitDecision } from "./rate-limiter.ts";

/**
 * Response headers for a decision, per the IETF httpapi ratelimit-headers
 * draft: the most constraining policy and its state, plus `Retry-After`
 * (seconds) on a refusal.
 */
export function rateLimitHeaders(decision: RateLimitDecision): Record<string, string> {
  const name = structuredString(decision.policy.name);
  const headers: Record<string, string> = {
    "RateLimit-Policy": `${name};q=${whole(decision.policy.limit)};w=${whole(decision.policy.windowSeconds)}`,
    RateLimit: `${name};r=${whole(decision.remaining)};t=${whole(decision.resetSeconds)}`,
  };
  if (!decision.allowed) headers["Retry-After"] = String(Math.max(1, whole(decision.retryAfterSeconds)));
  return headers;
}

/** An RFC 8941 sf-string: printable ASCII only, with `"` and `\` escaped. Names such as a JWT `sub` may hold anything. */
function structuredString(value: string): string {
  const printable = value.replace(/[^\x20-\x7e]/g, "?");
  return `"${printable.replace(/[\\"]/g, (character) => `\\${character}`)}"`;
}

/** An sf-integer: the draft's values are non-negative whole numbers. */
function whole(value: number): number {
  return Number.isFinite(value) ? Math.max(0, Math.ceil(value)) : 0;
}
