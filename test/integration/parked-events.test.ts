import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { EventBatcher } from "../../src/events/batcher.ts";
import type { EventEnvelope } from "../../src/events/catalog.ts";
import {
  deliverParkedEvents,
  EventParkedError,
  PARKED_EVENT_GIVE_UP_DAYS,
  parkEvents,
} from "../../src/events/parked.ts";
import { publish, stampEvent } from "../../src/events/publish.ts";
import { Logger } from "../../src/lib/logger.ts";
import { handleScheduled } from "../../src/scheduled.ts";
import { hubHistory, stepMessage, uniqueWorkspace } from "../unit/events/hub-client.ts";

/**
 * Events the hub will not take are parked in D1 instead of lost, and the
 * every-minute cron delivers them, in the order they were parked.
 */

const DAY_MS = 86_400_000;

/** Hubs that refuse every call, with D1 to park in. */
const refusingHubs = {
  DB: env.DB,
  EVENT_HUB: {
    getByName: () => ({
      publish: async () => {
        throw new Error("Durable Object is overloaded.");
      },
      publishMany: async () => {
        throw new Error("Durable Object is overloaded.");
      },
    }),
  } as unknown as typeof env.EVENT_HUB,
};

async function parkedRows(workspaceId: string) {
  const { results } = await env.DB.prepare(
    "SELECT event_id, attempts, last_error FROM parked_events WHERE workspace_id = ? ORDER BY id",
  )
    .bind(workspaceId)
    .all<{ event_id: string; attempts: number; last_error: string | null }>();
  return results;
}

function capturingLogger() {
  const logs: Record<string, unknown>[] = [];
  return { logs, logger: new Logger({ level: "info", sampleRate: 1, sink: (line) => logs.push(JSON.parse(line)) }) };
}

describe("parked events", () => {
  it("publish() parks an event its hub refuses, and delivery lands it later with its own id and timestamp", async () => {
    const workspace = uniqueWorkspace("parked");
    const { logger } = capturingLogger();
    const failure = await publish(refusingHubs, stepMessage(workspace, 1), { retryDelaysMs: [0] }).catch((e) => e);
    expect(failure).toBeInstanceOf(EventParkedError);
    const [eventId] = (failure as EventParkedError).eventIds;
    expect(await parkedRows(workspace)).toEqual([
      { event_id: eventId, attempts: 0, last_error: "Durable Object is overloaded." },
    ]);
    expect(await hubHistory(workspace)).toEqual([]);

    const delivery = await deliverParkedEvents(env, logger);
    expect(delivery.delivered).toBeGreaterThanOrEqual(1);
    const [landed] = await hubHistory(workspace);
    expect(landed).toMatchObject({ event_id: eventId, seq: 1, data: { message: "step 1" } });
    expect(Date.now() - Date.parse(landed.timestamp)).toBeLessThan(60_000);
    expect(await parkedRows(workspace)).toEqual([]);
    // Delivered once: another run finds nothing of it.
    await deliverParkedEvents(env, logger);
    expect((await hubHistory(workspace)).map((event) => event.event_id)).toEqual([eventId]);
  });

  it("without D1 there is nowhere to park: publish() throws the hub's own error", async () => {
    const workspace = uniqueWorkspace("parked-no-db");
    const failure = await publish({ EVENT_HUB: refusingHubs.EVENT_HUB }, stepMessage(workspace, 1), {
      retryDelaysMs: [],
    }).catch((e) => e);
    expect(failure).not.toBeInstanceOf(EventParkedError);
    expect((failure as Error).message).toBe("Durable Object is overloaded.");
    expect(await parkedRows(workspace)).toEqual([]);
  });

  it("the batcher parks a refused batch, and delivery keeps each workspace's events in parking order", async () => {
    const first = uniqueWorkspace("parked-batch-a");
    const second = uniqueWorkspace("parked-batch-b");
    const batcher = new EventBatcher(refusingHubs, {}, { retryDelaysMs: [] });
    const outcomes = await Promise.allSettled([
      ...[1, 2, 3].map((step) => batcher.publish(stepMessage(first, step))),
      batcher.publish(stepMessage(second, 1)),
    ]);
    for (const outcome of outcomes) {
      expect(outcome).toMatchObject({ status: "rejected", reason: expect.any(EventParkedError) });
    }
    expect(await parkedRows(first)).toHaveLength(3);

    const { logger } = capturingLogger();
    await deliverParkedEvents(env, logger);
    expect((await hubHistory(first)).map((event) => [event.seq, (event.data as { message: string }).message])).toEqual([
      [1, "step 1"],
      [2, "step 2"],
      [3, "step 3"],
    ]);
    expect(await hubHistory(second)).toHaveLength(1);
  });

  it("once the batcher has parked a workspace's events, it parks its later ones behind them, not past them", async () => {
    const workspace = uniqueWorkspace("parked-behind");
    let refusals = 1;
    const sent: number[] = [];
    const flakyHubs = {
      DB: env.DB,
      EVENT_HUB: {
        getByName: (name: string) => ({
          publishMany: async (events: never[]) => {
            sent.push(events.length);
            if (refusals-- > 0) throw new Error("Durable Object is overloaded.");
            return await env.EVENT_HUB.getByName(name).publishMany(events);
          },
        }),
      } as unknown as typeof env.EVENT_HUB,
    };
    // Never tries the parked event again on its own: this is about what happens meanwhile.
    const batcher = new EventBatcher(flakyHubs, {}, { retryDelaysMs: [], parkedTryEveryMs: Number.POSITIVE_INFINITY });
    const first = await batcher.publish(stepMessage(workspace, 1)).catch((error) => error);
    expect(first).toBeInstanceOf(EventParkedError);
    // The hub would take this one, but it would land before step 1.
    const second = await batcher.publish(stepMessage(workspace, 2)).catch((error) => error);
    expect(second).toBeInstanceOf(EventParkedError);
    expect(sent).toEqual([1]);
    expect(await parkedRows(workspace)).toHaveLength(2);

    await deliverParkedEvents(env, capturingLogger().logger);
    expect((await hubHistory(workspace)).map((event) => (event.data as { message: string }).message)).toEqual([
      "step 1",
      "step 2",
    ]);
  });

  it("once its hub is back, the batcher's next send lands the parked events first, then goes straight to the hub", async () => {
    const workspace = uniqueWorkspace("parked-recover");
    let refusals = 1;
    const flakyHubs = {
      DB: env.DB,
      EVENT_HUB: {
        getByName: (name: string) => ({
          publishMany: async (events: never[]) => {
            if (refusals-- > 0) throw new Error("Durable Object is overloaded.");
            return await env.EVENT_HUB.getByName(name).publishMany(events);
          },
        }),
      } as unknown as typeof env.EVENT_HUB,
    };
    const batcher = new EventBatcher(flakyHubs, {}, { retryDelaysMs: [], parkedTryEveryMs: 0 });
    expect(await batcher.publish(stepMessage(workspace, 1)).catch((error) => error)).toBeInstanceOf(EventParkedError);
    expect(await batcher.publish(stepMessage(workspace, 2))).toMatchObject({ seq: 2 });
    expect(await batcher.publish(stepMessage(workspace, 3))).toMatchObject({ seq: 3 });
    expect((await hubHistory(workspace)).map((event) => (event.data as { message: string }).message)).toEqual([
      "step 1",
      "step 2",
      "step 3",
    ]);
    expect(await parkedRows(workspace)).toEqual([]);
  });

  it("keeps what its hub still refuses, counting the tries, and gives up after days with each id logged", async () => {
    const workspace = uniqueWorkspace("parked-refused");
    const nowMs = Date.now();
    const [old, recent] = [1, 2].map((step) => stampEvent(stepMessage(workspace, step)) as EventEnvelope);
    await parkEvents(env.DB, [old], "hub down", nowMs - (PARKED_EVENT_GIVE_UP_DAYS + 1) * DAY_MS);
    await parkEvents(env.DB, [recent], "hub down", nowMs);
    const { logger, logs } = capturingLogger();

    const delivery = await deliverParkedEvents(refusingHubs, logger, nowMs);
    expect(delivery).toMatchObject({ givenUp: 1 });
    expect(await parkedRows(workspace)).toEqual([
      { event_id: recent.event_id, attempts: 1, last_error: "Durable Object is overloaded." },
    ]);
    expect(logs).toContainEqual(
      expect.objectContaining({
        level: "error",
        msg: "parked events given up: their hub refused them for days",
        event_ids: [old.event_id],
      }),
    );

    // The hub is back: the every-minute cron delivers what is left.
    const waits: Promise<unknown>[] = [];
    const ctx = { waitUntil: (work: Promise<unknown>) => waits.push(work), passThroughOnException() {} };
    await handleScheduled(
      { cron: "* * * * *", scheduledTime: nowMs, noRetry() {} } as ScheduledController,
      env,
      ctx as unknown as ExecutionContext,
    );
    await Promise.all(waits);
    expect((await hubHistory(workspace)).map((event) => event.event_id)).toEqual([recent.event_id]);
    expect(await parkedRows(workspace)).toEqual([]);
  });
});
