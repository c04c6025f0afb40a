import { describe, expect, it } from "vitest";
import {
  addTo,
  channelsOf,
  checkChannels,
  checkTypePatterns,
  initialSubscription,
  Matcher,
  removeFrom,
  splitList,
} from "../../../src/events/subscription.ts";

describe("subscriptions", () => {
  it("match types exactly, by prefix wildcard, or all", () => {
    const matcher = new Matcher(initialSubscription(["task.*", "tool.call"], []));
    expect(matcher.matchesType("task.created")).toBe(true);
    expect(matcher.matchesType("tool.call")).toBe(true);
    expect(matcher.matchesType("tool.result")).toBe(false);
    expect(matcher.matchesType("taskforce.created")).toBe(false);
    expect(new Matcher(initialSubscription(["workflow.step.*"], [])).matchesType("workflow.started")).toBe(false);
    expect(new Matcher(initialSubscription([], [])).matches("billing.usage_alert", [])).toBe(true);
  });

  it("match channels derived from the envelope and the data", () => {
    const event = { task_id: "task_1", run_id: "run_1", data: { workflow_execution_id: "wfx_1" } };
    expect(channelsOf(event).sort()).toEqual(["run:run_1", "task:task_1", "workflow:wfx_1"]);
    expect(channelsOf({ data: { task: { id: "task_9" } } })).toEqual(["task:task_9"]);
    const matcher = new Matcher(initialSubscription([], ["task:task_1"]));
    expect(matcher.matches("tool.call", channelsOf(event))).toBe(true);
    expect(matcher.matches("tool.call", ["task:task_2"])).toBe(false);
    expect(matcher.matches("system.resource.warning", [])).toBe(false);
  });

  it("change with subscribe and unsubscribe", () => {
    let subscription = initialSubscription([], []);
    subscription = removeFrom(subscription, ["*"], []);
    subscription = addTo(subscription, ["agent.*"], []);
    const matcher = new Matcher(subscription);
    expect(matcher.matchesType("agent.message")).toBe(true);
    expect(matcher.matchesType("task.created")).toBe(false);
  });

  it("refuse what is not a type, pattern or channel", () => {
    expect(checkTypePatterns(splitList("task.*, tool.call"))).toEqual({ ok: true, values: ["task.*", "tool.call"] });
    expect(checkTypePatterns(["task.explode"]).ok).toBe(false);
    expect(checkTypePatterns(["ta*sk"]).ok).toBe(false);
    // A wildcard that no type falls under is a typo, not a subscription to nothing.
    expect(checkTypePatterns(["tasks.*"])).toEqual({
      ok: false,
      message: '"tasks.*" matches no event type (GET /api/v1/events/schema lists them)',
    });
    expect(checkTypePatterns(["task.created.*"]).ok).toBe(false);
    expect(checkTypePatterns(["*", "workflow.step.*", "llm.*"]).ok).toBe(true);
    expect(checkChannels(["task:task_1", "*"]).ok).toBe(true);
    expect(checkChannels(["user:1"]).ok).toBe(false);
    expect(checkChannels(Array.from({ length: 51 }, (_, i) => `run:r${i}`)).ok).toBe(false);
  });
});
