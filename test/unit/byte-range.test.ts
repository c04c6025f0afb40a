import { describe, expect, it } from "vitest";
import { ifRangeHolds, noneMatchHits, parseByteRange } from "../../src/lib/byte-range.ts";

describe("parseByteRange", () => {
  const size = 1_000;

  it("reads one range in each of its three forms, clamped to the object", () => {
    expect(parseByteRange("bytes=0-99", size)).toEqual({ kind: "partial", offset: 0, length: 100 });
    expect(parseByteRange("bytes=900-", size)).toEqual({ kind: "partial", offset: 900, length: 100 });
    expect(parseByteRange("bytes=-10", size)).toEqual({ kind: "partial", offset: 990, length: 10 });
    expect(parseByteRange("bytes=990-5000", size)).toEqual({ kind: "partial", offset: 990, length: 10 });
    expect(parseByteRange("bytes=-5000", size)).toEqual({ kind: "partial", offset: 0, length: 1_000 });
    expect(parseByteRange("Bytes = 5-5", size)).toEqual({ kind: "partial", offset: 5, length: 1 });
  });

  it("answers whole what it does not serve as a part: no header, another unit, several ranges, nonsense", () => {
    for (const header of [undefined, null, "", "items=0-1", "bytes=0-1,5-6", "bytes=9-3", "bytes=-", "bytes=a-b"]) {
      expect(parseByteRange(header, size)).toEqual({ kind: "full" });
    }
  });

  it("refuses a range wholly past the end, and any range of an empty object", () => {
    expect(parseByteRange("bytes=1000-", size)).toEqual({ kind: "unsatisfiable" });
    expect(parseByteRange("bytes=1000-2000", size)).toEqual({ kind: "unsatisfiable" });
    expect(parseByteRange("bytes=-0", size)).toEqual({ kind: "unsatisfiable" });
    expect(parseByteRange("bytes=0-", 0)).toEqual({ kind: "unsatisfiable" });
    expect(parseByteRange("bytes=-5", 0)).toEqual({ kind: "unsatisfiable" });
  });
});

describe("validators", () => {
  const etag = '"abc"';

  it("If-None-Match hits on the tag, its weak form, any tag of a list, or *", () => {
    expect(noneMatchHits('"abc"', etag)).toBe(true);
    expect(noneMatchHits('W/"abc"', etag)).toBe(true);
    expect(noneMatchHits('"x", "abc"', etag)).toBe(true);
    expect(noneMatchHits("*", etag)).toBe(true);
    expect(noneMatchHits('"abd"', etag)).toBe(false);
    expect(noneMatchHits(undefined, etag)).toBe(false);
  });

  it("If-Range keeps a range only for the same version", () => {
    expect(ifRangeHolds(undefined, etag)).toBe(true);
    expect(ifRangeHolds('"abc"', etag)).toBe(true);
    expect(ifRangeHolds('"old"', etag)).toBe(false);
    expect(ifRangeHolds('W/"abc"', etag)).toBe(false);
    expect(ifRangeHolds("Wed, 21 Oct 2026 07:28:00 GMT", etag)).toBe(false);
  });
});
