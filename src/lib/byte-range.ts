/**
 * HTTP range and validator requests on a stored object (RFC 9110 §13, §14):
 * what a download client sends to resume, or to skip a body it already has.
 */

export type RangeAnswer =
  | { kind: "full" }
  | { kind: "partial"; offset: number; length: number }
  | { kind: "unsatisfiable" };

const RANGE_SPEC = /^(\d*)-(\d*)$/;

/**
 * One `bytes=` range of an object of `sizeBytes`. A header this cannot read,
 * another unit, or several ranges are answered whole, as RFC 9110 lets a
 * server do; a range wholly past the end is unsatisfiable (416).
 */
export function parseByteRange(header: string | null | undefined, sizeBytes: number): RangeAnswer {
  if (!header) return { kind: "full" };
  const equals = header.indexOf("=");
  if (equals < 0 || header.slice(0, equals).trim().toLowerCase() !== "bytes") return { kind: "full" };
  const spec = header.slice(equals + 1).trim();
  if (spec.includes(",")) return { kind: "full" };
  const match = RANGE_SPEC.exec(spec);
  if (!match || (match[1] === "" && match[2] === "")) return { kind: "full" };
  if (match[1] === "") {
    // `-n`: the last n bytes.
    const suffix = Number(match[2]);
    if (suffix === 0 || sizeBytes === 0) return { kind: "unsatisfiable" };
    const length = Math.min(suffix, sizeBytes);
    return { kind: "partial", offset: sizeBytes - length, length };
  }
  const first = Number(match[1]);
  // `9-3` is no range at all: ignored, not refused.
  if (match[2] !== "" && Number(match[2]) < first) return { kind: "full" };
  if (first >= sizeBytes) return { kind: "unsatisfiable" };
  const last = match[2] === "" ? sizeBytes - 1 : Math.min(Number(match[2]), sizeBytes - 1);
  return { kind: "partial", offset: first, length: last - first + 1 };
}

/** `If-None-Match`: whether the client's copy is this one (weak comparison; `*` matches any). */
export function noneMatchHits(header: string | null | undefined, etag: string): boolean {
  if (!header) return false;
  return header.split(",").some((tag) => {
    const trimmed = tag.trim();
    return trimmed === "*" || trimmed.replace(/^W\//, "") === etag;
  });
}

/** `If-Range`: a range applies only to the representation the client names (strong comparison); a date never matches here. */
export function ifRangeHolds(header: string | null | undefined, etag: string): boolean {
  return !header || header.trim() === etag;
}
