import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { EventHub } from "../../durable-objects/event-hub.ts";
import type { EventEnvelope } from "../../src/events/catalog.ts";
import { DEFAULT_LIMITS, EventHubCore, type HubHost, type HubLimits, type HubSocket } from "../../src/events/hub.ts";
import { EventLog } from "../../src/events/log.ts";
import { newId } from "../../src/lib/ids.ts";
import { uniqueWorkspace } from "../unit/events/hub-client.ts";

/**
 * EventHubCore driven directly, on a real DO SQLite database, with sockets
 * whose send queue the test controls: what the runtime cannot easily fake.
 */

class FakeSocket implements HubSocket {
  readyState = 1;
  sent: string[] = [];
  closedWith: { code?: number; reason?: string } | null = null;
  private attachment: unknown = null;
  send(message: string): void {
    if (this.readyState !== 1) throw new Error("closed");
    this.sent.push(message);
  }
  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = 2;
  }
  serializeAttachment(value: unknown): void {
    this.attachment = structuredClone(value);
  }
  deserializeAttachment(): unknown {
    return this.attachment;
  }
  frames(): { type: string; [key: string]: any }[] {
    return this.sent.map((message) => JSON.parse(message));
  }
  lastSeq(): number {
    return (
      this.frames()
        .filter((frame) => frame.type === "event")
        .at(-1)?.event.seq ?? 0
    );
  }
}

function fakeHost(): HubHost & { all: FakeSocket[]; alarmAtMs: number | null } {
  const host = {
    all: [] as FakeSocket[],
    alarmAtMs: null as number | null,
    accept: (socket: HubSocket) => {
      host.all.push(socket as FakeSocket);
    },
    sockets: () => host.all,
    getAlarm: async () => host.alarmAtMs,
    setAlarm: async (timeMs: number) => {
      host.alarmAtMs = timeMs;
    },
  };
  return host;
}

function toolCall(workspaceId: string, size = 10, character = "x"): EventEnvelope {
  return {
    event_id: newId("event"),
    event_type: "tool.call",
    timestamp: new Date().toISOString(),
    workspace_id: workspaceId,
    data: {
      tool_id: "c",
      tool_name: "write_file",
      arguments: { text: character.repeat(size) },
      task_id: "t",
      agent_id: "a",
    },
    version: "1.0",
  };
}

async function withCore<R>(
  limits: Partial<HubLimits>,
  run: (core: EventHubCore, host: ReturnType<typeof fakeHost>, clock: { nowMs: number }, sql: SqlStorage) => Promise<R>,
): Promise<R> {
  const workspace = uniqueWorkspace("core");
  return runInDurableObject(env.EVENT_HUB.getByName(workspace), async (_instance: EventHub, state) => {
    const host = fakeHost();
    const clock = { nowMs: Date.now() };
    const core = new EventHubCore(state.storage.sql, host, { ...DEFAULT_LIMITS, ...limits }, () => clock.nowMs);
    return run(core, host, clock, state.storage.sql);
  });
}

const connectAll = { types: [], channels: [], version: null, lastEventId: null, holder: "test" };

describe("slow consumers", () => {
  it("a socket too far behind gets an error frame and close 1013; the ones that keep up get every event", async () => {
    await withCore({ maxUnackedBytes: 20_000 }, async (core) => {
      const reader = new FakeSocket();
      const stalled = new FakeSocket();
      const lagging = new FakeSocket();
      for (const socket of [reader, stalled, lagging]) core.connect(socket, connectAll);
      for (let i = 0; i < 100; i++) {
        await core.publish(toolCall("ws_core", 1_000));
        // The reader acknowledges what it got; the lagging one stays 30 events behind; the stalled one never answers.
        core.onMessage(reader, JSON.stringify({ type: "ping", last_seq: reader.lastSeq() }));
        if (lagging.closedWith === null)
          core.onMessage(lagging, JSON.stringify({ type: "ping", last_seq: Math.max(0, lagging.lastSeq() - 30) }));
      }

      expect(stalled.closedWith).toEqual({ code: 1013, reason: "slow consumer: resume with last_event_id" });
      const stalledFrames = stalled.frames();
      expect(stalledFrames.at(-1)).toMatchObject({ type: "error", code: "SLOW_CONSUMER" });
      // Cut off at the limit: what the hub queues for it is bounded by the limit, not by the stream.
      const frameBytes = stalled.sent[0].length;
      const delivered = stalledFrames.filter((frame) => frame.type === "event").length;
      expect(delivered).toBeGreaterThanOrEqual(Math.floor(20_000 / frameBytes));
      expect(delivered).toBeLessThanOrEqual(Math.floor(20_000 / frameBytes) + 1);
      expect(lagging.closedWith?.code).toBe(1013);
      expect(reader.closedWith).toBeNull();
      const readerEvents = reader.frames().filter((frame) => frame.type === "event");
      expect(readerEvents.map((frame) => frame.event.seq)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
      // Acknowledgements are not answered (they would double the traffic); other pings are.
      expect(reader.frames().filter((frame) => frame.type === "pong")).toHaveLength(0);
      core.onMessage(reader, '{ "type": "ping" }');
      expect(reader.frames().at(-1)).toEqual({ type: "pong" });
    });
  });
});

describe("a resume's replay", () => {
  it("does not count against the slow-consumer limit: a live event right after a large replay is delivered", async () => {
    await withCore({ maxUnackedBytes: 20_000 }, async (core) => {
      const first = await core.publish(toolCall("ws_core", 1_000));
      const [{ event_id: lastEventId }] = core.log.after(first.seq - 1, 1);
      // Missed while the client was away: more than the limit.
      for (let i = 0; i < 40; i++) await core.publish(toolCall("ws_core", 1_000));
      const resumed = new FakeSocket();
      core.connect(resumed, { ...connectAll, lastEventId });
      await core.publish(toolCall("ws_core", 1_000));
      expect(resumed.closedWith).toBeNull();
      expect(resumed.frames().filter((frame) => frame.type === "event")).toHaveLength(41);
      // Live sends still count: a client that acknowledges nothing is cut off once they pass the limit.
      for (let i = 0; i < 25 && resumed.closedWith === null; i++) await core.publish(toolCall("ws_core", 1_000));
      expect(resumed.closedWith?.code).toBe(1013);
    });
  });
});

describe("frames from a socket the hub has closed", () => {
  it("are not answered: the slow consumer's last frame stays SLOW_CONSUMER, and nothing throws", async () => {
    await withCore({ maxUnackedBytes: 5_000 }, async (core) => {
      const stalled = new FakeSocket();
      core.connect(stalled, connectAll);
      for (let i = 0; i < 10; i++) await core.publish(toolCall("ws_core", 1_000));
      expect(stalled.closedWith?.code).toBe(1013);
      const sentBefore = stalled.sent.length;
      // Sent by the client before it saw the close: a subscribe, a bad frame, a ping spelled with spaces.
      for (const frame of ['{"type":"subscribe","types":["task.*"]}', "garbage", '{ "type": "ping" }'])
        expect(() => core.onMessage(stalled, frame)).not.toThrow();
      expect(stalled.sent).toHaveLength(sentBefore);
      expect(stalled.frames().at(-1)).toMatchObject({ type: "error", code: "SLOW_CONSUMER" });
    });
  });
});

describe("group commit", () => {
  it("publishes that arrive together are appended in call order and sent once each", async () => {
    await withCore({}, async (core) => {
      const socket = new FakeSocket();
      core.connect(socket, connectAll);
      const events = Array.from({ length: 25 }, () => toolCall("ws_core"));
      const results = await Promise.all(events.map((event) => core.publish(event)));
      expect(results.map((result) => result.seq)).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
      expect(socket.frames().map((frame) => frame.event.event_id)).toEqual(events.map((event) => event.event_id));
      // The same event again, in another batch: not written, not sent.
      expect(await core.publish(events[3])).toEqual({ seq: 4, duplicate: true });
      expect(socket.sent).toHaveLength(25);
    });
  });
});

describe("group commit across chunks", () => {
  it("keeps seq contiguous past chunk boundaries, with repeats (earlier or in the same call) written once", async () => {
    await withCore({}, async (core) => {
      const socket = new FakeSocket();
      core.connect(socket, connectAll);
      const earlier = toolCall("ws_core");
      expect(await core.publish(earlier)).toEqual({ seq: 1, duplicate: false });
      const events = Array.from({ length: 40 }, () => toolCall("ws_core"));
      // 45 publishes in one turn: 40 new, the earlier one twice, and three repeats of this call's own.
      const batch = [...events.slice(0, 20), earlier, events[5], ...events.slice(20), earlier, events[30], events[39]];
      const results = await Promise.all(batch.map((event) => core.publish(event)));
      const bySeq = (index: number) => results[batch.indexOf(events[index])].seq;
      expect(events.map((_, index) => bySeq(index))).toEqual(Array.from({ length: 40 }, (_, i) => i + 2));
      expect(results.filter((result) => result.duplicate)).toEqual([
        { seq: 1, duplicate: true },
        { seq: 7, duplicate: true },
        { seq: 1, duplicate: true },
        { seq: 32, duplicate: true },
        { seq: 41, duplicate: true },
      ]);
      // Sent once each, in seq order.
      expect(socket.frames().map((frame) => frame.event.seq)).toEqual(Array.from({ length: 41 }, (_, i) => i + 1));
    });
  });
});

describe("publishMany", () => {
  it("appends a large call after the single publishes waiting before it, repeats once, bodies byte for byte", async () => {
    await withCore({}, async (core, _host, _clock, sql) => {
      const socket = new FakeSocket();
      core.connect(socket, connectAll);
      const waiting = core.publish(toolCall("ws_core"));
      const tricky = toolCall("ws_core");
      tricky.data = { ...tricky.data, arguments: { text: 'quote " backslash \\ newline \n emoji 😀 lone \ud800 é' } };
      const events = [tricky, ...Array.from({ length: 299 }, () => toolCall("ws_core", 200))];
      const results = await core.publishMany([...events, events[10], tricky]);
      expect((await waiting).seq).toBe(1);
      expect(results.slice(0, 300).map((result) => result.seq)).toEqual(Array.from({ length: 300 }, (_, i) => i + 2));
      expect(results.slice(300)).toEqual([
        { seq: 12, duplicate: true },
        { seq: 2, duplicate: true },
      ]);
      const stored = sql.exec<{ body: string }>("SELECT body FROM evh_events WHERE seq = 2").one().body;
      expect(stored).toBe(JSON.stringify({ ...tricky, seq: 2 }));
      expect(socket.frames().map((frame) => frame.event.seq)).toEqual(Array.from({ length: 301 }, (_, i) => i + 1));
      expect(core.log.lastSeq()).toBe(301);
    });
  });
});

describe("connection cap", () => {
  it("refuses the socket over the cap with a CONNECTION_LIMIT frame and 1013", async () => {
    await withCore({ maxConnections: 2 }, async (core) => {
      const [first, second, third] = [new FakeSocket(), new FakeSocket(), new FakeSocket()];
      for (const socket of [first, second, third]) core.connect(socket, connectAll);
      expect(third.frames()).toEqual([
        { type: "error", code: "CONNECTION_LIMIT", message: expect.stringContaining("limit 2") },
      ]);
      expect(third.closedWith?.code).toBe(1013);
      await core.publish(toolCall("ws_core"));
      expect(first.frames()).toHaveLength(1);
      expect(third.frames()).toHaveLength(1);
      // A closed socket frees its place.
      first.close(1000);
      const fourth = new FakeSocket();
      core.connect(fourth, connectAll);
      expect(fourth.closedWith).toBeNull();
    });
  });
});

describe("slow consumers, counted in bytes", () => {
  it("a stream of text in a script of 3-byte characters is cut off at the limit in UTF-8 bytes, not in characters", async () => {
    await withCore({ maxUnackedBytes: 20_000 }, async (core) => {
      const stalled = new FakeSocket();
      await core.connect(stalled, connectAll);
      for (let i = 0; i < 30 && stalled.closedWith === null; i++) await core.publish(toolCall("ws_core", 1_000, "語"));
      expect(stalled.closedWith?.code).toBe(1013);
      const frameBytes = new TextEncoder().encode(stalled.sent[0]).byteLength;
      expect(frameBytes).toBeGreaterThan(3_000);
      const delivered = stalled.frames().filter((frame) => frame.type === "event").length;
      expect(delivered).toBe(Math.floor(20_000 / frameBytes) + 1);
    });
  });
});

describe("tickets", () => {
  it("a hub whose tickets table predates key ids and credential expiries gains the columns, and its tickets still work", async () => {
    await withCore({}, async (_core, _host, clock, sql) => {
      sql.exec("DROP TABLE evh_tickets");
      sql.exec(
        "CREATE TABLE evh_tickets (ticket_hash TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at_ms INTEGER NOT NULL)",
      );
      sql.exec("INSERT INTO evh_tickets VALUES ('old-hash', 'key old', ?)", clock.nowMs + 60_000);
      const log = new EventLog(sql);
      expect(log.takeTicket("old-hash", clock.nowMs)).toEqual({ display: "key old", keyId: null, expiresAtMs: null });
      const holder = { display: "key new", keyId: "key_new", expiresAtMs: clock.nowMs + 3_600_000 };
      log.saveTicket("new-hash", holder, clock.nowMs + 60_000);
      expect(log.takeTicket("new-hash", clock.nowMs)).toEqual(holder);
    });
  });

  it("work once, and only within 60 s", async () => {
    await withCore({}, async (core, host, clock) => {
      const holder = { display: "key test", keyId: "key_test", expiresAtMs: null };
      const issued = await core.issueTicket(holder);
      expect(issued?.expiresAtMs).toBe(clock.nowMs + 60_000);
      expect(host.alarmAtMs).not.toBeNull();
      expect(await core.redeemTicket(issued!.secret)).toEqual(holder);
      expect(await core.redeemTicket(issued!.secret)).toBeNull();

      const late = await core.issueTicket(holder);
      clock.nowMs += 60_001;
      expect(await core.redeemTicket(late!.secret)).toBeNull();
      expect(await core.redeemTicket("not-a-ticket")).toBeNull();

      await core.issueTicket({ display: "expires unused", keyId: null, expiresAtMs: null });
      clock.nowMs += 61_000;
      expect(await core.alarm()).toMatchObject({ trimmedTickets: 1 });
      expect(core.log.ticketCount()).toBe(0);
    });
  });
});

describe("credentials that expire", () => {
  it("close the stream when they do: at the alarm brought forward to then, or at the first event after", async () => {
    await withCore({}, async (core, host, clock) => {
      const idle = new FakeSocket();
      const busy = new FakeSocket();
      const lasting = new FakeSocket();
      await core.connect(idle, { ...connectAll, credentialsExpireAtMs: clock.nowMs + 10_000 });
      // The alarm comes when the first credentials expire, not at the next hourly trim.
      expect(host.alarmAtMs).toBe(clock.nowMs + 10_000);
      await core.connect(busy, { ...connectAll, credentialsExpireAtMs: clock.nowMs + 20_000 });
      await core.connect(lasting, connectAll);
      expect(host.alarmAtMs).toBe(clock.nowMs + 10_000);
      await core.publish(toolCall("ws_core"));
      expect([idle, busy, lasting].map((socket) => socket.lastSeq())).toEqual([1, 1, 1]);

      clock.nowMs += 10_000;
      expect(await core.alarm()).toMatchObject({ expiredStreams: 1 });
      expect(idle.closedWith).toEqual({ code: 1008, reason: "credentials expired" });
      expect(idle.frames().at(-1)).toEqual({
        type: "error",
        code: "CREDENTIALS_EXPIRED",
        message: "The credentials this stream was opened with have expired.",
      });
      expect(host.alarmAtMs).toBe(clock.nowMs + 10_000);

      // An event published after they expire, before the alarm has come, does not reach the stream either.
      clock.nowMs += 10_000;
      await core.publish(toolCall("ws_core"));
      expect(busy.closedWith).toEqual({ code: 1008, reason: "credentials expired" });
      expect(busy.frames().map((frame) => frame.type)).toEqual(["event", "error"]);
      expect(lasting.lastSeq()).toBe(2);
      expect(await core.alarm()).toMatchObject({ expiredStreams: 0 });
      // Nothing left to expire: back to trimming the log hourly.
      expect(host.alarmAtMs).toBe(clock.nowMs + DEFAULT_LIMITS.trimIntervalMs);
    });
  });

  it("already expired at connect: refused with the frame, no replay", async () => {
    await withCore({}, async (core, _host, clock) => {
      const first = await core.publish(toolCall("ws_core"));
      expect(first.seq).toBe(1);
      const late = new FakeSocket();
      await core.connect(late, { ...connectAll, lastEventId: null, credentialsExpireAtMs: clock.nowMs });
      expect(late.closedWith).toEqual({ code: 1008, reason: "credentials expired" });
      expect(late.frames().map((frame) => frame.code)).toEqual(["CREDENTIALS_EXPIRED"]);
    });
  });

  it("a ticket stops working when the credentials it was issued for expire, though it has not", async () => {
    await withCore({}, async (core, _host, clock) => {
      const holder = { display: "key short", keyId: "key_short", expiresAtMs: clock.nowMs + 5_000 };
      const kept = await core.issueTicket(holder);
      const late = await core.issueTicket(holder);
      expect(await core.redeemTicket(kept!.secret)).toEqual(holder);
      clock.nowMs += 5_000;
      expect(await core.redeemTicket(late!.secret)).toBeNull();
    });
  });

  it("far ahead, past 2189 (the runtime takes no alarm then): the alarm comes within 30 days, and is set again", async () => {
    await runInDurableObject(env.EVENT_HUB.getByName(uniqueWorkspace("core")), async (_instance: EventHub, state) => {
      // The Durable Object's own alarm, which refuses dates after 2189.
      const host = {
        ...fakeHost(),
        getAlarm: () => state.storage.getAlarm(),
        setAlarm: (timeMs: number) => state.storage.setAlarm(timeMs),
      };
      const clock = { nowMs: Date.now() };
      const core = new EventHubCore(state.storage.sql, host, DEFAULT_LIMITS, () => clock.nowMs);
      const socket = new FakeSocket();
      const thirtyDaysMs = 30 * 24 * 60 * 60 * 1000;
      try {
        await core.connect(socket, { ...connectAll, credentialsExpireAtMs: Date.parse("9999-12-31T23:59:59Z") });
        expect(socket.closedWith).toBeNull();
        expect(await state.storage.getAlarm()).toBe(clock.nowMs + thirtyDaysMs);
        clock.nowMs += thirtyDaysMs;
        expect(await core.alarm()).toMatchObject({ expiredStreams: 0 });
        expect(socket.closedWith).toBeNull();
        expect(await state.storage.getAlarm()).toBe(clock.nowMs + thirtyDaysMs);
      } finally {
        await state.storage.deleteAlarm();
      }
    });
  });

  it("survive hibernation in the socket's attachment", async () => {
    await withCore({}, async (core, host, clock, sql) => {
      const socket = new FakeSocket();
      await core.connect(socket, { ...connectAll, credentialsExpireAtMs: clock.nowMs + 1_000 });
      const woken = new EventHubCore(sql, host, DEFAULT_LIMITS, () => clock.nowMs);
      clock.nowMs += 1_000;
      expect(await woken.alarm()).toMatchObject({ expiredStreams: 1 });
      expect(socket.closedWith?.reason).toBe("credentials expired");
    });
  });
});

describe("state after hibernation", () => {
  it("is rebuilt from the socket attachment", async () => {
    await withCore({}, async (core, host, _clock, sql) => {
      const socket = new FakeSocket();
      core.connect(socket, { ...connectAll, types: ["agent.*"] });
      // A fresh core over the same storage and sockets: what the runtime does after waking the object.
      const woken = new EventHubCore(sql, host);
      await woken.publish(toolCall("ws_core"));
      expect(socket.sent).toHaveLength(0);
      await woken.publish({
        ...toolCall("ws_core"),
        event_type: "agent.message",
        data: { task_id: "t", agent_id: "a", role: "user", message: "hi", tokens: 1 },
      });
      expect(socket.frames().map((frame) => frame.event.seq)).toEqual([2]);
    });
  });
});
