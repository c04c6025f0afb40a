import { describe, expect, it, vi } from "vitest";
import { backoffDelayMs, EventClient, type PublishedEvent, RecentIds } from "../../../sdk/index.ts";
import { SEED_EXAMPLES } from "./examples.ts";

class FakeSocket {
  readyState = 0;
  sent: string[] = [];
  readonly url: string;
  private listeners = new Map<string, ((event: any) => void)[]>();
  constructor(url: string) {
    this.url = url;
  }
  addEventListener(type: string, listener: (event: any) => void) {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }
  send(text: string) {
    this.sent.push(text);
  }
  close() {
    this.drop();
  }
  emit(type: string, event: unknown = {}) {
    for (const listener of this.listeners.get(type) ?? []) listener(event);
  }
  open() {
    this.readyState = 1;
    this.emit("open");
  }
  frame(frame: unknown) {
    this.emit("message", { data: JSON.stringify(frame) });
  }
  drop() {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.emit("close", { code: 1006 });
  }
}

function event(
  seq: number,
  type: "agent.message" | "tool.call" = "agent.message",
): { type: "event"; event: Record<string, unknown> & { data: Record<string, unknown> } } {
  const example = structuredClone(SEED_EXAMPLES[type]) as { data: Record<string, unknown> };
  return { type: "event", event: { ...example, event_id: `evt_${String(seq).padStart(6, "0")}`, seq } };
}

function setup(overrides: Partial<ConstructorParameters<typeof EventClient>[0]> = {}) {
  const sockets: FakeSocket[] = [];
  let tickets = 0;
  const client = new EventClient({
    baseUrl: "http://api.test",
    getTicket: async () => `tkt_${++tickets}`,
    WebSocket: (url) => {
      const socket = new FakeSocket(url);
      sockets.push(socket);
      return socket as unknown as WebSocket;
    },
    backoff: { baseDelayMs: 1, maxDelayMs: 5 },
    ...overrides,
  });
  const next = async (count: number) => {
    while (sockets.length < count) await new Promise((wake) => setTimeout(wake, 1));
    return sockets[count - 1];
  };
  return { client, sockets, next };
}

describe("SDK building blocks", () => {
  it("backoff has full jitter between 0.5 s and a doubling ceiling capped at 30 s", () => {
    expect(backoffDelayMs(0, undefined, () => 0)).toBe(500);
    expect(backoffDelayMs(0, undefined, () => 1)).toBe(1_000);
    expect(backoffDelayMs(3, undefined, () => 1)).toBe(8_000);
    expect(backoffDelayMs(20, undefined, () => 1)).toBe(30_000);
    const delays = Array.from({ length: 200 }, () => backoffDelayMs(10));
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(500);
    expect(Math.max(...delays)).toBeLessThanOrEqual(30_000);
    expect(new Set(delays).size).toBeGreaterThan(150);
  });

  it("dedupe memory is bounded and forgets the oldest", () => {
    const recent = new RecentIds(3);
    expect(["a", "b", "c", "a"].map((id) => recent.add(id))).toEqual([true, true, true, false]);
    recent.add("d");
    expect(recent.size).toBe(3);
    expect(recent.add("a")).toBe(true);
  });
});

describe("EventClient", () => {
  it("dispatches typed handlers once per event and resumes from the last one after a drop", async () => {
    const { client, next } = setup();
    const messages: PublishedEvent<"agent.message">[] = [];
    const all: number[] = [];
    client.on("agent.message", (received) => messages.push(received));
    client.on("*", (received) => all.push(received.seq));
    client.connect();
    const first = await next(1);
    expect(first.url).toBe("ws://api.test/api/v1/events/ws?ticket=tkt_1&types=*&channels=*");
    first.open();
    for (const seq of [1, 2, 3]) first.frame(event(seq));
    first.frame(event(4, "tool.call"));
    first.frame(event(3)); // a duplicate
    first.drop();
    expect(client.state).toBe("reconnecting");

    const second = await next(2);
    expect(new URL(second.url).searchParams.get("last_event_id")).toBe("evt_000004");
    expect(new URL(second.url).searchParams.get("ticket")).toBe("tkt_2");
    second.open();
    second.frame({ type: "replay", recovered: true, count: 2 });
    second.frame(event(4, "tool.call")); // replayed twice across the boundary: dropped
    second.frame(event(5));
    second.frame(event(6));
    expect(all).toEqual([1, 2, 3, 4, 5, 6]);
    expect(messages.map((received) => received.data.role)).toEqual(Array(5).fill("assistant"));
    client.close();
    expect(client.state).toBe("closed");
  });

  it("calls onGap when the server cannot replay", async () => {
    const { client, next } = setup({ lastEventId: "evt_old" });
    const gaps: (string | null)[] = [];
    client.onGap((gap) => gaps.push(gap.lastEventId));
    client.connect();
    const socket = await next(1);
    expect(new URL(socket.url).searchParams.get("last_event_id")).toBe("evt_old");
    socket.open();
    socket.frame({ type: "replay", recovered: false, count: 0 });
    expect(gaps).toEqual(["evt_old"]);
    client.close();
  });

  it("refuses at construction the options every upgrade URL would carry and the server refuses (422)", () => {
    const base = { baseUrl: "http://api.test", getTicket: async () => "tkt" };
    expect(() => new EventClient({ ...base, types: ["task.exploded"] })).toThrow(
      new TypeError('EventClient: "task.exploded" is not a known event type'),
    );
    expect(() => new EventClient({ ...base, channels: ["user:1"] })).toThrow(TypeError);
    expect(() => new EventClient({ ...base, version: "3.0" })).toThrow(
      new TypeError("EventClient: unknown major version 3; supported majors: 1, 2"),
    );
    expect(() => new EventClient({ ...base, lastEventId: "evt_ok;drop" })).toThrow(
      new TypeError('EventClient: lastEventId "evt_ok;drop" is not an event id'),
    );
    expect(() => new EventClient({ ...base, lastEventId: `evt_${"a".repeat(61)}` })).toThrow(TypeError);
    expect(new EventClient({ ...base, types: ["task.*"], version: "1.0", lastEventId: "evt_01" }).lastEventId).toBe(
      "evt_01",
    );
  });

  it("buffers frames sent while disconnected and flushes them in order", async () => {
    const { client, next } = setup();
    client.subscribe(["tool.*"]);
    client.unsubscribe(["*"]);
    client.connect();
    const socket = await next(1);
    expect(socket.sent).toEqual([]);
    socket.open();
    expect(socket.sent.map((text) => JSON.parse(text))).toEqual([
      { type: "subscribe", types: ["tool.*"], channels: [] },
      { type: "unsubscribe", types: ["*"], channels: [] },
    ]);
    // The next connection asks for the subscription as it now stands.
    socket.drop();
    const again = await next(2);
    expect(new URL(again.url).searchParams.get("types")).toBe("tool.*");
    client.close();
  });

  it("rejects invalid events, still moving the resume point past them, and acknowledges progress", async () => {
    const { client, next } = setup({ ackEvery: 2 });
    const errors: string[] = [];
    const seen: number[] = [];
    client.onError((error) => errors.push(error.message));
    client.on("*", (received) => seen.push(received.seq));
    client.connect();
    const socket = await next(1);
    socket.open();
    socket.frame(event(1));
    const broken = event(2);
    broken.event.data.role = "narrator";
    socket.frame(broken);
    socket.frame(event(3));
    expect(seen).toEqual([1, 3]);
    expect(errors).toEqual([expect.stringContaining("invalid event evt_000002: data.role")]);
    expect(client.lastEventId).toBe("evt_000003");
    expect(socket.sent.map((text) => JSON.parse(text))).toEqual([{ type: "ping", last_seq: 2 }]);
    client.close();
  });

  it("keeps trying with backoff when tickets cannot be had", async () => {
    let calls = 0;
    const { client, next } = setup({
      getTicket: async () => {
        calls += 1;
        if (calls < 3) throw new Error("backend down");
        return "tkt_ok";
      },
    });
    const errors: string[] = [];
    client.onError((error) => errors.push(error.message));
    client.connect();
    const socket = await next(1);
    expect(socket.url).toContain("ticket=tkt_ok");
    expect(errors).toEqual(["backend down", "backend down"]);
    client.close();
  });

  it("stops, closed, when the API refuses its key a ticket, rather than retry until the address is blocked", async () => {
    const refusals = [401, 403];
    for (const status of refusals) {
      const fetchMock = vi.fn(async () =>
        Response.json(
          { type: "/problems/x", title: "Refused", status, detail: "Invalid credentials.", code: "X", request_id: "r" },
          { status, headers: { "Content-Type": "application/problem+json" } },
        ),
      );
      vi.stubGlobal("fetch", fetchMock);
      try {
        const { client, sockets } = setup({ getTicket: undefined, apiKey: "mgx_wrong" });
        const errors: string[] = [];
        const states: string[] = [];
        client.onError((error) => errors.push(error.message));
        client.onStateChange((state) => states.push(state));
        client.connect();
        await vi.waitFor(() => expect(states).toContain("closed"));
        await new Promise((wake) => setTimeout(wake, 30)); // backoff here is ≤ 5 ms: a retry would have come
        expect(fetchMock).toHaveBeenCalledTimes(1);
        expect(errors).toEqual([`${status} X: Invalid credentials.`]);
        expect(states).toEqual(["connecting", "closed"]);
        expect(sockets).toEqual([]);
      } finally {
        vi.unstubAllGlobals();
      }
    }
  });
});
