import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";

const BASE = "http://edge.test";

function call(path: string, init?: RequestInit) {
  return exports.default.fetch(new Request(`${BASE}${path}`, init));
}

describe("OPTIONS without Origin (not a CORS preflight)", () => {
  it("answers a path that exists with 204 and the methods it takes in Allow, and no CORS headers", async () => {
    const response = await call("/health", { method: "OPTIONS" });
    expect(response.status).toBe(204);
    expect(response.headers.get("Allow")).toBe("GET, HEAD, OPTIONS");
    expect(response.headers.get("X-Request-Id")).toMatch(/^req_/);
    expect([...response.headers.keys()].filter((name) => name.startsWith("access-control-"))).toEqual([]);
    const echo = await call("/__debug/echo", { method: "OPTIONS" });
    expect(echo.status).toBe(204);
    expect(echo.headers.get("Allow")).toBe("OPTIONS, POST");
  });

  it("answers a path that does not exist with a 404 problem, as every other method is", async () => {
    const response = await call("/nope", { method: "OPTIONS" });
    expect(response.status).toBe(404);
    expect(response.headers.get("Content-Type")).toBe("application/problem+json");
    expect(await response.json()).toMatchObject({ status: 404, code: "NOT_FOUND" });
  });

  it("leaves a browser's preflight to CORS: 204 with the allowed origin", async () => {
    const response = await call("/health", {
      method: "OPTIONS",
      headers: { Origin: "http://localhost:8787", "Access-Control-Request-Method": "GET" },
    });
    expect(response.status).toBe(204);
    expect(response.headers.get("Access-Control-Allow-Origin")).toBe("http://localhost:8787");
  });
});
