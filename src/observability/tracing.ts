import type { PostProcessorFn, ResolveConfigFn } from "@microlabs/otel-cf-workers";
import type { WorkerEnv } from "../env.ts";
import { redactUrlQuery } from "../lib/redact.ts";

/**
 * OpenTelemetry export settings from the standard OTEL_* variables. When no
 * endpoint is set the Worker is not instrumented at all (see index.ts), so
 * nothing tries to export to a collector that is not there.
 */

/** `OTEL_EXPORTER_OTLP_HEADERS`: `key=value,key2=value2`, values URL-encoded. */
export function parseOtlpHeaders(raw: string | undefined): Record<string, string> {
  const headers: Record<string, string> = {};
  if (!raw) return headers;
  for (const pair of raw.split(",")) {
    const separator = pair.indexOf("=");
    if (separator <= 0) continue;
    const key = pair.slice(0, separator).trim();
    const value = pair.slice(separator + 1).trim();
    try {
      headers[key] = decodeURIComponent(value);
    } catch {
      headers[key] = value;
    }
  }
  return headers;
}

/** The OTLP/HTTP traces URL for a base endpoint, as the OpenTelemetry spec derives it. */
export function otlpTracesUrl(endpoint: string): string {
  const base = endpoint.replace(/\/+$/, "");
  return base.endsWith("/v1/traces") ? base : `${base}/v1/traces`;
}

export function isTracingEnabled(env: WorkerEnv): boolean {
  return typeof env.OTEL_EXPORTER_OTLP_ENDPOINT === "string" && env.OTEL_EXPORTER_OTLP_ENDPOINT !== "";
}

/** The span attributes that hold a request's URL or query, as otel-cf-workers records them. */
const URL_ATTRIBUTES = ["url.full", "url.query", "http.url"];

/**
 * Spans as exported: a URL's secret-named query parameters redacted. An event stream's `?ticket=` opens the
 * workspace's events to whoever holds it (single-use, for 60 s), and a collector's readers are not the workspace.
 */
export const redactSpanUrls: PostProcessorFn = (spans) => {
  for (const span of spans) {
    const attributes = span.attributes as Record<string, unknown>;
    for (const name of URL_ATTRIBUTES) {
      const value = attributes[name];
      if (typeof value === "string") attributes[name] = redactUrlQuery(value);
    }
  }
  return spans;
};

export const resolveTraceConfig: ResolveConfigFn<WorkerEnv> = (env) => ({
  exporter: {
    url: otlpTracesUrl(String(env.OTEL_EXPORTER_OTLP_ENDPOINT)),
    headers: parseOtlpHeaders(env.OTEL_EXPORTER_OTLP_HEADERS as string | undefined),
  },
  service: {
    name: (env.OTEL_SERVICE_NAME as string | undefined) || "mgx-ai-edge",
    namespace: "mgx-ai",
    version: (env.SENTRY_RELEASE as string | undefined) || undefined,
  },
  handlers: { fetch: { acceptTraceContext: true } },
  postProcessor: redactSpanUrls,
});
