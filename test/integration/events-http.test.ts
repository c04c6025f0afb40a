import { listDurableObjectIds } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import type { Principal } from "../../src/auth/principal.ts";
import type { PublishedEvent } from "../../src/events/catalog.ts";
import { createTicket, holderOf, openEventStream } from "../../src/events/service.ts";
import { isTicketAuthenticatedRequest } from "../../src/events/tickets.ts";
import { ApiError } from "../../src/lib/problem.ts";
import { createTestKey, createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";
import { publishMessage, publishToolCall, watch } from "../unit/events/hub-client.ts";

const BASE = "http://edge.test";
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));

let workspace: TestWorkspace;
let reader: { headers: Record<string, string> };
let published: PublishedEvent[];

beforeAll(async () => {
  workspace = await createTestWorkspace(fetcher, BASE);
  reader = await createTestKey(fetcher, BASE, workspace.key, ["events:read"]);
  published = [];
  for (let i = 0; i < 25; i++) {
    published.push(i % 5 === 0 ? await publishToolCall(workspace.id, "task_x") : await publishMessage(workspace.id));
  }
});

async function getJson(path: string, headers: Record<string, string> = reader.headers) {
  const response = await fetcher(`${BASE}${path}`, { headers });
  return { status: response.status, body: (await response.json()) as any };
}

describe("GET /api/v1/events", () => {
  it("pages through the history in seq order with an opaque cursor", async () => {
    const first = await getJson("/api/v1/events?limit=10");
    expect(first.status).toBe(200);
    expect(first.body.data.map((event: PublishedEvent) => event.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const second = await getJson(`/api/v1/events?limit=10&cursor=${first.body.next_cursor}`);
    expect(second.body.data[0].seq).toBe(11);
    const third = await getJson(`/api/v1/events?limit=10&cursor=${second.body.next_cursor}`);
    expect(third.body.data).toHaveLength(5);
    expect(third.body.next_cursor).toBeNull();
  });

  it("starts after ?after= and filters by type and channel", async () => {
    const after = await getJson(`/api/v1/events?after=${published[19].event_id}`);
    expect(after.body.data.map((event: PublishedEvent) => event.seq)).toEqual([21, 22, 23, 24, 25]);
    const tools = await getJson("/api/v1/events?types=tool.*&limit=100");
    expect(tools.body.data.map((event: PublishedEvent) => event.seq)).toEqual([1, 6, 11, 16, 21]);
    const channel = await getJson("/api/v1/events?channels=task:task_x&types=agent.message");
    expect(channel.body.data).toEqual([]);
  });

  it("refuses what it cannot answer: unknown after, bad filters, unknown major", async () => {
    const unknown = await getJson("/api/v1/events?after=evt_01HNYZQXQHJ9E1T5VZJQKZGJRM");
    expect(unknown).toMatchObject({ status: 404, body: { code: "NOT_FOUND" } });
    const badType = await getJson("/api/v1/events?types=task.exploded");
    expect(badType).toMatchObject({ status: 422, body: { errors: [{ path: "types" }] } });
    const noSuchPattern = await getJson("/api/v1/events?types=tasks.*");
    expect(noSuchPattern).toMatchObject({
      status: 422,
      body: { errors: [{ path: "types", message: expect.stringContaining('"tasks.*" matches no event type') }] },
    });
    const badMajor = await getJson("/api/v1/events?version=3.0");
    expect(badMajor).toMatchObject({
      status: 422,
      body: { errors: [{ path: "version", message: "unknown major version 3; supported majors: 1, 2" }] },
    });
    const badCursor = await getJson("/api/v1/events?cursor=nonsense");
    expect(badCursor.status).toBe(422);
  });

  it("needs credentials with events:read", async () => {
    expect((await getJson("/api/v1/events", {})).status).toBe(401);
    const tasksOnly = await createTestKey(fetcher, BASE, workspace.key, ["tasks:read"]);
    expect((await getJson("/api/v1/events", tasksOnly.headers)).body).toMatchObject({ status: 403 });
    // Another workspace sees only its own log.
    const other = await createTestWorkspace(fetcher, BASE);
    expect((await getJson("/api/v1/events", other.headers)).body.data).toEqual([]);
  });
});

describe("GET /api/v1/events/schema", () => {
  it("serves the JSON Schema, and the OpenAPI document references the Event schema", async () => {
    const schema = await getJson("/api/v1/events/schema");
    expect(schema.status).toBe(200);
    expect(Object.keys(schema.body.$defs)).toContain("llm.provider.fallback@1.0");
    const doc = (await (await fetcher(`${BASE}/openapi.json`)).json()) as any;
    expect(doc.components.schemas.Event).toBeDefined();
    expect(doc.paths["/api/v1/events/ws"].get.operationId).toBe("streamEvents");
  });
});

describe("WebSocket stream and tickets", () => {
  it("upgrades with a bearer header and resumes from last_event_id", async () => {
    const response = await fetcher(`${BASE}/api/v1/events/ws?last_event_id=${published[22].event_id}`, {
      headers: { ...reader.headers, Upgrade: "websocket" },
    });
    expect(response.status).toBe(101);
    const client = watch(response.webSocket!);
    await publishMessage(workspace.id);
    const events = await client.waitForEvents(3);
    expect(client.frames[0]).toEqual({ type: "replay", recovered: true, count: 2 });
    expect(events.map((event) => event.seq)).toEqual([24, 25, 26]);
    client.socket.close(1000);
  });

  it("answers a plain GET with a 400 problem, and an unknown major with 422", async () => {
    expect((await getJson("/api/v1/events/ws")).status).toBe(400);
    const response = await fetcher(`${BASE}/api/v1/events/ws?version=9.0`, {
      headers: { ...reader.headers, Upgrade: "websocket" },
    });
    expect(response.status).toBe(422);
  });

  it("tells a WebSocket that sent no credentials of the ticket a browser uses", async () => {
    const refused = await fetcher(`${BASE}/api/v1/events/ws`, { headers: { Upgrade: "websocket" } });
    expect(refused.status).toBe(401);
    expect(((await refused.json()) as { detail: string }).detail).toBe(
      "No credentials were sent: send `Authorization: Bearer <api key or JWT>`, or (a browser's WebSocket) `?ticket=` from `POST /api/v1/events/tickets`.",
    );
  });

  it("issues single-use tickets that open the stream without an API key", async () => {
    const response = await fetcher(`${BASE}/api/v1/events/tickets`, { method: "POST", headers: reader.headers });
    expect(response.status).toBe(201);
    const { ticket, expires_at } = (await response.json()) as { ticket: string; expires_at: string };
    expect(ticket).toMatch(new RegExp(`^tkt_[A-Za-z0-9_-]{32}\\.${workspace.id}$`));
    expect(Date.parse(expires_at) - Date.now()).toBeGreaterThan(50_000);

    const url = `${BASE}/api/v1/events/ws?ticket=${ticket}&types=tool.*`;
    const request = new Request(url, { headers: { Upgrade: "websocket" } });
    // The global auth middleware lets exactly this request through to the route.
    expect(isTicketAuthenticatedRequest(request)).toBe(true);
    expect(isTicketAuthenticatedRequest(new Request(`${BASE}/api/v1/events?ticket=${ticket}`))).toBe(false);

    // Through the whole app: no Authorization header, only the ticket.
    const opened = await fetcher(url, { headers: { Upgrade: "websocket" } });
    expect(opened.status).toBe(101);
    const client = watch(opened.webSocket!);
    await publishMessage(workspace.id);
    const tool = await publishToolCall(workspace.id, "task_y");
    expect((await client.waitForEvents(1)).map((event) => event.seq)).toEqual([tool.seq]);

    const again = await fetcher(url, { headers: { Upgrade: "websocket" } });
    expect(again.status).toBe(401);
    expect(await again.json()).toMatchObject({ code: "UNAUTHENTICATED" });
    const forged = openEventStream(env, request, undefined, { ticket: `${ticket.slice(0, -3)}abc` });
    await expect(forged).rejects.toBeInstanceOf(ApiError);
  });

  it("refuses a forged ticket naming no workspace without creating a hub for it", async () => {
    const hubsBefore = (await listDurableObjectIds(env.EVENT_HUB)).length;
    for (const name of ["ws_made_up_1", "ws_made_up_2", "anything-at-all"]) {
      const forged = await fetcher(`${BASE}/api/v1/events/ws?ticket=tkt_${"a".repeat(32)}.${name}`, {
        headers: { Upgrade: "websocket" },
      });
      expect(forged.status).toBe(401);
      expect(await forged.json()).toMatchObject({
        code: "UNAUTHENTICATED",
        detail: "The ticket is unknown, used or expired.",
      });
    }
    expect((await listDurableObjectIds(env.EVENT_HUB)).length).toBe(hubsBefore);
  });

  it("closes the streams a key opened, with its bearer or a ticket, once it is revoked, and refuses its tickets", async () => {
    const doomed = await createTestKey(fetcher, BASE, workspace.key, ["events:read"]);
    const upgrade = { Upgrade: "websocket" };
    const takeTicket = async () => {
      const response = await fetcher(`${BASE}/api/v1/events/tickets`, { method: "POST", headers: doomed.headers });
      return ((await response.json()) as { ticket: string }).ticket;
    };
    const byBearer = await fetcher(`${BASE}/api/v1/events/ws`, { headers: { ...doomed.headers, ...upgrade } });
    const byTicket = await fetcher(`${BASE}/api/v1/events/ws?ticket=${await takeTicket()}`, { headers: upgrade });
    const unused = await takeTicket();
    const bystander = await fetcher(`${BASE}/api/v1/events/ws`, { headers: { ...reader.headers, ...upgrade } });
    expect([byBearer.status, byTicket.status, bystander.status]).toEqual([101, 101, 101]);
    const [bearerSocket, ticketSocket, otherSocket] = [byBearer, byTicket, bystander].map((response) =>
      watch(response.webSocket!),
    );

    const revoked = await fetcher(`${BASE}/api/v1/api-keys/${doomed.id}`, {
      method: "DELETE",
      headers: { Authorization: `Bearer ${workspace.key}` },
    });
    expect(revoked.status).toBe(200);
    for (const socket of [bearerSocket, ticketSocket]) {
      expect(await socket.closed).toMatchObject({ code: 1008, reason: "credentials revoked" });
      expect(socket.frames.at(-1)).toMatchObject({ type: "error", code: "CREDENTIALS_REVOKED" });
    }
    // Another key's stream goes on.
    const event = await publishMessage(workspace.id);
    expect((await otherSocket.waitForEvents(1)).map((received) => received.event_id)).toEqual([event.event_id]);

    const late = await fetcher(`${BASE}/api/v1/events/ws?ticket=${unused}`, { headers: upgrade });
    expect(late.status).toBe(401);
    // Another isolate may hold the key in its cache for a few seconds more: the hub refuses it all the same.
    const stale = { kind: "api_key", workspaceId: workspace.id, keyId: doomed.id, scopes: new Set(["events:read"]) };
    const principal = { ...stale, display: "key events:read" } as Principal;
    const request = new Request(`${BASE}/api/v1/events/ws`, { headers: upgrade });
    await expect(openEventStream(env, request, principal, {})).rejects.toMatchObject({
      status: 401,
      message: "Invalid credentials.",
    });
    await expect(createTicket(env, workspace.id, holderOf(principal))).rejects.toMatchObject({ status: 401 });
  });

  it("closes the streams a key opened, with its bearer or a ticket, when the key expires", async () => {
    const expiresAtMs = Date.now() + 2_000;
    const expiring = await createTestKey(fetcher, BASE, workspace.key, ["events:read"], {
      expiresAt: new Date(expiresAtMs).toISOString(),
    });
    const upgrade = { Upgrade: "websocket" };
    const ticket = await fetcher(`${BASE}/api/v1/events/tickets`, { method: "POST", headers: expiring.headers });
    const { ticket: secret } = (await ticket.json()) as { ticket: string };
    const byBearer = await fetcher(`${BASE}/api/v1/events/ws`, { headers: { ...expiring.headers, ...upgrade } });
    const byTicket = await fetcher(`${BASE}/api/v1/events/ws?ticket=${secret}`, { headers: upgrade });
    const bystander = await fetcher(`${BASE}/api/v1/events/ws`, { headers: { ...reader.headers, ...upgrade } });
    expect([byBearer.status, byTicket.status, bystander.status]).toEqual([101, 101, 101]);
    const [bearerSocket, ticketSocket, otherSocket] = [byBearer, byTicket, bystander].map((response) =>
      watch(response.webSocket!),
    );
    // Before it expires, its streams get events as any other.
    const before = await publishMessage(workspace.id);
    for (const socket of [bearerSocket, ticketSocket]) {
      expect((await socket.waitForEvents(1)).map((received) => received.event_id)).toEqual([before.event_id]);
    }

    // Idle streams too: the hub's alarm closes them when the key expires, with no event to send.
    for (const socket of [bearerSocket, ticketSocket]) {
      expect(await socket.closed).toMatchObject({ code: 1008, reason: "credentials expired" });
      expect(socket.frames.at(-1)).toMatchObject({ type: "error", code: "CREDENTIALS_EXPIRED" });
    }
    expect(Date.now()).toBeGreaterThanOrEqual(expiresAtMs);
    const after = await publishMessage(workspace.id);
    expect((await otherSocket.waitForEvents(2)).map((received) => received.event_id)).toEqual([
      before.event_id,
      after.event_id,
    ]);
  });

  it("tells a ticket's expires_at as when the key it was issued for expires, when that comes first", async () => {
    const keyExpiresAtMs = Date.now() + 20_000;
    const expiring = await createTestKey(fetcher, BASE, workspace.key, ["events:read"], {
      expiresAt: new Date(keyExpiresAtMs).toISOString(),
    });
    const ticket = await fetcher(`${BASE}/api/v1/events/tickets`, { method: "POST", headers: expiring.headers });
    expect(ticket.status).toBe(201);
    // The ticket is refused once the key has expired, whatever its 60 s: it says so.
    const { expires_at } = (await ticket.json()) as { expires_at: string };
    expect(expires_at).toBe(new Date(keyExpiresAtMs).toISOString());
  });

  it("opens streams, by bearer or ticket, for a key that expires far ahead (past what an alarm can be set for)", async () => {
    // Valid for expires_at (any future date); the runtime's alarms stop at 2189. A new workspace: its hub has no
    // alarm yet (none to trim), so the stream's expiry is what would set it.
    const fresh = await createTestWorkspace(fetcher, BASE, { name: "key expiring far ahead" });
    const lasting = await createTestKey(fetcher, BASE, fresh.key, ["events:read"], {
      expiresAt: "9999-12-31T23:59:59Z",
    });
    const upgrade = { Upgrade: "websocket" };
    const byBearer = await fetcher(`${BASE}/api/v1/events/ws`, { headers: { ...lasting.headers, ...upgrade } });
    const ticket = await fetcher(`${BASE}/api/v1/events/tickets`, { method: "POST", headers: lasting.headers });
    const { ticket: secret } = (await ticket.json()) as { ticket: string };
    const byTicket = await fetcher(`${BASE}/api/v1/events/ws?ticket=${secret}`, { headers: upgrade });
    expect([byBearer.status, byTicket.status]).toEqual([101, 101]);
    const sockets = [byBearer, byTicket].map((response) => watch(response.webSocket!));
    const event = await publishMessage(fresh.id);
    for (const socket of sockets) {
      expect((await socket.waitForEvents(1)).map((received) => received.event_id)).toEqual([event.event_id]);
    }
  });

  it("does not let a principal without events:read take a ticket", async () => {
    const tasksOnly = await createTestKey(fetcher, BASE, workspace.key, ["tasks:read"]);
    const response = await fetcher(`${BASE}/api/v1/events/tickets`, { method: "POST", headers: tasksOnly.headers });
    expect(response.status).toBe(403);
  });
});
