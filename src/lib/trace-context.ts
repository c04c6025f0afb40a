/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/). When
 * OpenTelemetry is on, its active span already continues the caller's trace;
 * this is the fallback that keeps log correlation working when it is off.
 */

import { toHex } from "./crypto.ts";

export interface TraceIds {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  sampled: boolean;
}

// A later version may add fields after the flags, each after a dash; a parser of version 00 reads the first four.
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const INVALID_TRACE_ID = "0".repeat(32);
const INVALID_SPAN_ID = "0".repeat(16);

export function parseTraceparent(header: string | null | undefined): Omit<TraceIds, "spanId"> | null {
  if (!header) return null;
  const match = TRACEPARENT.exec(header.trim().toLowerCase());
  if (!match) return null;
  const [, version, traceId, parentSpanId, flags, laterFields] = match;
  if (version === "ff" || (version === "00" && laterFields !== undefined)) return null;
  if (traceId === INVALID_TRACE_ID || parentSpanId === INVALID_SPAN_ID) return null;
  return { traceId, parentSpanId, sampled: (Number.parseInt(flags, 16) & 1) === 1 };
}

export function randomHex(bytes: number): string {
  return toHex(crypto.getRandomValues(new Uint8Array(bytes)));
}

/** Continue the caller's trace if it sent a valid traceparent, else start one. */
export function continueOrStartTrace(traceparent: string | null | undefined): TraceIds {
  const parent = parseTraceparent(traceparent);
  if (parent) return { ...parent, spanId: randomHex(8) };
  // A new trace's two ids from one draw of random bytes: one per request that starts a trace.
  const ids = randomHex(24);
  return { traceId: ids.slice(0, 32), spanId: ids.slice(32), sampled: true };
}

export function formatTraceparent(ids: TraceIds): string {
  return `00-${ids.traceId}-${ids.spanId}-${ids.sampled ? "01" : "00"}`;
}
