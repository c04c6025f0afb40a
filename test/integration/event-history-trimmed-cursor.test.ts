import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import type { EventHub } from "../../durable-objects/event-hub.ts";
import type { PublishedEvent } from "../../src/events/catalog.ts";
import { createTestKey, createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";
import { publishMessage } from "../unit/events/hub-client.ts";

/**
 * `GET /api/v1/events` paged with `next_cursor` while the hub's alarm trims the log: events after the cursor that
 * went past the retention window are a gap the client must be told of (as `?after=` and a WebSocket resume tell
 * it), not skipped in silence.
 */

const BASE = "http://edge.test";
const DAY_MS = 24 * 60 * 60 * 1000;
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));

let workspace: TestWorkspace;
let reader: { headers: Record<string, string> };

beforeAll(async () => {
  workspace = await createTestWorkspace(fetcher, BASE);
  reader = await createTestKey(fetcher, BASE, workspace.key, ["events:read"]);
});

async function getJson(path: string) {
  const response = await fetcher(`${BASE}${path}`, { headers: reader.headers });
  return { status: response.status, body: (await response.json()) as any };
}

function seqs(events: PublishedEvent[]): number[] {
  return events.map((event) => event.seq);
}

describe("GET /api/v1/events with a cursor whose next events were trimmed", () => {
  it("answers 404 rather than a page that silently starts after the trimmed events", async () => {
    const published: PublishedEvent[] = [];
    for (let i = 0; i < 8; i++) published.push(await publishMessage(workspace.id));
    const first = await getJson("/api/v1/events?limit=3");
    expect(seqs(first.body.data)).toEqual([1, 2, 3]);
    const kept = await getJson(`/api/v1/events?limit=3&cursor=${first.body.next_cursor}`);
    expect(seqs(kept.body.data)).toEqual([4, 5, 6]);

    // Events 1–5 pass the 7-day window, and the hourly alarm trims them while the client is between pages.
    const stub = env.EVENT_HUB.getByName(workspace.id);
    await runInDurableObject(stub, (_instance: EventHub, state) => {
      state.storage.sql.exec("UPDATE evh_events SET created_at_ms = ? WHERE seq <= 5", Date.now() - 8 * DAY_MS);
    });
    expect(await runDurableObjectAlarm(stub)).toBe(true);

    // The cursor after seq 3: events 4 and 5 are gone.
    const gap = await getJson(`/api/v1/events?limit=3&cursor=${first.body.next_cursor}`);
    expect(gap.status).toBe(404);
    expect(gap.body).toMatchObject({ code: "NOT_FOUND", detail: expect.stringContaining("retention") });

    // A cursor whose next event is still kept pages on; a first page starts at the oldest kept, as documented.
    const onward = await getJson(`/api/v1/events?limit=3&cursor=${kept.body.next_cursor}`);
    expect(onward.status).toBe(200);
    expect(seqs(onward.body.data)).toEqual([7, 8]);
    const fresh = await getJson("/api/v1/events?limit=3");
    expect(seqs(fresh.body.data)).toEqual([6, 7, 8]);

    // Everything after the cursor trimmed, nothing left: still a gap, not an empty last page.
    await runInDurableObject(stub, (_instance: EventHub, state) => {
      state.storage.sql.exec("UPDATE evh_events SET created_at_ms = 0");
    });
    await runDurableObjectAlarm(stub);
    const allGone = await getJson(`/api/v1/events?limit=3&cursor=${kept.body.next_cursor}`);
    expect(allGone.status).toBe(404);
    // A cursor at the end of the log is no gap: an empty page until something new comes.
    const atEnd = await getJson(`/api/v1/events?cursor=${btoa("seq:8").replaceAll("=", "")}`);
    expect(atEnd).toMatchObject({ status: 200, body: { data: [], next_cursor: null } });
    expect(published).toHaveLength(8);
  });
});
