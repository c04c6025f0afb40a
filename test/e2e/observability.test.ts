import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type OtlpCollector, startOtlpCollector } from "../fakes/otlp-collector.ts";
import { type FakeSentry, startFakeSentry } from "../fakes/sentry.ts";
import { startWorker, type WorkerProcess } from "./harness.ts";

let worker: WorkerProcess;
let collector: OtlpCollector;
let sentry: FakeSentry;

beforeAll(async () => {
  collector = await startOtlpCollector();
  sentry = await startFakeSentry();
  worker = await startWorker({
    vars: {
      ENABLE_DEBUG_ROUTES: "true",
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
      OTEL_EXPORTER_OTLP_HEADERS: "x-honeycomb-team=test%20key,x-tenant=edge",
      OTEL_SERVICE_NAME: "mgx-edge-e2e",
      SENTRY_DSN: sentry.dsn,
      SENTRY_ENVIRONMENT: "e2e",
      SENTRY_RELEASE: "mgx-ai-edge@e2e",
    },
  });
});
afterAll(async () => {
  await worker?.stop();
  await collector?.close();
  await sentry?.close();
});

describe("tracing", () => {
  it("exports a span for a request, continuing the caller's traceparent", async () => {
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const parentSpanId = "b7ad6b7169203331";
    const response = await fetch(`${worker.baseUrl}/health`, {
      headers: { traceparent: `00-${traceId}-${parentSpanId}-01` },
    });
    expect(response.status).toBe(200);

    const exportRequest = await collector.waitFor((request) => request.body.includes(traceId));
    expect(exportRequest.headers["content-type"]).toContain("application/json");
    expect(exportRequest.headers["x-honeycomb-team"]).toBe("test key");
    expect(exportRequest.headers["x-tenant"]).toBe("edge");

    const span = collector.spans().find((candidate) => candidate.traceId === traceId);
    expect(span, JSON.stringify(collector.spans())).toBeDefined();
    expect(span?.name).toBe("GET /health");
    expect(span?.attributes["http.route"]).toBe("/health");
    expect(span?.attributes["http.response.status_code"]).toBe(200);
    expect(span?.parentSpanId).toBe(parentSpanId);
    expect(span?.serviceName).toBe("mgx-edge-e2e");

    // The request's log lines carry the same trace id and the exported span's id.
    const logLine = await worker.waitForLog((line) => line.trace_id === traceId && line.msg === "request completed");
    expect(logLine.span_id).toBe(span?.spanId);
  });

  it("keeps Durable Object RPC working through the instrumented env", async () => {
    // /ready makes a WorkspaceLimiter RPC call; otel-cf-workers proxies env bindings when tracing is on.
    const response = await fetch(`${worker.baseUrl}/ready`);
    expect(response.status).toBe(200);
    const body = (await response.json()) as { checks: Record<string, { ok: boolean }> };
    expect(body.checks.durable_objects.ok).toBe(true);
  });
});

describe("error tracking", () => {
  it("sends an envelope to Sentry when a route throws, tagged with the request id", async () => {
    const requestId = "e2e-sentry-check-0001";
    const response = await fetch(`${worker.baseUrl}/__debug/error`, {
      headers: { "X-Request-Id": requestId, Authorization: "Bearer mgx_should_never_reach_sentry_123" },
    });
    expect(response.status).toBe(500);

    const request = await sentry.waitFor((candidate) => candidate.body.includes(requestId));
    expect(request.body.toString()).not.toContain("should_never_reach_sentry");
    const event = sentry
      .envelopes()
      .flatMap((envelope) => envelope.items)
      .map((item) => item.payload)
      .find(
        (payload) =>
          typeof payload === "object" && (payload as { tags?: Record<string, string> }).tags?.request_id === requestId,
      ) as Record<string, any> | undefined;
    expect(event).toBeDefined();
    expect(event?.exception.values[0].value).toBe("Deliberate failure from /__debug/error");
    expect(event?.environment).toBe("e2e");
    expect(event?.release).toBe("mgx-ai-edge@e2e");
  });

  it("does not report a client's mistake", async () => {
    const requestId = "e2e-sentry-4xx-0001";
    const response = await fetch(`${worker.baseUrl}/nowhere`, { headers: { "X-Request-Id": requestId } });
    expect(response.status).toBe(404);
    // Give an (unwanted) report time to arrive, then check none did.
    await new Promise((wake) => setTimeout(wake, 1_000));
    expect(sentry.requests.some((request) => request.body.includes(requestId))).toBe(false);
  });
});
