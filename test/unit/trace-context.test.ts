import { describe, expect, it } from "vitest";
import { continueOrStartTrace, formatTraceparent, parseTraceparent } from "../../src/lib/trace-context.ts";
import {
  otlpTracesUrl,
  parseOtlpHeaders,
  redactSpanUrls,
  resolveTraceConfig,
} from "../../src/observability/tracing.ts";

describe("W3C traceparent", () => {
  it("continues a valid caller trace with a new span", () => {
    const ids = continueOrStartTrace("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    expect(ids.traceId).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    expect(ids.parentSpanId).toBe("00f067aa0ba902b7");
    expect(ids.spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(ids.spanId).not.toBe("00f067aa0ba902b7");
    expect(formatTraceparent(ids)).toBe(`00-4bf92f3577b34da6a3ce929d0e0e4736-${ids.spanId}-01`);
  });

  it("refuses malformed and all-zero ids and starts a new trace instead", () => {
    for (const header of [
      "garbage",
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ]) {
      expect(parseTraceparent(header)).toBeNull();
      const ids = continueOrStartTrace(header);
      expect(ids.traceId).toMatch(/^[0-9a-f]{32}$/);
      expect(ids.spanId).toMatch(/^[0-9a-f]{16}$/);
      expect(ids.traceId).not.toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    }
    // Both ids are fresh for every new trace.
    const [first, second] = [continueOrStartTrace(undefined), continueOrStartTrace(undefined)];
    expect(second.traceId).not.toBe(first.traceId);
    expect(second.spanId).not.toBe(first.spanId);
    expect(first.traceId.slice(16)).not.toBe(first.spanId);
  });
});

describe("OTLP settings", () => {
  it("derives the traces URL from the base endpoint", () => {
    expect(otlpTracesUrl("http://127.0.0.1:4318")).toBe("http://127.0.0.1:4318/v1/traces");
    expect(otlpTracesUrl("http://collector/v1/traces/")).toBe("http://collector/v1/traces");
  });

  it("parses OTEL_EXPORTER_OTLP_HEADERS", () => {
    expect(parseOtlpHeaders("x-api-key=abc%20def, x-team = edge,broken")).toEqual({
      "x-api-key": "abc def",
      "x-team": "edge",
    });
    expect(parseOtlpHeaders(undefined)).toEqual({});
  });
});

describe("spans as exported", () => {
  it("carry no event-stream ticket or other secret-named query value, and every other parameter as it was", () => {
    const span = {
      attributes: {
        "url.full": "https://api.test/api/v1/events/ws?ticket=tkt_live_secret&types=task.*",
        "url.query": "?ticket=tkt_live_secret&types=task.*",
        "http.url": "https://upstream.test/v1?api_key=sk-abc&x=1",
        "url.path": "/api/v1/events/ws",
      },
    };
    const [exported] = redactSpanUrls([span as never]) as unknown as (typeof span)[];
    expect(JSON.stringify(exported.attributes)).not.toContain("secret");
    expect(exported.attributes).toEqual({
      "url.full": "https://api.test/api/v1/events/ws?ticket=%5BREDACTED%5D&types=task.*",
      "url.query": "?ticket=%5BREDACTED%5D&types=task.*",
      "http.url": "https://upstream.test/v1?api_key=%5BREDACTED%5D&x=1",
      "url.path": "/api/v1/events/ws",
    });
    expect(
      resolveTraceConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector.test" } as never, undefined as never),
    ).toMatchObject({ postProcessor: redactSpanUrls });
  });
});
