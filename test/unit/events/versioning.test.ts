import { describe, expect, it } from "vitest";
import { type EventEnvelope, validateEvent } from "../../../src/events/catalog.ts";
import { checkRequestedVersion, supportedMajors, upcast } from "../../../src/events/versioning.ts";
import { SEED_EXAMPLES } from "./examples.ts";

describe("upcasting (seed §9.3)", () => {
  it("task.created 1.0 → 2.0 fills estimated_cost with 0.0 when it is missing", () => {
    const v1 = structuredClone(SEED_EXAMPLES["task.created"]) as unknown as EventEnvelope;
    delete (v1.data as { task: Record<string, unknown> }).task.estimated_cost;
    const v2 = upcast(v1, "2.0");
    expect(v2.version).toBe("2.0");
    expect((v2.data as { task: { estimated_cost: number } }).task.estimated_cost).toBe(0);
    expect(validateEvent(v2, { exactVersion: true }).ok).toBe(true);
    // The original is not modified.
    expect(v1.version).toBe("1.0");
    expect((v1.data as { task: Record<string, unknown> }).task).not.toHaveProperty("estimated_cost");
  });

  it("keeps an estimated_cost that is already there", () => {
    const v1 = SEED_EXAMPLES["task.created"] as unknown as EventEnvelope;
    expect((upcast(v1, "2.0").data as { task: { estimated_cost: number } }).task.estimated_cost).toBe(0.42);
  });

  it("does nothing when the target is the event's version, or for types without a newer version", () => {
    const v1 = SEED_EXAMPLES["task.created"] as unknown as EventEnvelope;
    expect(upcast(v1, "1.0")).toBe(v1);
    const toolCall = SEED_EXAMPLES["tool.call"] as unknown as EventEnvelope;
    expect(upcast(toolCall, "2.0")).toBe(toolCall);
  });

  it("refuses unknown majors and malformed versions clearly", () => {
    expect(supportedMajors()).toEqual([1, 2]);
    expect(checkRequestedVersion("2.0")).toEqual({ ok: true, version: "2.0" });
    expect(checkRequestedVersion("1.4")).toEqual({ ok: true, version: "1.4" });
    expect(checkRequestedVersion("3.0")).toEqual({
      ok: false,
      message: "unknown major version 3; supported majors: 1, 2",
    });
    expect(checkRequestedVersion("v1")).toMatchObject({ ok: false, message: expect.stringContaining("major.minor") });
  });
});
