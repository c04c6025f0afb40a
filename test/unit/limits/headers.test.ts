import { describe, expect, it } from "vitest";
import { type RateLimitDecision, rateLimitHeaders } from "../../../src/limits/rate-limiter.ts";

describe("rateLimitHeaders", () => {
  it("names the policy and its state per the httpapi draft", () => {
    const decision: RateLimitDecision = {
      allowed: true,
      policy: { name: "workspace", limit: 100, windowSeconds: 10 },
      remaining: 42,
      resetSeconds: 6,
      retryAfterSeconds: 0,
    };
    expect(rateLimitHeaders(decision)).toEqual({
      "RateLimit-Policy": '"workspace";q=100;w=10',
      RateLimit: '"workspace";r=42;t=6',
    });
  });

  it("adds Retry-After on a refusal, never below 1 second", () => {
    const decision: RateLimitDecision = {
      allowed: false,
      policy: { name: "key:key_01ABC", limit: 5, windowSeconds: 1 },
      remaining: 0,
      resetSeconds: 1,
      retryAfterSeconds: 3,
    };
    expect(rateLimitHeaders(decision)).toEqual({
      "RateLimit-Policy": '"key:key_01ABC";q=5;w=1',
      RateLimit: '"key:key_01ABC";r=0;t=1',
      "Retry-After": "3",
    });
    expect(rateLimitHeaders({ ...decision, retryAfterSeconds: 0.2 })["Retry-After"]).toBe("1");
  });

  it("keeps any name a valid structured-field string", () => {
    const headers = rateLimitHeaders({
      allowed: true,
      policy: { name: 'user:"ann"\\é', limit: 1.5, windowSeconds: 0.5 },
      remaining: -1,
      resetSeconds: Number.NaN,
      retryAfterSeconds: 0,
    });
    expect(headers["RateLimit-Policy"]).toBe('"user:\\"ann\\"\\\\?";q=2;w=1');
    expect(headers.RateLimit).toBe('"user:\\"ann\\"\\\\?";r=0;t=0');
  });
});
