import { describe, expect, it } from "vitest";
import {
  ClientFrameSchema,
  ERROR_CODES,
  errorFrame,
  eventFrame,
  PING_FRAME,
  PONG_FRAME,
  replayFrame,
  ServerFrameSchema,
} from "../../../src/events/frames.ts";

/** The wire protocol, frozen: a change here is a change to the API contract ("Events"). */
describe("WebSocket frames (golden)", () => {
  it("server frames are byte for byte what clients parse", () => {
    expect(eventFrame('{"event_id":"evt_1","seq":1}')).toBe('{"type":"event","event":{"event_id":"evt_1","seq":1}}');
    expect(replayFrame(true, 3)).toBe('{"type":"replay","recovered":true,"count":3}');
    expect(replayFrame(false, 0)).toBe('{"type":"replay","recovered":false,"count":0}');
    expect(errorFrame(ERROR_CODES.SLOW_CONSUMER, "behind")).toBe(
      '{"type":"error","code":"SLOW_CONSUMER","message":"behind"}',
    );
    expect(PING_FRAME).toBe('{"type":"ping"}');
    expect(PONG_FRAME).toBe('{"type":"pong"}');
    for (const frame of [eventFrame('{"a":1}'), replayFrame(true, 1), errorFrame("X", "y"), PONG_FRAME])
      expect(ServerFrameSchema.safeParse(JSON.parse(frame)).success).toBe(true);
  });

  it("client frames: subscribe, unsubscribe, ping (with an optional acknowledgement)", () => {
    const accepted = [
      { type: "subscribe", types: ["task.*"], channels: ["task:task_1"] },
      { type: "unsubscribe", types: ["*"] },
      { type: "ping" },
      { type: "ping", last_seq: 42 },
    ];
    for (const frame of accepted) expect(ClientFrameSchema.safeParse(frame).success).toBe(true);
    for (const frame of [{ type: "ack" }, { type: "ping", last_seq: -1 }, { types: [] }])
      expect(ClientFrameSchema.safeParse(frame).success).toBe(false);
    expect(ERROR_CODES).toEqual({
      CONNECTION_LIMIT: "CONNECTION_LIMIT",
      SLOW_CONSUMER: "SLOW_CONSUMER",
      BAD_FRAME: "BAD_FRAME",
      CREDENTIALS_REVOKED: "CREDENTIALS_REVOKED",
      CREDENTIALS_EXPIRED: "CREDENTIALS_EXPIRED",
    });
  });
});
