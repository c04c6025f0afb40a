/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/). When
 * OpenTelemetry is on, its active span already continues the caller's trace;
 * this is the fallback that keeps log correlation working when it is off.
 */

export interface TraceIds {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  sampled: boolean;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const INVALID_TRACE_ID = "0".repeat(32);
const INVALID_SPAN_ID = "0".repeat(16);

export function parseTraceparent(header: string | null | undefined): Omit<TraceIds, "spanId"> | null {
  if (!header) return null;
  const match = TRACEPARENT.exec(header.trim().toLowerCase());
  if (!match) return null;
  const [, version, traceId, parentSpanId, flags] = match;
  if (version === "ff" || traceId === INVALID_TRACE_ID || parentSpanId === INVALID_SPAN_ID) return null;
  return { traceId, parentSpanId, sampled: (Number.parseInt(flags, 16) & 1) === 1 };
}

export function randomHex(bytes: number): string {
  const buffer = crypto.getRandomValues(new Uint8Array(bytes));
  let hex = "";
  for (const byte of buffer) hex += byte.toString(16).padStart(2, "0");
  return hex;
}

/** Continue the caller's trace if it sent a valid traceparent, else start one. */
export function continueOrStartTrace(traceparent: string | null | undefined): TraceIds {
  const parent = parseTraceparent(traceparent);
  if (parent) return { ...parent, spanId: randomHex(8) };
  return { traceId: randomHex(16), spanId: randomHex(8), sampled: true };
}

export function formatTraceparent(ids: TraceIds): string {
  return `00-${ids.traceId}-${ids.spanId}-${ids.sampled ? "01" : "00"}`;
}
