import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";

const BASE = "http://edge.test";

function call(path: string, init?: RequestInit) {
  return exports.default.fetch(new Request(`${BASE}${path}`, init));
}

const BODY = new TextEncoder().encode(JSON.stringify({ message: "hi", count: 1 }));

async function gzip(bytes: Uint8Array): Promise<ArrayBuffer> {
  return new Response(new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"))).arrayBuffer();
}

describe("a request body's Content-Encoding", () => {
  it("refuses a compressed body with 415 naming the coding, not a 400 quoting its bytes as malformed JSON", async () => {
    // RFC 9110 §15.5.16: an unsupported content coding is a 415, with Accept-Encoding saying what is taken.
    const response = await call("/__debug/echo", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Content-Encoding": "gzip" },
      body: await gzip(BODY),
    });
    expect(response.status).toBe(415);
    expect(response.headers.get("Content-Type")).toBe("application/problem+json");
    expect(response.headers.get("Accept-Encoding")).toBe("identity");
    const body = (await response.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ status: 415, code: "UNSUPPORTED_MEDIA_TYPE" });
    expect(body.detail).toBe("Content-Encoding gzip is not supported; send the body uncompressed.");
    expect(body.request_id).toBe(response.headers.get("X-Request-Id"));
  });

  it("takes an uncompressed body, with or without Content-Encoding: identity", async () => {
    const variants: Record<string, string>[] = [
      { "Content-Type": "application/json", "Content-Encoding": "identity" },
      { "Content-Type": "application/json" },
    ];
    for (const headers of variants) {
      const response = await call("/__debug/echo", { method: "POST", headers, body: BODY });
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ echoed: { message: "hi", count: 1 } });
    }
  });
});
