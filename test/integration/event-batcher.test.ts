import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { EventBatcher } from "../../src/events/batcher.ts";
import type { PublishedEvent } from "../../src/events/catalog.ts";
import { InvalidEventError } from "../../src/events/publish.ts";
import { hubHistory, stepMessage, uniqueWorkspace } from "../unit/events/hub-client.ts";

type PublishMany = (events: never[]) => Promise<{ seq: number; duplicate: boolean }[]>;

/** The real hubs, with every publishMany going through `around` (handed the real one as `send`). */
function hubsAround(around: (events: never[], send: PublishMany) => ReturnType<PublishMany>) {
  const getByName = (name: string) => {
    const stub = env.EVENT_HUB.getByName(name);
    return { publishMany: (events: never[]) => around(events, async (sent) => await stub.publishMany(sent)) };
  };
  return { EVENT_HUB: { getByName } as unknown as typeof env.EVENT_HUB };
}

describe("EventBatcher", () => {
  it("publishes a turn's events per workspace in one call, in issue order, each with its seq", async () => {
    const first = uniqueWorkspace("batch-a");
    const second = uniqueWorkspace("batch-b");
    const batcher = new EventBatcher(env);
    const published = await Promise.all([
      ...Array.from({ length: 30 }, (_, index) => batcher.publish(stepMessage(first, index))),
      ...Array.from({ length: 5 }, (_, index) => batcher.publish(stepMessage(second, index))),
    ]);
    expect(published.slice(0, 30).map((event) => event.seq)).toEqual(
      Array.from({ length: 30 }, (_, index) => index + 1),
    );
    expect(published.slice(30).map((event) => event.seq)).toEqual([1, 2, 3, 4, 5]);

    expect((await hubHistory(first)).map((event) => (event.data as { message: string }).message)).toEqual(
      Array.from({ length: 30 }, (_, index) => `step ${index}`),
    );
  });

  it("keeps one call per workspace in flight, so events issued meanwhile follow in issue order", async () => {
    const workspace = uniqueWorkspace("batch-inflight");
    let inFlight = 0;
    let maxInFlight = 0;
    const sizes: number[] = [];
    const batcher = new EventBatcher(
      hubsAround(async (events, send) => {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        sizes.push(events.length);
        try {
          await new Promise((resolve) => setTimeout(resolve, 20)); // a hub some distance away
          return await send(events);
        } finally {
          inFlight--;
        }
      }),
    );
    const published: Promise<PublishedEvent>[] = [];
    for (let turn = 0; turn < 4; turn++) {
      for (let index = 0; index < 5; index++) published.push(batcher.publish(stepMessage(workspace, turn * 5 + index)));
      await new Promise((resolve) => setTimeout(resolve, 0)); // the first call is out while the next turn issues
    }
    const seqs = (await Promise.all(published)).map((event) => event.seq);
    expect(seqs).toEqual(Array.from({ length: 20 }, (_, index) => index + 1));
    expect(maxInFlight).toBe(1);
    expect(sizes.reduce((sum, size) => sum + size, 0)).toBe(20);
    expect(sizes).toEqual([5, 15]); // the turns issued while the first call was out shared the next one
    expect((await hubHistory(workspace)).map((event) => (event.data as { message: string }).message)).toEqual(
      Array.from({ length: 20 }, (_, index) => `step ${index}`),
    );
  });

  it("sends a batch again when the hub fails or its answer is lost, and each event lands once, in order", async () => {
    const workspace = uniqueWorkspace("batch-retry");
    const faults = ["refused", "answer lost"];
    const tries: number[] = [];
    const batcher = new EventBatcher(
      hubsAround(async (events, send) => {
        tries.push(events.length);
        const fault = faults.shift();
        if (fault === "refused") throw new Error("Durable Object is overloaded.");
        const results = await send(events);
        if (fault === "answer lost") throw new Error("Network connection lost.");
        return results;
      }),
      {},
      { retryDelaysMs: [1, 1] },
    );
    const published = await Promise.all(
      Array.from({ length: 3 }, (_, index) => batcher.publish(stepMessage(workspace, index))),
    );
    expect(tries).toEqual([3, 3, 3]);
    expect(published.map((event) => event.seq)).toEqual([1, 2, 3]);
    expect((await hubHistory(workspace)).map((event) => [event.seq, event.event_id])).toEqual(
      published.map((event) => [event.seq, event.event_id]),
    );

    // Past its retries the batch's callers hear the error.
    const down = new EventBatcher(
      hubsAround(async () => Promise.reject(new Error("down"))),
      {},
      { retryDelaysMs: [1] },
    );
    await expect(down.publish(stepMessage(workspace, 9))).rejects.toThrow("down");
  });

  it("refuses an invalid event before anything is sent", async () => {
    const workspace = uniqueWorkspace("batch-invalid");
    const batcher = new EventBatcher(env);
    const bad = { ...stepMessage(workspace, 1), data: { ...stepMessage(workspace, 1).data, role: "robot" } };
    expect(() => batcher.publish(bad as never)).toThrow(InvalidEventError);
    await batcher.publish(stepMessage(workspace, 2));
    expect((await hubHistory(workspace)).map((event) => event.seq)).toEqual([1]);
  });
});
