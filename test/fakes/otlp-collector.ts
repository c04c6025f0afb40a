import { type RecordedRequest, type RecordingServer, startRecordingServer } from "./recording-server.ts";

/** An OTLP/HTTP trace receiver (JSON encoding, `POST /v1/traces`), as otel-cf-workers exports. */

export interface ExportedSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  attributes: Record<string, unknown>;
  serviceName?: string;
}

interface OtlpAttribute {
  key: string;
  value: Record<string, unknown>;
}

function attributeValue(value: Record<string, unknown>): unknown {
  return value.stringValue ?? value.intValue ?? value.doubleValue ?? value.boolValue ?? value.arrayValue ?? null;
}

function attributes(list: OtlpAttribute[] | undefined): Record<string, unknown> {
  return Object.fromEntries((list ?? []).map((attribute) => [attribute.key, attributeValue(attribute.value)]));
}

export function spansIn(request: RecordedRequest): ExportedSpan[] {
  const payload = JSON.parse(request.body.toString("utf8"));
  const spans: ExportedSpan[] = [];
  for (const resourceSpans of payload.resourceSpans ?? []) {
    const serviceName = attributes(resourceSpans.resource?.attributes)["service.name"] as string | undefined;
    for (const scopeSpans of resourceSpans.scopeSpans ?? []) {
      for (const span of scopeSpans.spans ?? []) {
        spans.push({
          traceId: span.traceId,
          spanId: span.spanId,
          parentSpanId: span.parentSpanId || undefined,
          name: span.name,
          attributes: attributes(span.attributes),
          serviceName,
        });
      }
    }
  }
  return spans;
}

export interface OtlpCollector extends RecordingServer {
  spans(): ExportedSpan[];
}

export async function startOtlpCollector(): Promise<OtlpCollector> {
  const server = await startRecordingServer((request, response) => {
    if (request.method !== "POST" || request.path !== "/v1/traces") {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { "Content-Type": "application/json" }).end("{}");
  });
  return {
    ...server,
    spans: () => server.requests.filter((request) => request.path === "/v1/traces").flatMap(spansIn),
  };
}
