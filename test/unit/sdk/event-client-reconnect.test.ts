import { afterEach, describe, expect, it, vi } from "vitest";
import { EventClient, type PublishedEvent } from "../../../sdk/index.ts";
import { SEED_EXAMPLES } from "../events/examples.ts";
import { recordDelays } from "./timer-delays.ts";

/**
 * The EventClient against servers that misbehave: one that accepts the upgrade and closes at once (a full hub,
 * CONNECTION_LIMIT and 1013), and one that sends frames the client cannot use.
 */

class FakeSocket {
  readyState = 0;
  sent: string[] = [];
  readonly url: string;
  private listeners = new Map<string, ((event: unknown) => void)[]>();
  constructor(url: string) {
    this.url = url;
  }
  addEventListener(type: string, listener: (event: unknown) => void) {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }
  send(text: string) {
    this.sent.push(text);
  }
  close() {
    this.drop(1000);
  }
  emit(type: string, event: unknown = {}) {
    for (const listener of this.listeners.get(type) ?? []) listener(event);
  }
  open() {
    this.readyState = 1;
    this.emit("open");
  }
  text(data: string) {
    this.emit("message", { data });
  }
  frame(frame: unknown) {
    this.text(JSON.stringify(frame));
  }
  drop(code = 1006) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.emit("close", { code });
  }
}

function event(seq: number) {
  const example = structuredClone(SEED_EXAMPLES["agent.message"]);
  return { type: "event", event: { ...example, event_id: `evt_${String(seq).padStart(6, "0")}`, seq } };
}

const refusedFull = {
  type: "error",
  code: "CONNECTION_LIMIT",
  message: "This workspace already has 1000 event connections.",
};

function setup() {
  const sockets: FakeSocket[] = [];
  const client = new EventClient({
    baseUrl: "http://api.test",
    getTicket: async () => "tkt_x",
    WebSocket: (url) => {
      const socket = new FakeSocket(url);
      sockets.push(socket);
      return socket as unknown as WebSocket;
    },
    // random() = 1: each delay is its ceiling, base · 2^(attempt+1), so the delays tell the attempt.
    backoff: { baseDelayMs: 10, maxDelayMs: 10_000 },
    random: () => 1,
  });
  const next = async (count: number) => {
    while (sockets.length < count) await new Promise((wake) => setTimeout(wake, 1));
    return sockets[count - 1];
  };
  return { client, sockets, next };
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe("EventClient backoff", () => {
  it("keeps backing off while the server accepts each connection and closes it at once (a full hub)", async () => {
    const delays = recordDelays();
    const { client, next } = setup();
    const errors: string[] = [];
    client.onError((error) => errors.push(error.message));
    client.connect();
    for (let count = 1; count <= 4; count++) {
      const socket = await next(count);
      socket.open();
      socket.frame(refusedFull);
      socket.drop(1013);
    }
    await next(5);
    // Not 20 ms every time: each refusal doubles the ceiling, as for a connection that fails outright.
    expect(delays).toEqual([20, 40, 80, 160]);
    expect(errors).toHaveLength(4);
    client.close();
  });

  it("starts again from the shortest delay once a connection made progress (an event, or a pong on a quiet one)", async () => {
    const delays = recordDelays();
    const { client, next } = setup();
    const seen: number[] = [];
    client.on("*", (received: PublishedEvent) => seen.push(received.seq));
    client.connect();
    const refused = await next(1);
    refused.open();
    refused.frame(refusedFull);
    refused.drop(1013);

    const working = await next(2);
    working.open();
    working.frame(event(1));
    working.drop(); // a deploy, a network change: reconnect soon

    const quiet = await next(3);
    quiet.open();
    quiet.frame({ type: "pong" });
    quiet.drop();

    await next(4);
    expect(delays).toEqual([20, 20, 20]);
    expect(seen).toEqual([1]);
    client.close();
  });
});

describe("EventClient and malformed frames", () => {
  it("reports a frame it cannot use to onError, not as an exception out of the socket's listener, and goes on", async () => {
    const { client, next } = setup();
    const errors: string[] = [];
    const seen: number[] = [];
    client.onError((error) => errors.push(error.message));
    client.on("*", (received: PublishedEvent) => seen.push(received.seq));
    client.connect();
    const socket = await next(1);
    socket.open();
    socket.frame(event(1));
    // In Node, an exception thrown by a WebSocket listener is an uncaught exception: it ends the process.
    expect(() => socket.text("null")).not.toThrow();
    expect(() => socket.frame({ type: "event" })).not.toThrow();
    expect(() => socket.frame({ type: "event", event: null })).not.toThrow();
    expect(() => socket.frame({ type: "event", event: "evt_000002" })).not.toThrow();
    socket.text('{"type":"event","event":{"event_id":"evt_0000'); // cut off mid-frame
    socket.frame(event(2));
    expect(seen).toEqual([1, 2]);
    expect(errors).toHaveLength(5);
    expect(client.lastEventId).toBe("evt_000002");
    expect(client.state).toBe("open");
    client.close();
  });
});

describe("EventClient closed and connected again while a ticket is on its way", () => {
  it("opens one socket, not also one for the ticket asked before close() (React StrictMode: mount, unmount, mount)", async () => {
    const sockets: FakeSocket[] = [];
    const tickets: ((ticket: string) => void)[] = [];
    const client = new EventClient({
      baseUrl: "http://api.test",
      getTicket: () => new Promise<string>((resolve) => tickets.push(resolve)),
      WebSocket: (url) => {
        const socket = new FakeSocket(url);
        sockets.push(socket);
        return socket as unknown as WebSocket;
      },
    });
    client.connect();
    client.close();
    client.connect();
    expect(tickets).toHaveLength(2);
    tickets[0]("tkt_before_close");
    tickets[1]("tkt_after");
    await new Promise((wake) => setTimeout(wake, 5));
    // The first would stay open unseen: never closed, never acknowledging, one of the workspace's connections.
    expect(sockets.map((socket) => new URL(socket.url).searchParams.get("ticket"))).toEqual(["tkt_after"]);
    sockets[0].open();
    expect(client.state).toBe("open");
    client.close();
  });

  it("takes the events of a log that started again after a gap, rather than dropping them as seen", async () => {
    const { client, next } = setup();
    const seen: number[] = [];
    const gaps: unknown[] = [];
    client.on("*", (received: PublishedEvent) => seen.push(received.seq));
    client.onGap((gap) => gaps.push(gap));
    client.connect();
    const first = await next(1);
    first.open();
    first.frame(event(41));
    first.frame(event(42));
    first.drop();
    // The hub lost its log (local state wiped): it cannot replay after seq 42, and counts again from 1.
    const second = await next(2);
    second.open();
    second.frame({ type: "replay", recovered: false });
    second.frame(event(1));
    second.frame(event(2));
    expect(gaps).toHaveLength(1);
    expect(seen).toEqual([41, 42, 1, 2]);
    client.close();
  });
});
