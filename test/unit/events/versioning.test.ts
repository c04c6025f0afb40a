import { describe, expect, it } from "vitest";
import { EVENT_TYPES, type EventEnvelope, publishedVersion, validateEvent } from "../../../src/events/catalog.ts";
import { stampEvent } from "../../../src/events/publish.ts";
import { atVersion, checkRequestedVersion, supportedMajors } from "../../../src/events/versioning.ts";
import { SEED_EXAMPLES } from "./examples.ts";

describe("upcasting (seed §9.3)", () => {
  it("task.created 1.0 → 2.0 fills estimated_cost with 0.0 when it is missing", () => {
    const v1 = structuredClone(SEED_EXAMPLES["task.created"]) as unknown as EventEnvelope;
    delete (v1.data as { task: Record<string, unknown> }).task.estimated_cost;
    const v2 = atVersion(v1, "2.0");
    expect(v2.version).toBe("2.0");
    expect((v2.data as { task: { estimated_cost: number } }).task.estimated_cost).toBe(0);
    expect(validateEvent(v2, { exactVersion: true }).ok).toBe(true);
    // The original is not modified.
    expect(v1.version).toBe("1.0");
    expect((v1.data as { task: Record<string, unknown> }).task).not.toHaveProperty("estimated_cost");
  });

  it("keeps an estimated_cost that is already there", () => {
    const v1 = SEED_EXAMPLES["task.created"] as unknown as EventEnvelope;
    expect((atVersion(v1, "2.0").data as { task: { estimated_cost: number } }).task.estimated_cost).toBe(0.42);
  });

  it("does nothing when the target is the event's version, or for types without a newer version", () => {
    const v1 = SEED_EXAMPLES["task.created"] as unknown as EventEnvelope;
    expect(atVersion(v1, "1.0")).toBe(v1);
    const toolCall = SEED_EXAMPLES["tool.call"] as unknown as EventEnvelope;
    expect(atVersion(toolCall, "2.0")).toBe(toolCall);
  });

  it("does not take a newer major down: a consumer at 1.0 gets task.created 2.0 as it is", () => {
    const v2 = { ...SEED_EXAMPLES["task.created"], version: "2.0" } as unknown as EventEnvelope;
    expect(atVersion(v2, "1.0")).toBe(v2);
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

describe("minor versions: llm.provider.error 1.1 adds the optional http_status", () => {
  const v10 = SEED_EXAMPLES["llm.provider.error"] as unknown as EventEnvelope;
  const v11 = { ...v10, version: "1.1", data: { ...v10.data, http_status: 429 } };

  it("is what producers stamp on that type; every other type is published at 1.0", () => {
    expect(publishedVersion("llm.provider.error")).toBe("1.1");
    expect(EVENT_TYPES.filter((type) => publishedVersion(type) !== "1.0")).toEqual(["llm.provider.error"]);
    const stamped = stampEvent({ event_type: "llm.provider.error", workspace_id: "ws_minor", data: v11.data as never });
    expect(stamped).toMatchObject({ version: "1.1", data: { http_status: 429 } });
  });

  it("validates 1.1 with a status, null (no answer came) or none, and refuses a status that is not one", () => {
    expect(validateEvent(v11, { exactVersion: true }).ok).toBe(true);
    expect(validateEvent({ ...v11, data: { ...v11.data, http_status: null } }, { exactVersion: true }).ok).toBe(true);
    expect(validateEvent({ ...v11, data: v10.data }, { exactVersion: true }).ok).toBe(true);
    expect(validateEvent({ ...v11, data: { ...v11.data, http_status: 42 } })).toMatchObject({
      ok: false,
      issues: [{ path: "data.http_status" }],
    });
  });

  it("a consumer at 1.0 gets it without http_status, and the stored event is untouched", () => {
    const down = atVersion(v11, "1.0");
    expect(down.version).toBe("1.0");
    expect(down.data).toEqual(v10.data);
    expect(down.data).not.toHaveProperty("http_status");
    expect(validateEvent(down, { exactVersion: true }).ok).toBe(true);
    expect(v11.data.http_status).toBe(429);
  });

  it("a 1.0 event asked for at 1.1 or later comes up to 1.1 without inventing a status", () => {
    for (const target of ["1.1", "1.7", "2.0"]) {
      const up = atVersion(v10, target);
      expect(up.version).toBe("1.1");
      expect(up.data).not.toHaveProperty("http_status");
    }
    expect(atVersion(v11, "2.0")).toBe(v11);
    expect(atVersion(v11, "1.1")).toBe(v11);
  });
});
