import { describe, expect, it } from "vitest";
import { idTimeMs, isId, newId, ulid } from "../../src/lib/ids.ts";

describe("prefixed ids", () => {
  it("have the contract's prefix and a 26-character ULID", () => {
    expect(newId("task")).toMatch(/^task_[0-9A-HJKMNP-TV-Z]{26}$/);
    expect(newId("event")).toMatch(/^evt_[a-zA-Z0-9_]+$/);
    expect(newId("workflowExecution")).toMatch(/^wfx_/);
  });

  it("encode their creation time", () => {
    const timeMs = Date.UTC(2026, 10, 25, 12, 0, 0, 123);
    expect(idTimeMs(newId("run", timeMs))).toBe(timeMs);
    expect(idTimeMs("task_not-a-ulid")).toBeNull();
  });

  it("sort by creation time, even within one millisecond", () => {
    const ids = Array.from({ length: 2_000 }, () => ulid(1_700_000_000_000));
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ulid(1_700_000_000_001) > ids[ids.length - 1]).toBe(true);
  });

  it("are checked by kind", () => {
    expect(isId("task", newId("task"))).toBe(true);
    expect(isId("task", newId("run"))).toBe(false);
  });
});
