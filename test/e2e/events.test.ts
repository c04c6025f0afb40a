import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestWorkspace, TEST_ADMIN_TOKEN, type TestWorkspace } from "../support/workspaces.ts";
import { connectEvents, publishViaDebug, type RecordingClient, type StreamEvent, wsUrl } from "./events-client.ts";
import { startWorker, type WorkerProcess } from "./harness.ts";

let worker: WorkerProcess;
beforeAll(async () => {
  worker = await startWorker({ vars: { ADMIN_TOKEN: TEST_ADMIN_TOKEN, ENABLE_DEBUG_ROUTES: "true" } });
});
afterAll(async () => {
  await worker?.stop();
});

function newWorkspace(): Promise<TestWorkspace> {
  return createTestWorkspace(fetch, worker.baseUrl, { scopes: ["events:read"] });
}

function expectContiguous(events: StreamEvent[], from: number, to: number) {
  expect(events.map((event) => event.seq)).toEqual(Array.from({ length: to - from + 1 }, (_, i) => from + i));
}

async function connectMany(workspace: TestWorkspace, count: number): Promise<RecordingClient[]> {
  const clients = Array.from({ length: count }, () => connectEvents(wsUrl(worker.baseUrl), workspace.headers));
  await Promise.all(clients.map((client) => client.opened));
  return clients;
}

describe("the event stream under wrangler dev", () => {
  it("100 subscribers each receive all 1,000 events in seq order", async () => {
    const workspace = await newWorkspace();
    const clients = await connectMany(workspace, 100);
    await publishViaDebug(worker.baseUrl, workspace.id, 1_000);
    for (const client of clients) expectContiguous(await client.waitForEvents(1_000), 1, 1_000);
    await new Promise((settle) => setTimeout(settle, 200));
    for (const client of clients) expect(client.events).toHaveLength(1_000);
    for (const client of clients) client.ws.close(1000);
  }, 120_000);

  it("a client killed mid-stream resumes with exactly the events it missed", async () => {
    const workspace = await newWorkspace();
    const [victim, witness] = await connectMany(workspace, 2);
    const burst = publishViaDebug(worker.baseUrl, workspace.id, 500);
    await victim.waitForEvents(150);
    victim.ws.terminate(); // no close frame: the connection just dies
    await burst;
    await publishViaDebug(worker.baseUrl, workspace.id, 200);
    await witness.waitForEvents(700);

    const lastSeen = victim.events.at(-1)!;
    expect(lastSeen.seq).toBeLessThan(500);
    const resumed = connectEvents(wsUrl(worker.baseUrl, { last_event_id: lastSeen.event_id }), workspace.headers);
    await resumed.opened;
    const missed = 700 - lastSeen.seq;
    const replayed = await resumed.waitForEvents(missed);
    expect(resumed.frames[0]).toEqual({ type: "replay", recovered: true, count: missed });
    expectContiguous(replayed, lastSeen.seq + 1, 700);
    // Then live, with nothing duplicated at the boundary.
    await publishViaDebug(worker.baseUrl, workspace.id, 1);
    expectContiguous(await resumed.waitForEvents(missed + 1), lastSeen.seq + 1, 701);
    for (const client of [witness, resumed]) client.ws.close(1000);
  }, 60_000);

  it("a client that never reads is cut off with 1013 while the others get everything", async () => {
    const workspace = await newWorkspace();
    const [stalled, ...readers] = await connectMany(workspace, 3);
    stalled.ws.pause(); // stops reading from its TCP socket: the kernel buffers fill, then the hub's queue grows
    // 1,500 events of 4 KiB: 6.6 MiB each, over the 4 MiB a socket may have unacknowledged,
    // and a cut-off client stays within the 1,000-event replay window.
    const message = "x".repeat(4 * 1024);
    const total = 1_500;
    for (let sent = 0; sent < total; sent += 250) {
      await publishViaDebug(worker.baseUrl, workspace.id, 250, {
        data: { task_id: "task_e2e", agent_id: "agent_1", role: "assistant", message, tokens: 1_000 },
      });
    }
    for (const reader of readers) expectContiguous(await reader.waitForEvents(total), 1, total);

    stalled.ws.resume();
    const closed = await stalled.closed;
    expect(closed.code).toBe(1013);
    expect(stalled.events.length).toBeLessThan(total);
    // What it was sent before the cut is bounded by the limit (4 MiB / ~4.4 KiB frames), not by the stream.
    expect(stalled.events.length).toBeLessThanOrEqual(1_000);
    expect(stalled.frames.at(-1)).toMatchObject({ type: "error", code: "SLOW_CONSUMER" });
    expectContiguous(stalled.events, 1, stalled.events.length);

    // It resumes from its last event and catches up.
    const last = stalled.events.at(-1)!;
    const resumed = connectEvents(wsUrl(worker.baseUrl, { last_event_id: last.event_id }), workspace.headers);
    await resumed.opened;
    await resumed.waitForEvents(total - last.seq);
    expect(resumed.frames[0]).toMatchObject({ type: "replay", recovered: true });
    expectContiguous(resumed.events, last.seq + 1, total);
    for (const client of [...readers, resumed]) client.ws.close(1000);
  }, 120_000);
});
