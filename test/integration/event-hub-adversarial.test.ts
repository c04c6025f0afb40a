import { exports } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { EventClient, type PublishedEvent } from "../../sdk/index.ts";
import { createTestKey, createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";
import { publishMessage, type TestSocket, watch } from "../unit/events/hub-client.ts";

/**
 * Regressions from an adversarial pass over the event stream: each drives the
 * public route (`GET /api/v1/events/ws`) and asserts the frames a client sees.
 */

const BASE = "http://edge.test";
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));

let workspace: TestWorkspace;
let reader: { headers: Record<string, string> };

beforeAll(async () => {
  workspace = await createTestWorkspace(fetcher, BASE);
  reader = await createTestKey(fetcher, BASE, workspace.key, ["events:read"]);
});

async function openStream(query: string): Promise<TestSocket> {
  const response = await fetcher(`${BASE}/api/v1/events/ws${query}`, {
    headers: { ...reader.headers, Upgrade: "websocket" },
  });
  expect(response.status).toBe(101);
  return watch(response.webSocket!);
}

describe("subscription limits", () => {
  it("refuses a subscribe that would pass 50 channels with an error frame, and keeps every channel it had", async () => {
    const channels = Array.from({ length: 50 }, (_, i) => `task:full_${i}`);
    const client = await openStream(`?channels=${channels.join(",")}`);

    client.send({ type: "subscribe", channels: ["task:one_more"] });
    await client.waitFor((frames) => frames.length >= 1);
    expect(client.frames).toEqual([
      {
        type: "error",
        code: "BAD_FRAME",
        message: "a subscription holds at most 50 channels; this one would hold 51: unsubscribe some first",
      },
    ]);

    // Unchanged: the last of the 50 still delivers; the refused one does not.
    await publishMessage(workspace.id, { task_id: "one_more" });
    const last = await publishMessage(workspace.id, { task_id: "full_49" });
    expect((await client.waitForEvents(1)).map((event) => event.seq)).toEqual([last.seq]);

    // Room made, the same subscribe is acknowledged with the channel in it, and its events arrive.
    client.send({ type: "unsubscribe", channels: ["task:full_0"] });
    client.send({ type: "subscribe", channels: ["task:one_more"] });
    await client.waitFor((frames) => frames.filter((frame) => frame.type === "subscribed").length === 2);
    expect(client.frames.at(-1)).toEqual({
      type: "subscribed",
      types: ["*"],
      channels: [...channels.slice(1), "task:one_more"],
    });
    const wanted = await publishMessage(workspace.id, { task_id: "one_more" });
    expect((await client.waitForEvents(2)).map((event) => event.seq)).toEqual([last.seq, wanted.seq]);
    client.socket.close(1000);
  });
});

describe("client frames", () => {
  it("a subscribe, unsubscribe or ping frame with a bad field is told which field, and the stream goes on", async () => {
    const client = await openStream("");
    client.socket.send('{"type":"subscribe","types":"task.*"}');
    client.send({ type: "subscribe", types: Array(51).fill("task.*") });
    client.send({ type: "unsubscribe", channels: [7] });
    client.send({ type: "ping", last_seq: 1.5 });
    client.send({ type: "dance" });
    await client.waitFor((frames) => frames.length === 5);
    expect(client.frames).toEqual([
      {
        type: "error",
        code: "BAD_FRAME",
        message: "Invalid subscribe frame: types: Invalid input: expected array, received string",
      },
      {
        type: "error",
        code: "BAD_FRAME",
        message: "Invalid subscribe frame: types: Too big: expected array to have <=50 items",
      },
      {
        type: "error",
        code: "BAD_FRAME",
        message: "Invalid unsubscribe frame: channels.0: Invalid input: expected string, received number",
      },
      {
        type: "error",
        code: "BAD_FRAME",
        message: "Invalid ping frame: last_seq: Invalid input: expected int, received number",
      },
      { type: "error", code: "BAD_FRAME", message: "Expected a subscribe, unsubscribe or ping frame." },
    ]);
    const after = await publishMessage(workspace.id);
    expect((await client.waitForEvents(1)).map((event) => event.seq)).toEqual([after.seq]);
    client.socket.close(1000);
  });
});

describe("refused values", () => {
  it("are quoted back cut to 64 characters, over the WebSocket and in the upgrade's 422", async () => {
    const huge = "x".repeat(500_000);
    const shown = `"${"x".repeat(64)}…"`;
    const client = await openStream("");
    client.send({ type: "subscribe", types: [huge] });
    client.send({ type: "subscribe", channels: [`task:${huge}`] });
    await client.waitFor((frames) => frames.length === 2);
    expect(client.frames).toEqual([
      { type: "error", code: "BAD_FRAME", message: `${shown} is not a known event type` },
      {
        type: "error",
        code: "BAD_FRAME",
        message: `"task:${"x".repeat(59)}…" is not a channel (task:{id}, run:{id}, workflow:{id} or *)`,
      },
    ]);
    client.socket.close(1000);

    const refused = await fetcher(`${BASE}/api/v1/events/ws?types=${huge.slice(0, 20_000)}`, {
      headers: { ...reader.headers, Upgrade: "websocket" },
    });
    expect(refused.status).toBe(422);
    expect(((await refused.json()) as { errors: unknown[] }).errors).toEqual([
      { path: "types", message: `${shown} is not a known event type` },
    ]);
  });
});

/**
 * The SDK's WebSocket, over the app inside workerd: the upgrade goes through the real route, and a refused
 * one (a 4xx) ends as a browser's does, an error then a close, with the status kept for the test.
 */
function workerdSocketFactory(statuses: number[]) {
  return (url: string) => {
    const listeners = new Map<string, ((event: any) => void)[]>();
    const emit = (type: string, event: unknown) => {
      for (const listener of listeners.get(type) ?? []) listener(event);
    };
    let socket: WebSocket | null = null;
    const fake = {
      readyState: 0,
      addEventListener: (type: string, listener: (event: any) => void) =>
        listeners.set(type, [...(listeners.get(type) ?? []), listener]),
      send: (text: string) => socket?.send(text),
      close: (code?: number, reason?: string) => socket?.close(code, reason),
    };
    void fetcher(url.replace(/^ws/, "http"), { headers: { Upgrade: "websocket" } }).then((response) => {
      statuses.push(response.status);
      if (!response.webSocket) {
        fake.readyState = 3;
        emit("error", {});
        emit("close", { code: 1006 });
        return;
      }
      socket = response.webSocket;
      socket.accept();
      socket.addEventListener("message", (message) => emit("message", message));
      socket.addEventListener("close", (event) => {
        fake.readyState = 3;
        emit("close", event);
      });
      fake.readyState = 1;
      emit("open", {});
    });
    return fake as unknown as WebSocket;
  };
}

/**
 * An EventClient on the route (tickets from the reader key), recording upgrade statuses, events and errors.
 * A reconnection waits for `reconnectWhen`, so a test can publish while the client is away.
 */
function clientOverRoute(reconnectWhen: Promise<void> = Promise.resolve()) {
  const statuses: number[] = [];
  const received: PublishedEvent[] = [];
  const errors: string[] = [];
  const client = new EventClient({
    baseUrl: BASE,
    getTicket: async () => {
      if (statuses.length > 0) await reconnectWhen;
      const response = await fetcher(`${BASE}/api/v1/events/tickets`, { method: "POST", headers: reader.headers });
      return ((await response.json()) as { ticket: string }).ticket;
    },
    WebSocket: workerdSocketFactory(statuses),
    backoff: { baseDelayMs: 1, maxDelayMs: 5 },
  });
  client.on("*", (event) => received.push(event));
  client.onError((error) => errors.push(error.message));
  const waitFor = async (predicate: () => boolean) => {
    const deadlineMs = Date.now() + 5_000;
    while (!predicate()) {
      if (Date.now() > deadlineMs) throw new Error(`timed out; upgrades: ${statuses}; errors: ${errors}`);
      await new Promise((wake) => setTimeout(wake, 5));
    }
  };
  const drop = () => (client as unknown as { socket: WebSocket }).socket.close(4000, "test drops the connection");
  return { client, statuses, received, errors, waitFor, drop };
}

describe("EventClient (sdk/)", () => {
  it("refuses, by throwing, a subscription the server would refuse, and stays connected to its events", async () => {
    const { client, statuses, received, errors, waitFor, drop } = clientOverRoute();
    client.connect();
    await waitFor(() => client.state === "open");

    expect(() => client.subscribe(["tasks.*"])).toThrow(
      new TypeError('EventClient: "tasks.*" matches no event type (GET /api/v1/events/schema lists them)'),
    );
    expect(() => client.subscribe([], ["task:a b"])).toThrow(TypeError);
    const many = Array.from({ length: 50 }, (_, i) => `task:t${i}`);
    expect(() => client.subscribe([], many)).toThrow(
      new TypeError(
        "EventClient: a subscription holds at most 50 channels; this one would hold 51: unsubscribe some first",
      ),
    );

    // The connection drops; the next one asks for the subscription as it stands, and the route accepts it.
    const first = await publishMessage(workspace.id);
    await waitFor(() => received.length === 1);
    drop();
    await waitFor(() => statuses.length === 2 && client.state === "open");
    const second = await publishMessage(workspace.id);
    await waitFor(() => received.length === 2);
    client.close();
    expect(statuses).toEqual([101, 101]);
    expect(received.map((event) => event.seq)).toEqual([first.seq, second.seq]);
    expect(errors).toEqual([]);
  });

  it("hands no handler the events of types it unsubscribed from, even those replayed after a reconnection", async () => {
    let allowReconnection = () => {};
    const { client, statuses, received, errors, waitFor, drop } = clientOverRoute(
      new Promise<void>((allow) => (allowReconnection = allow)),
    );
    const settle = () => new Promise((wake) => setTimeout(wake, 150));
    client.connect();
    await waitFor(() => client.state === "open");
    const wanted = await publishMessage(workspace.id);
    await waitFor(() => received.length === 1);

    client.unsubscribe(["*"]); // no type at all, for now
    await settle();
    drop();
    // Published while it is away: the resume URL cannot say "no types", so the replay brings them.
    const missed = [await publishMessage(workspace.id), await publishMessage(workspace.id)];
    allowReconnection();
    await waitFor(() => statuses.length === 2 && client.state === "open");
    await settle();
    expect(received.map((event) => event.seq)).toEqual([wanted.seq]);
    // Seen all the same: the resume point is past them.
    expect(client.lastEventId).toBe(missed[1].event_id);

    client.subscribe(["agent.*"]);
    await settle();
    const again = await publishMessage(workspace.id);
    await waitFor(() => received.length === 2);
    client.close();
    expect(received.map((event) => event.seq)).toEqual([wanted.seq, again.seq]);
    expect(errors).toEqual([]);
  });
});
