import { describe, expect, it } from "vitest";
import {
  type ChainedRow,
  canonicalEntry,
  canonicalJson,
  entryHash,
  GENESIS_HASH,
} from "../../../src/audit/canonical.ts";
import { csvCell, csvRecord } from "../../../src/audit/export.ts";
import { decodeCursor, encodeCursor } from "../../../src/audit/filters.ts";

const row: ChainedRow = {
  id: "aud_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3",
  workspace_id: "ws_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3",
  seq: 7,
  actor_type: "api_key",
  actor_id: "key_1",
  actor_display: "ci",
  action: "task.create",
  resource_type: "task",
  resource_id: "task_1",
  request_id: "req_1",
  trace_id: null,
  ip: "203.0.113.9",
  user_agent: null,
  changes: null,
  metadata: '{"b":1,"a":{"d":2,"c":[3,{"f":4,"e":5}]}}',
  created_at: "2026-11-25T21:00:00.000Z",
};

describe("canonical serialisation", () => {
  it("sorts object keys at every depth and drops undefined members", () => {
    expect(canonicalJson({ b: 1, a: { d: 2, c: [3, { f: 4, e: 5 }] }, z: undefined })).toBe(
      '{"a":{"c":[3,{"e":5,"f":4}],"d":2},"b":1}',
    );
  });

  it("hashes values, not formatting: reordered JSON columns hash the same", async () => {
    const reordered = { ...row, metadata: '{ "a": {"c": [3, {"e": 5, "f": 4}], "d": 2}, "b": 1 }' };
    expect(canonicalEntry(reordered)).toBe(canonicalEntry(row));
    expect(await entryHash(GENESIS_HASH, reordered)).toBe(await entryHash(GENESIS_HASH, row));
  });

  it("any field, the position or the previous hash changes the hash", async () => {
    const base = await entryHash(GENESIS_HASH, row);
    expect(base).toMatch(/^[0-9a-f]{64}$/);
    for (const changed of [
      { ...row, actor_id: "key_2" },
      { ...row, seq: 8 },
      { ...row, workspace_id: "ws_other" },
      { ...row, created_at: "2026-11-25T21:00:00.001Z" },
      { ...row, trace_id: "" },
      { ...row, metadata: '{"b":2}' },
    ]) {
      expect(await entryHash(GENESIS_HASH, changed)).not.toBe(base);
    }
    expect(await entryHash("1".repeat(64), row)).not.toBe(base);
  });
});

describe("CSV cells", () => {
  it("neutralises cells that a spreadsheet would run as a formula", () => {
    expect(csvCell("=1+1")).toBe("'=1+1");
    expect(csvCell("+SUM(A1)")).toBe("'+SUM(A1)");
    expect(csvCell("-2")).toBe("'-2");
    expect(csvCell("@cmd")).toBe("'@cmd");
    expect(csvCell("\tx")).toBe("'\tx");
    expect(csvCell("plain")).toBe("plain");
    expect(csvCell(12)).toBe("12");
    expect(csvCell(null)).toBe("");
  });

  it("quotes as RFC 4180 requires and ends records with CRLF", () => {
    expect(csvCell('say "hi", then\nleave')).toBe('"say ""hi"", then\nleave"');
    expect(csvCell('=HYPERLINK("x")')).toBe(`"'=HYPERLINK(""x"")"`);
    expect(csvRecord(["a", null, "b,c"])).toBe('a,,"b,c"\r\n');
  });
});

describe("cursors", () => {
  it("round-trip and refuse anything else", () => {
    expect(decodeCursor(encodeCursor(123_456))).toBe(123_456);
    expect(decodeCursor("not-a-cursor")).toBeNull();
    expect(decodeCursor(btoa('{"s":-1}'))).toBeNull();
    expect(decodeCursor(btoa('{"s":"1"}'))).toBeNull();
  });
});
