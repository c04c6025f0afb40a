import { exports } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
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
