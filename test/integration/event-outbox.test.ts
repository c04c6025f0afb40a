import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { EventEnvelope } from "../../src/events/catalog.ts";
import { EventOutbox, OUTBOX_GIVE_UP_MS } from "../../src/events/outbox.ts";
import { stampEvent } from "../../src/events/publish.ts";
import { Logger } from "../../src/lib/logger.ts";
import { LIMITER_EVENT_OUTBOX } from "../../src/limits/limiter-store.ts";
import { eventsOf, limiterOutboxDrained, workspaceWith } from "../support/llm.ts";
import { hubHistory, stepMessage, uniqueWorkspace } from "../unit/events/hub-client.ts";

/**
 * The WorkspaceLimiter's event outbox: events queued with the state change
 * that decided them, delivered to the workspace's EventHub until it has them.
 */

const NOW = Date.parse("2026-11-26T10:00:00Z");

function message(workspaceId: string, step: number): EventEnvelope {
  return stampEvent(stepMessage(workspaceId, step)) as EventEnvelope;
}

type Hub = "up" | "down" | "answer lost";

/** The real hubs, or ones that refuse, or that take the events and then fail to answer. */
function hubs(state: { hub: Hub }) {
  const getByName = (name: string) => ({
    async publishMany(events: EventEnvelope[]) {
      if (state.hub === "down") throw new Error("Durable Object is overloaded.");
      const result = await env.EVENT_HUB.getByName(name).publishMany(events);
      if (state.hub === "answer lost") throw new Error("Network connection lost.");
      return result;
    },
  });
  return { EVENT_HUB: { getByName } as unknown as typeof env.EVENT_HUB };
}

/** An outbox on a fresh limiter's storage, a logger, and the lines it wrote. */
function inOutbox(
  body: (outbox: EventOutbox, logger: Logger, logs: Record<string, unknown>[]) => Promise<void>,
): Promise<void> {
  const logs: Record<string, unknown>[] = [];
  const logger = new Logger({ level: "info", sampleRate: 1, sink: (line) => logs.push(JSON.parse(line)) });
  const stub = env.WORKSPACE_LIMITER.getByName(`outbox-test:${crypto.randomUUID()}`);
  return runInDurableObject(stub, (_instance, state) =>
    body(new EventOutbox(state.storage.sql, LIMITER_EVENT_OUTBOX), logger, logs),
  );
}

describe("EventOutbox", () => {
  it("delivers queued events to their hub in the order they were decided, once, and is empty after", () =>
    inOutbox(async (outbox, logger) => {
      const workspace = uniqueWorkspace("outbox");
      const events = [1, 2, 3].map((step) => message(workspace, step));
      outbox.add(events, NOW);
      expect(outbox.nextDueMs()).toBe(NOW);
      expect(await outbox.deliver(env, NOW, logger)).toEqual({ sent: 3, retrying: 0, dropped: 0 });
      expect(outbox.nextDueMs()).toBeNull();
      expect(await outbox.deliver(env, NOW + 1, logger)).toEqual({ sent: 0, retrying: 0, dropped: 0 });
      const seen = await hubHistory(workspace);
      expect(seen.map((event) => [event.event_id, event.seq])).toEqual(
        events.map((event, index) => [event.event_id, index + 1]),
      );
    }));

  it("keeps what the hub refused, with what came after it, until its retry; a delivery whose answer was lost lands once", () =>
    inOutbox(async (outbox, logger, logs) => {
      const workspace = uniqueWorkspace("outbox-retry");
      const state = { hub: "down" as Hub };
      const [first, second, third] = [1, 2, 3].map((step) => message(workspace, step));
      outbox.add([first, second], NOW);
      expect(await outbox.deliver(hubs(state), NOW, logger)).toEqual({ sent: 0, retrying: 2, dropped: 0 });
      expect(logs.at(-1)).toMatchObject({ level: "warn", msg: "event delivery failed; retrying", retry_in_ms: 1_000 });
      // A later event waits with them, so the workspace's events stay in order.
      outbox.add([third], NOW + 10);
      expect(outbox.pending().map((row) => [row.event.event_id, row.attempts, row.dueAtMs])).toEqual([
        [first.event_id, 1, NOW + 1_000],
        [second.event_id, 1, NOW + 1_000],
        [third.event_id, 0, NOW + 1_000],
      ]);
      state.hub = "up";
      expect(await outbox.deliver(hubs(state), NOW + 999, logger)).toEqual({ sent: 0, retrying: 0, dropped: 0 });
      expect(await hubHistory(workspace)).toEqual([]);
      // The hub takes them but its answer is lost: they stay queued, and the next delivery is 5 s later.
      state.hub = "answer lost";
      expect(await outbox.deliver(hubs(state), NOW + 1_000, logger)).toEqual({ sent: 0, retrying: 3, dropped: 0 });
      expect(outbox.nextDueMs()).toBe(NOW + 6_000);
      state.hub = "up";
      expect(await outbox.deliver(hubs(state), NOW + 6_000, logger)).toEqual({ sent: 3, retrying: 0, dropped: 0 });
      const seen = await hubHistory(workspace);
      expect(seen.map((event) => [event.event_id, event.seq])).toEqual([
        [first.event_id, 1],
        [second.event_id, 2],
        [third.event_id, 3],
      ]);
    }));

  it("drops an event the hub has refused for a day, and logs its id", () =>
    inOutbox(async (outbox, logger, logs) => {
      const event = message(uniqueWorkspace("outbox-drop"), 1);
      outbox.add([event], NOW);
      const down = hubs({ hub: "down" });
      // Refused just short of a day: tried again a second later, when the day is up.
      expect(await outbox.deliver(down, NOW + OUTBOX_GIVE_UP_MS - 1_000, logger)).toMatchObject({ retrying: 1 });
      expect(outbox.nextDueMs()).toBe(NOW + OUTBOX_GIVE_UP_MS);
      expect(await outbox.deliver(down, NOW + OUTBOX_GIVE_UP_MS, logger)).toEqual({ sent: 0, retrying: 0, dropped: 1 });
      expect(outbox.nextDueMs()).toBeNull();
      expect(logs.at(-1)).toMatchObject({ level: "error", event_ids: [event.event_id] });
    }));
});

describe("threshold events from the WorkspaceLimiter", () => {
  it("are published by the limiter itself, so they are not lost when the caller is gone after the charge", async () => {
    const workspace = await workspaceWith(null);
    const limits = { daily_tokens: 100, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null };
    // The caller settles and is never heard from again: it publishes nothing.
    const result = await env.WORKSPACE_LIMITER.getByName(workspace.id).settleBudget({
      chargeKey: "run_gone:1",
      limits,
      tokens: 85,
      costUsd: 0,
      events: { workspaceId: workspace.id, taskId: "task_gone", runId: "run_gone", correlationId: "c".repeat(32) },
    });
    expect(result.crossings.map((crossing) => crossing.thresholdPercent)).toEqual([50, 80]);
    await limiterOutboxDrained(workspace.id);
    const reached = await eventsOf(workspace, "billing.threshold.reached", 2);
    expect(reached).toHaveLength(2);
    expect(reached[1]).toMatchObject({
      task_id: "task_gone",
      data: { threshold_percent: 80, current_usage: 85, threshold: 100, alert_level: "warning" },
    });
    const alerts = await eventsOf(workspace, "billing.usage_alert", 2);
    expect(alerts.map((event) => event.data.alert_level)).toEqual(["info", "warning"]);
    // Settled again (a retried consumer): nothing more is queued.
    await env.WORKSPACE_LIMITER.getByName(workspace.id).settleBudget({
      chargeKey: "run_gone:1",
      limits,
      tokens: 85,
      costUsd: 0,
      events: { workspaceId: workspace.id, taskId: "task_gone" },
    });
    await limiterOutboxDrained(workspace.id);
    expect(await eventsOf(workspace, "billing.threshold.reached,billing.usage_alert")).toHaveLength(4);
  });
});
