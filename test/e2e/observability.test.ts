import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FakeAnthropic, startFakeAnthropic } from "../fakes/anthropic.ts";
import { type FakeOpenAi, startFakeOpenAi } from "../fakes/openai.ts";
import { type ExportedSpan, type OtlpCollector, startOtlpCollector } from "../fakes/otlp-collector.ts";
import { type FakeSentry, startFakeSentry } from "../fakes/sentry.ts";
import { createTestWorkspace, TEST_ADMIN_TOKEN } from "../support/workspaces.ts";
import { startWorker, type WorkerProcess } from "./harness.ts";

let worker: WorkerProcess;
let collector: OtlpCollector;
let sentry: FakeSentry;
let openaiFake: FakeOpenAi;
let anthropicFake: FakeAnthropic;

beforeAll(async () => {
  collector = await startOtlpCollector();
  sentry = await startFakeSentry();
  openaiFake = await startFakeOpenAi();
  anthropicFake = await startFakeAnthropic();
  worker = await startWorker({
    vars: {
      ADMIN_TOKEN: TEST_ADMIN_TOKEN,
      OPENAI_API_KEY: "sk-fake",
      OPENAI_BASE_URL: `${openaiFake.url}/v1`,
      ANTHROPIC_API_KEY: "ak-fake",
      ANTHROPIC_BASE_URL: anthropicFake.url,
      LLM_DEFAULT_CHAIN: "openai:gpt-4o-mini,anthropic:claude-3-5-haiku-latest",
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
  await openaiFake?.close();
  await anthropicFake?.close();
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

describe("an LLM call", () => {
  const PROMPT = "the-secret-plan-for-the-launch";

  /** The trace's spans once `ready` holds for them (they are exported after the response), or as they are after 10 s. */
  async function spansOf(traceId: string, ready: (spans: ExportedSpan[]) => boolean): Promise<ExportedSpan[]> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const spans = collector.spans().filter((span) => span.traceId === traceId);
      if (ready(spans) || Date.now() > deadline) return spans;
      await new Promise((wake) => setTimeout(wake, 100));
    }
  }

  async function call(traceId: string, requestId: string, stream: boolean): Promise<Response> {
    const workspace = await createTestWorkspace(fetch, worker.baseUrl);
    const response = await fetch(`${worker.baseUrl}/api/v1/llm/chat/completions`, {
      method: "POST",
      headers: {
        ...workspace.headers,
        "Content-Type": "application/json",
        "X-Request-Id": requestId,
        traceparent: `00-${traceId}-b7ad6b7169203331-01`,
      },
      body: JSON.stringify({
        model: "auto",
        messages: [{ role: "user", content: PROMPT }],
        stream,
        ...(stream ? { stream_options: { include_usage: true } } : {}),
      }),
    });
    await response.text();
    return response;
  }

  const isAttempt = (span: ExportedSpan) => span.attributes["gen_ai.operation.name"] === "chat";

  /** The call's attempt spans, each a child of the request's span with the upstream fetch inside it. */
  async function attemptSpans(traceId: string, requestId: string, count: number): Promise<ExportedSpan[]> {
    const spans = await spansOf(traceId, (found) => found.filter(isAttempt).length >= count);
    const request = spans.find((span) => span.name === "POST /api/v1/llm/chat/completions");
    expect(request?.attributes["mgx.request_id"]).toBe(requestId);
    const attempts = spans.filter(isAttempt);
    expect(attempts).toHaveLength(count);
    for (const [index, span] of attempts.entries()) {
      expect(span.parentSpanId).toBe(request?.spanId);
      expect(span.attributes["mgx.llm.attempt"]).toBe(index + 1);
    }
    const fetches = spans.filter((span) => span.name.startsWith("fetch POST"));
    expect(fetches).toHaveLength(count);
    const attemptIds = new Set(attempts.map((span) => span.spanId));
    for (const upstream of fetches) expect(attemptIds.has(upstream.parentSpanId ?? "")).toBe(true);
    return attempts;
  }

  /** No prompt in any span, log line or error report; expected upstream 5xx are no error report. */
  async function nothingLeaked(requestId: string): Promise<void> {
    await new Promise((wake) => setTimeout(wake, 1_000));
    for (const exported of collector.requests) expect(exported.body.toString("utf8")).not.toContain(PROMPT);
    expect(JSON.stringify(worker.jsonLogs())).not.toContain(PROMPT);
    expect(sentry.requests.some((report) => report.body.includes(requestId))).toBe(false);
    expect(sentry.requests.some((report) => report.body.includes(PROMPT))).toBe(false);
  }

  it("exports a span per upstream attempt with its provider, model, status and tokens, the upstream fetch inside it", async () => {
    const traceId = "1af7651916cd43dd8448eb211c80319c";
    const requestId = "e2e-llm-spans-whole";
    openaiFake.faults.plan([{ status: 500 }, { status: 500 }, { status: 500 }]);
    anthropicFake.faults.plan([{ ok: true, usage: { prompt: 41, completion: 4 } }]);
    const response = await call(traceId, requestId, false);
    expect(response.status).toBe(200);
    expect(response.headers.get("X-LLM-Provider")).toBe("anthropic");

    const attempts = await attemptSpans(traceId, requestId, 4);
    expect(attempts.map((span) => span.name)).toEqual([
      "chat gpt-4o-mini",
      "chat gpt-4o-mini",
      "chat gpt-4o-mini",
      "chat claude-3-5-haiku-latest",
    ]);
    for (const [retry, failed] of attempts.slice(0, 3).entries()) {
      expect(failed.attributes).toMatchObject({
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "mgx.llm.retry": retry,
        "http.response.status_code": 500,
        "error.type": "server_error",
      });
    }
    expect(attempts[3].attributes).toMatchObject({
      "gen_ai.provider.name": "anthropic",
      "gen_ai.request.model": "claude-3-5-haiku-latest",
      "gen_ai.usage.input_tokens": 41,
      "gen_ai.usage.output_tokens": 4,
    });
    expect(attempts[3].attributes["error.type"]).toBeUndefined();
    await nothingLeaked(requestId);
  });

  it("ends a streamed attempt's span at the stream's end, with its tokens", async () => {
    const traceId = "1af7651916cd43dd8448eb211c80319d";
    const requestId = "e2e-llm-spans-stream";
    openaiFake.faults.plan([
      { status: 429, headers: { "Retry-After": "0" } },
      { ok: true, usage: { prompt: 23, completion: 8 } },
    ]);
    const response = await call(traceId, requestId, true);
    expect(response.status).toBe(200);
    expect(response.headers.get("X-LLM-Provider")).toBe("openai");

    const attempts = await attemptSpans(traceId, requestId, 2);
    expect(attempts[0].attributes).toMatchObject({ "http.response.status_code": 429, "mgx.llm.stream": true });
    expect(attempts[1].attributes).toMatchObject({
      "gen_ai.provider.name": "openai",
      "gen_ai.usage.input_tokens": 23,
      "gen_ai.usage.output_tokens": 8,
      "gen_ai.response.finish_reasons": expect.anything(),
    });
    await nothingLeaked(requestId);
  });
});
