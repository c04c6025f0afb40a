import { describe, expect, it } from "vitest";
import { retryAfterMs } from "../../../src/llm/retry.ts";

/**
 * What a provider's `retry-after-ms` / `Retry-After` is read as. `Retry-After` is delay-seconds (digits) or an
 * HTTP date; anything else is no wait asked, so the router's own backoff applies. V8's Date.parse is lenient: it
 * reads "-1", "1,5" or "1 2" as dates in 2001, which, taken for HTTP dates, asked for a wait of 0 (a rate-limited
 * provider retried at once, three times in a row, with no backoff).
 */

const now = Date.parse("2026-11-25T12:00:00Z");
const wait = (headers: Record<string, string>) => retryAfterMs(new Headers(headers), now);

describe("Retry-After parsing", () => {
  it("ignores a negative Retry-After rather than reading it as a date long past (a wait of 0)", () => {
    expect(wait({ "retry-after": "-1" })).toBeUndefined();
    expect(wait({ "retry-after": "-30" })).toBeUndefined();
    expect(wait({ "retry-after": "-0.5" })).toBeUndefined();
  });

  it("ignores numbers written otherwise than delay-seconds, which V8 would read as dates", () => {
    // A decimal comma, numbers apart: Date.parse gives 2001-01-03 and 2001-01-02, a wait of 0.
    expect(wait({ "retry-after": "1,5" })).toBeUndefined();
    expect(wait({ "retry-after": "1 2" })).toBeUndefined();
    // Hex and exponents are JavaScript's, not HTTP's: "0x10" is no 16 s, "1e3" no 1,000 s.
    expect(wait({ "retry-after": "0x10" })).toBeUndefined();
    expect(wait({ "retry-after": "1e3" })).toBeUndefined();
  });

  it("a blank or malformed retry-after-ms does not stand for a wait of 0 over the Retry-After beside it", () => {
    expect(wait({ "retry-after-ms": "", "retry-after": "20" })).toBe(20_000);
    expect(wait({ "retry-after-ms": "  ", "retry-after": "20" })).toBe(20_000);
    expect(wait({ "retry-after-ms": "-5", "retry-after": "20" })).toBe(20_000);
    expect(wait({ "retry-after-ms": "soon", "retry-after": "20" })).toBe(20_000);
    expect(wait({ "retry-after-ms": "" })).toBeUndefined();
  });

  it("still reads seconds (fractional too), milliseconds and HTTP dates, a past date as no wait", () => {
    expect(wait({ "retry-after": "0" })).toBe(0);
    expect(wait({ "retry-after": " 7 " })).toBe(7_000);
    expect(wait({ "retry-after": "1.5" })).toBe(1_500);
    expect(wait({ "retry-after-ms": "250.5" })).toBe(250.5);
    expect(wait({ "retry-after": "86400" })).toBe(86_400_000);
    expect(wait({ "retry-after": "Wed, 25 Nov 2026 12:00:03 GMT" })).toBe(3_000);
    // RFC 850 and asctime, the obsolete forms HTTP still accepts.
    expect(wait({ "retry-after": "Wednesday, 25-Nov-26 12:00:03 GMT" })).toBe(3_000);
    expect(wait({ "retry-after": "Wed Nov 25 12:00:03 2026" })).not.toBeUndefined();
    expect(wait({ "retry-after": "Tue, 24 Nov 2026 12:00:00 GMT" })).toBe(0);
  });

  it("takes a wait of more than a month as a month, so the one told on stays a header value", () => {
    const monthMs = 31 * 86_400_000;
    expect(wait({ "retry-after": "1000000000000000000000" })).toBe(monthMs);
    expect(wait({ "retry-after-ms": "99999999999999999999999" })).toBe(monthMs);
    expect(wait({ "retry-after": "Fri, 01 Jan 9999 00:00:00 GMT" })).toBe(monthMs);
    expect(wait({ "retry-after": String(30 * 86_400) })).toBe(30 * 86_400_000);
  });
});
