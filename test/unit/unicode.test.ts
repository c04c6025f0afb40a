import { describe, expect, it } from "vitest";
import { utf8ByteLength } from "../../src/lib/unicode.ts";

describe("utf8ByteLength", () => {
  it("is what TextEncoder makes of the text, in every width of character", () => {
    const samples = [
      "",
      "plain ASCII",
      "café",
      "naïve — “quoted”",
      "日本語のテキスト",
      "emoji 🚀🎉 and 𝄞",
      "mixed ü語🚀x",
    ];
    for (const text of samples) expect(utf8ByteLength(text)).toBe(new TextEncoder().encode(text).byteLength);
    expect(utf8ByteLength("語")).toBe(3);
    expect(utf8ByteLength("🚀")).toBe(4);
  });
});
