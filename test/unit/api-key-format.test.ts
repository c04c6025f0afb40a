import { describe, expect, it } from "vitest";
import { displayPrefix, generateApiKey, hashApiKey, isApiKeyFormat } from "../../src/lib/api-key-format.ts";
import { timingSafeEqual } from "../../src/lib/crypto.ts";

describe("API key format", () => {
  it("is mgx_ plus 32 random bytes, base64url", () => {
    const key = generateApiKey();
    expect(key).toMatch(/^mgx_[A-Za-z0-9_-]{43}$/);
    expect(isApiKeyFormat(key)).toBe(true);
    expect(generateApiKey()).not.toBe(key);
    expect(isApiKeyFormat("mgx_short")).toBe(false);
    expect(isApiKeyFormat(`sk_${key.slice(4)}`)).toBe(false);
  });

  it("is stored as a SHA-256 hex digest with a short display prefix", async () => {
    expect(await hashApiKey("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    expect(displayPrefix("mgx_abcdefghijklmnop")).toBe("mgx_abcdefgh");
  });

  it("compares secrets without an early exit", () => {
    expect(timingSafeEqual("same-secret", "same-secret")).toBe(true);
    expect(timingSafeEqual("same-secret", "same-secreT")).toBe(false);
    expect(timingSafeEqual("short", "longer-value")).toBe(false);
    expect(timingSafeEqual("", "")).toBe(true);
    expect(timingSafeEqual("", "a")).toBe(false);
    expect(timingSafeEqual("secret", "secret-and-more")).toBe(false);
    expect(timingSafeEqual("clé-ü-€", "clé-ü-€")).toBe(true);
    expect(timingSafeEqual("clé-ü-€", "clé-ü-$")).toBe(false);
  });
});
