import { describe, expect, it } from "vitest";
import { classifyFailure } from "../../../src/llm/errors.ts";
import { ProviderError } from "../../../src/llm/provider.ts";
import {
  BASE_DELAY_MS,
  backoffDelayMs,
  MAX_DELAY_MS,
  RETRYABLE_STATUSES,
  retryAfterMs,
} from "../../../src/llm/retry.ts";

describe("backoff", () => {
  it("is full jitter under 500 ms × 2^retry, capped at 8 s", () => {
    expect(BASE_DELAY_MS).toBe(500);
    expect(MAX_DELAY_MS).toBe(8_000);
    expect([0, 1, 2, 3, 4, 5, 10].map((retry) => backoffDelayMs(retry, () => 0.999_999))).toEqual([
      499, 999, 1_999, 3_999, 7_999, 7_999, 7_999,
    ]);
    expect(backoffDelayMs(3, () => 0)).toBe(0);
    for (let draw = 0; draw < 200; draw++) {
      const delay = backoffDelayMs(2);
      expect(delay).toBeGreaterThanOrEqual(0);
      expect(delay).toBeLessThan(2_000);
    }
  });
});

describe("Retry-After", () => {
  it("prefers retry-after-ms, then seconds, then an HTTP date", () => {
    const now = Date.parse("2026-11-25T12:00:00Z");
    expect(retryAfterMs(new Headers({ "retry-after-ms": "1500", "retry-after": "9" }), now)).toBe(1_500);
    expect(retryAfterMs(new Headers({ "retry-after": "1" }), now)).toBe(1_000);
    expect(retryAfterMs(new Headers({ "retry-after": "Wed, 25 Nov 2026 12:00:03 GMT" }), now)).toBe(3_000);
    expect(retryAfterMs(new Headers({ "retry-after": "soon" }), now)).toBeUndefined();
    expect(retryAfterMs(new Headers(), now)).toBeUndefined();
  });
});

describe("which failures are retried and counted", () => {
  it("retries 408, 429, 500, 502, 503, 504, 529, connection errors and timeouts, and no other 4xx", () => {
    expect([...RETRYABLE_STATUSES].sort()).toEqual([408, 429, 500, 502, 503, 504, 529]);
    for (const status of RETRYABLE_STATUSES) {
      expect(classifyFailure(new ProviderError("http", "x", { status })).retryable).toBe(true);
    }
    expect(classifyFailure(new ProviderError("timeout", "x")).retryable).toBe(true);
    expect(classifyFailure(new ProviderError("connection", "x")).retryable).toBe(true);
    for (const status of [400, 401, 403, 404, 409, 422]) {
      expect(classifyFailure(new ProviderError("http", "x", { status })).retryable).toBe(false);
    }
  });

  it("does not count 400, 401 and 404 against the breaker", () => {
    for (const status of [400, 401, 404]) {
      expect(classifyFailure(new ProviderError("http", "x", { status })).countsForBreaker).toBe(false);
    }
    expect(classifyFailure(new ProviderError("http", "x", { status: 503 })).countsForBreaker).toBe(true);
    expect(classifyFailure(new ProviderError("http", "x", { status: 429 })).eventType).toBe("rate_limit");
    expect(classifyFailure(new ProviderError("http", "x", { status: 401 })).eventType).toBe("authentication");
    expect(classifyFailure(new ProviderError("http", "x", { status: 429, code: "insufficient_quota" })).eventType).toBe(
      "quota_exceeded",
    );
  });
});
