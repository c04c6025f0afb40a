import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { EventHub } from "../../durable-objects/event-hub.ts";
import type { PublishedEvent } from "../../src/events/catalog.ts";
import { InvalidEventError, publish } from "../../src/events/publish.ts";
import { connectHub, hubHistory, publishMessage, publishToolCall, uniqueWorkspace } from "../unit/events/hub-client.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

function seqs(events: PublishedEvent[]): number[] {
  return events.map((event) => event.seq);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

describe("publish → EventHub", () => {
  it("stamps id, time, version and a strictly increasing per-workspace seq, even under concurrency", async () => {
    const workspace = uniqueWorkspace("seq");
    const other = uniqueWorkspace("seq_other");
    const published = await Promise.all(Array.from({ length: 40 }, () => publishMessage(workspace)));
    await publishMessage(other);
    expect(new Set(seqs(published)).size).toBe(40);
    expect([...seqs(published)].sort((a, b) => a - b)).toEqual(range(1, 40));
    for (const event of published) {
      expect(event.event_id).toMatch(/^evt_[0-9A-Z]{26}$/);
      expect(event.version).toBe("1.0");
      expect(Date.parse(event.timestamp)).not.toBeNaN();
    }
    // The log is in seq order, and seq order is publish order.
    expect(seqs(await hubHistory(workspace))).toEqual(range(1, 40));
    expect(seqs(await hubHistory(other))).toEqual([1]);
  });

  it("refuses an invalid event: nothing reaches the hub", async () => {
    const workspace = uniqueWorkspace("invalid");
    const attempt = publish(env, {
      event_type: "tool.result",
      workspace_id: workspace,
      data: { tool_id: "t", tool_name: "x", status: "exploded", duration_ms: 1, task_id: "task_1" } as never,
    });
    await expect(attempt).rejects.toBeInstanceOf(InvalidEventError);
    expect(await hubHistory(workspace)).toEqual([]);
  });

  it("writes an event_id once, even if published twice", async () => {
    const workspace = uniqueWorkspace("dup");
    const first = await publishMessage(workspace);
    const stub = env.EVENT_HUB.getByName(workspace);
    const { seq: _seq, ...again } = first;
    const second = await stub.publish(again);
    expect(second.seq).toBe(first.seq);
    await publishMessage(workspace);
    expect(seqs(await hubHistory(workspace))).toEqual([1, 2]);
  });
});

describe("retention", () => {
  it("the alarm trims events older than 7 days; seq keeps increasing; a resume past the window is not recovered", async () => {
    const workspace = uniqueWorkspace("retention");
    const stub = env.EVENT_HUB.getByName(workspace);
    const [old1, old2] = [await publishMessage(workspace), await publishMessage(workspace)];
    const recent = await publishMessage(workspace);
    await runInDurableObject(stub, (_instance: EventHub, state) => {
      state.storage.sql.exec(
        "UPDATE evh_events SET created_at_ms = ? WHERE seq IN (?, ?)",
        Date.now() - 8 * DAY_MS,
        old1.seq,
        old2.seq,
      );
    });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(seqs(await hubHistory(workspace))).toEqual([recent.seq]);
    // Still scheduled while events remain.
    await runInDurableObject(stub, async (_instance: EventHub, state) => {
      expect(await state.storage.getAlarm()).toBeGreaterThan(Date.now());
    });

    const client = await connectHub(workspace, { lastEventId: old1.event_id });
    await client.waitFor((frames) => frames.length >= 1);
    expect(client.frames[0]).toEqual({ type: "replay", recovered: false, count: 0 });

    // Trimming everything must not reset seq.
    await runInDurableObject(stub, (_instance: EventHub, state) => {
      state.storage.sql.exec("UPDATE evh_events SET created_at_ms = 0");
    });
    await runDurableObjectAlarm(stub);
    await evictDurableObject(stub);
    expect((await publishMessage(workspace)).seq).toBe(recent.seq + 1);
  });
});

describe("resume", () => {
  it("replays exactly the events after last_event_id, then live ones, with no gap or duplicate at the boundary", async () => {
    const workspace = uniqueWorkspace("resume");
    const before = [];
    for (let i = 0; i < 30; i++) before.push(await publishMessage(workspace));
    const resumeFrom = before[9];

    // Publishing continues while the client connects: whatever lands first is replayed, the rest is live.
    const racing = Promise.all(Array.from({ length: 20 }, () => publishMessage(workspace)));
    const client = await connectHub(workspace, { lastEventId: resumeFrom.event_id });
    await racing;
    for (let i = 0; i < 10; i++) await publishMessage(workspace);

    const received = await client.waitForEvents(50);
    expect(client.frames[0]).toMatchObject({ type: "replay", recovered: true });
    expect(seqs(received)).toEqual(range(resumeFrom.seq + 1, 60));
    const replayCount = client.frames[0].count as number;
    expect(client.frames.slice(1, replayCount + 1).every((frame) => frame.type === "event")).toBe(true);
  });

  it("says recovered: false for an unknown id or a gap over 1,000 events", async () => {
    const workspace = uniqueWorkspace("gap");
    const first = await publishMessage(workspace);
    const unknown = await connectHub(workspace, { lastEventId: "evt_01HNYZQXQHJ9E1T5VZJQKZGJRM" });
    await unknown.waitFor((frames) => frames.length > 0);
    expect(unknown.frames).toEqual([{ type: "replay", recovered: false, count: 0 }]);

    await runInDurableObject(env.EVENT_HUB.getByName(workspace), (_instance: EventHub, state) => {
      // 1,001 events after `first`, written straight into the log.
      for (let seq = 2; seq <= 1_002; seq++)
        state.storage.sql.exec(
          "INSERT INTO evh_events (seq, event_id, event_type, channels, created_at_ms, body) VALUES (?, ?, 'tool.call', '', ?, '{}')",
          seq,
          `evt_filler_${seq}`,
          Date.now(),
        );
    });
    await evictDurableObject(env.EVENT_HUB.getByName(workspace));
    const tooFar = await connectHub(workspace, { lastEventId: first.event_id });
    await tooFar.waitFor((frames) => frames.length > 0);
    expect(tooFar.frames[0]).toEqual({ type: "replay", recovered: false, count: 0 });
    const justInside = await connectHub(workspace, { lastEventId: "evt_filler_2" });
    await justInside.waitFor((frames) => frames.length > 0);
    expect(justInside.frames[0]).toEqual({ type: "replay", recovered: true, count: 1_000 });
  });

  it("survives eviction mid-stream: hibernated sockets keep receiving, closed ones resume with no gap", async () => {
    const workspace = uniqueWorkspace("evict");
    const stub = env.EVENT_HUB.getByName(workspace);
    const stays = await connectHub(workspace, { types: ["agent.*"] });
    for (let i = 0; i < 10; i++) await publishMessage(workspace);
    await stays.waitForEvents(10);

    await evictDurableObject(stub); // sockets hibernate; the subscription lives in their attachment
    await publishToolCall(workspace, "task_1"); // filtered out by the restored subscription
    for (let i = 0; i < 10; i++) await publishMessage(workspace);
    const afterHibernation = await stays.waitForEvents(20);
    expect(seqs(afterHibernation)).toEqual([...range(1, 10), ...range(12, 21)]);

    const dropped = await connectHub(workspace);
    await publishMessage(workspace);
    const seen = await dropped.waitForEvents(1);
    await evictDurableObject(stub, { webSockets: "close" });
    const closed = await dropped.closed;
    expect(closed.code).not.toBe(1000);
    for (let i = 0; i < 15; i++) await publishMessage(workspace);

    const resumed = await connectHub(workspace, { lastEventId: seen.at(-1)!.event_id });
    await publishMessage(workspace);
    const replayed = await resumed.waitForEvents(16);
    expect(resumed.frames[0]).toEqual({ type: "replay", recovered: true, count: 15 });
    expect(seqs(replayed)).toEqual(range(seen.at(-1)!.seq + 1, seen.at(-1)!.seq + 16));
  });
});

describe("subscriptions", () => {
  it("filter by type pattern and channel, and change with subscribe/unsubscribe frames", async () => {
    const workspace = uniqueWorkspace("filter");
    const all = await connectHub(workspace);
    const tools = await connectHub(workspace, { types: ["tool.*"] });
    const taskA = await connectHub(workspace, { channels: ["task:task_a"] });
    const taskAMessages = await connectHub(workspace, { types: ["agent.message"], channels: ["task:task_a"] });

    await publishMessage(workspace, { task_id: "task_a" }); // 1
    await publishToolCall(workspace, "task_a"); // 2
    await publishToolCall(workspace, "task_b"); // 3
    await publishMessage(workspace, { task_id: "task_b" }); // 4

    expect(seqs(await all.waitForEvents(4))).toEqual([1, 2, 3, 4]);
    expect(seqs(await tools.waitForEvents(2))).toEqual([2, 3]);
    expect(seqs(await taskA.waitForEvents(2))).toEqual([1, 2]);
    expect(seqs(await taskAMessages.waitForEvents(1))).toEqual([1]);

    tools.send({ type: "subscribe", channels: [], types: ["agent.message"] });
    tools.send({ type: "unsubscribe", types: ["tool.*"], channels: [] });
    await tools.waitFor((frames) => frames.filter((frame) => frame.type === "subscribed").length === 2);
    expect(tools.frames.at(-1)).toEqual({ type: "subscribed", types: ["agent.message"], channels: ["*"] });
    await publishToolCall(workspace, "task_a"); // 5: no longer for `tools`
    await publishMessage(workspace, { task_id: "task_c" }); // 6
    await all.waitForEvents(6);
    expect(seqs(await tools.waitForEvents(3))).toEqual([2, 3, 6]);

    tools.send({ type: "subscribe", types: ["nope.*x"] });
    tools.send({ type: "dance" });
    await tools.waitFor((frames) => frames.filter((frame) => frame.type === "error").length === 2);
    expect(tools.frames.filter((frame) => frame.type === "error").map((frame) => frame.code)).toEqual([
      "BAD_FRAME",
      "BAD_FRAME",
    ]);
    // The runtime answers the exact ping frame itself; any other ping spelling reaches the hub.
    tools.socket.send('{"type":"ping"}');
    tools.socket.send('{ "type": "ping" }');
    await tools.waitFor((frames) => frames.filter((frame) => frame.type === "pong").length === 2);
  });

  it("replays through the subscription and upcasts for a client that asks for a version", async () => {
    const workspace = uniqueWorkspace("version");
    const start = await publishMessage(workspace);
    await publish(env, {
      event_type: "task.created",
      workspace_id: workspace,
      data: {
        task: { id: "task_v", title: "t", type: "testing", priority: "low" },
        user: { id: "u", email: "u@example.com" },
      },
    });
    const v2 = await connectHub(workspace, { types: ["task.*"], version: "2.0", lastEventId: start.event_id });
    const [created] = await v2.waitForEvents(1);
    expect(v2.frames[0]).toEqual({ type: "replay", recovered: true, count: 1 });
    expect(created).toMatchObject({ version: "2.0", data: { task: { estimated_cost: 0 } } });
  });

  it("gives a client that asks for 1.0 a 1.1 event without the field 1.1 added, live and in history", async () => {
    const workspace = uniqueWorkspace("minor");
    const start = await publishMessage(workspace);
    const providerError = {
      provider: "openai",
      model: "gpt-4o-mini",
      error_type: "connection_error",
      error_code: "server_error",
      retry_count: 0,
      fallback_triggered: false,
      http_status: 503,
    } as const;
    await publish(env, { event_type: "llm.provider.error", workspace_id: workspace, data: providerError });
    const { http_status: _httpStatus, ...withoutStatus } = providerError;

    const stored = (await hubHistory(workspace)).find((event) => event.event_type === "llm.provider.error");
    expect(stored).toMatchObject({ version: "1.1", data: providerError });

    const v10 = await connectHub(workspace, { types: ["llm.*"], version: "1.0", lastEventId: start.event_id });
    const [replayed] = await v10.waitForEvents(1);
    expect(replayed.version).toBe("1.0");
    expect(replayed.data).toEqual(withoutStatus);

    const page = await env.EVENT_HUB.getByName(workspace).history({
      limit: 100,
      types: ["llm.*"],
      channels: [],
      version: "1.0",
    });
    if (!page.ok) throw new Error(page.reason);
    expect(page.events.map((json) => JSON.parse(json))).toMatchObject([{ version: "1.0", data: withoutStatus }]);
    expect(JSON.parse(page.events[0]).data).not.toHaveProperty("http_status");
  });
});
