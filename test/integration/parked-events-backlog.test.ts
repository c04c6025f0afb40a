import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { EventEnvelope } from "../../src/events/catalog.ts";
import { deliverParkedEvents, parkEvents } from "../../src/events/parked.ts";
import { stampEvent } from "../../src/events/publish.ts";
import { Logger } from "../../src/lib/logger.ts";
import { hubHistory, stepMessage, uniqueWorkspace } from "../unit/events/hub-client.ts";

/**
 * The every-minute delivery of parked events takes a bounded page of the
 * oldest. A workspace whose hub stays down must not hold that page for every
 * other workspace: their events land on the next run, not when the dead hub
 * comes back or its events are given up days later.
 */

/** Hubs that refuse one workspace and pass every other through to the real hub. */
function hubsRefusing(refusedWorkspace: string) {
  return {
    DB: env.DB,
    EVENT_HUB: {
      getByName: (name: string) =>
        name === refusedWorkspace
          ? {
              publishMany: async () => {
                throw new Error("Durable Object is overloaded.");
              },
            }
          : env.EVENT_HUB.getByName(name),
    } as unknown as typeof env.EVENT_HUB,
  };
}

async function parked(workspaceId: string) {
  const { results } = await env.DB.prepare(
    "SELECT event_id, attempts FROM parked_events WHERE workspace_id = ? ORDER BY id",
  )
    .bind(workspaceId)
    .all<{ event_id: string; attempts: number }>();
  return results;
}

const logger = new Logger({ level: "error", sampleRate: 1, sink: () => {} });

describe("parked events behind a workspace whose hub stays down", () => {
  it("are delivered on the next run, while the refused workspace's events stay parked in order", async () => {
    const down = uniqueWorkspace("parked-down");
    const healthy = uniqueWorkspace("parked-healthy");
    const nowMs = Date.now();
    // More than one delivery page of the dead hub's events, parked first (the oldest).
    const stuck = Array.from(
      { length: 1_050 },
      (_, index) => stampEvent(stepMessage(down, index + 1)) as EventEnvelope,
    );
    await parkEvents(env.DB, stuck, "hub down", nowMs - 60_000);
    const waiting = stampEvent(stepMessage(healthy, 1)) as EventEnvelope;
    await parkEvents(env.DB, [waiting], "hub down", nowMs - 30_000);

    const delivery = await deliverParkedEvents(hubsRefusing(down), logger, nowMs);

    expect((await hubHistory(healthy)).map((event) => event.event_id)).toEqual([waiting.event_id]);
    expect(await parked(healthy)).toEqual([]);
    expect(delivery.delivered).toBe(1);
    // The dead hub's events are all kept, in parking order; those tried this run count the try.
    const left = await parked(down);
    expect(left.map((row) => row.event_id)).toEqual(stuck.map((event) => event.event_id));
    expect(left.slice(0, 1_000).every((row) => row.attempts === 1)).toBe(true);
    expect(left.slice(1_000).every((row) => row.attempts === 0)).toBe(true);
  });
});
