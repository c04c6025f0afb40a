import { z } from "zod";

/**
 * The WebSocket wire protocol (API contract, "Events"), shared by the hub and
 * the SDK. Frozen by test/unit/events/frames.test.ts: a change here is a
 * visible diff in that golden file.
 */

/** Answered by the runtime without waking the hub, so it must match byte for byte. */
export const PING_FRAME = '{"type":"ping"}';
export const PONG_FRAME = '{"type":"pong"}';

/** RFC 6455 "Try Again Later": a slow consumer, or a full hub. The client resumes from its last event. */
export const CLOSE_TRY_AGAIN_LATER = 1013;
/** Policy violation: the client should not retry without changing something (bad ticket, bad frames). */
export const CLOSE_POLICY = 1008;

export const ERROR_CODES = {
  CONNECTION_LIMIT: "CONNECTION_LIMIT",
  SLOW_CONSUMER: "SLOW_CONSUMER",
  BAD_FRAME: "BAD_FRAME",
  /** The API key the stream was opened with (directly or through a ticket) was revoked. */
  CREDENTIALS_REVOKED: "CREDENTIALS_REVOKED",
  /** The stream's credentials expired (an API key's `expires_at`, a JWT's `exp`, or the key's behind a ticket). */
  CREDENTIALS_EXPIRED: "CREDENTIALS_EXPIRED",
} as const;

export type ServerFrame =
  | { type: "event"; event: Record<string, unknown> }
  | { type: "replay"; recovered: boolean; count: number }
  | { type: "error"; code: string; message: string }
  | { type: "subscribed"; types: string[]; channels: string[] }
  | { type: "pong" };

export const ClientFrameSchema = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("subscribe"),
    types: z.array(z.string()).max(50).default([]),
    channels: z.array(z.string()).max(50).default([]),
  }),
  z.object({
    type: z.literal("unsubscribe"),
    types: z.array(z.string()).max(50).default([]),
    channels: z.array(z.string()).max(50).default([]),
  }),
  z.object({
    type: z.literal("ping"),
    /** Acknowledges every event up to this seq: how a client shows it keeps up (see backlog.ts). */
    last_seq: z.number().int().min(0).optional(),
  }),
]);

export type ClientFrame = z.input<typeof ClientFrameSchema>;

export const ServerFrameSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("event"), event: z.record(z.string(), z.unknown()) }),
  z.object({ type: z.literal("replay"), recovered: z.boolean(), count: z.number().int().min(0) }),
  z.object({ type: z.literal("error"), code: z.string(), message: z.string() }),
  z.object({ type: z.literal("subscribed"), types: z.array(z.string()), channels: z.array(z.string()) }),
  z.object({ type: z.literal("pong") }),
]);

export function errorFrame(code: string, message: string): string {
  return JSON.stringify({ type: "error", code, message });
}

export function replayFrame(recovered: boolean, count: number): string {
  return JSON.stringify({ type: "replay", recovered, count });
}

/** The stored event JSON goes into the frame as is: no parse, no re-serialize. */
export function eventFrame(eventJson: string): string {
  return `{"type":"event","event":${eventJson}}`;
}
