import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createTestWorkspace } from "../support/workspaces.ts";

const BASE = "http://edge.test";

function call(path: string, init?: RequestInit) {
  return exports.default.fetch(new Request(`${BASE}${path}`, init));
}

describe("a JSON body is read whatever standard form its Content-Type takes", () => {
  it("accepts a JSON media type with a space before its parameters, a bare `;`, or a digit in a +json prefix", async () => {
    // RFC 9110 allows whitespace before `;`; the route's own media-type check did not, and answered
    // 400 BAD_REQUEST "Unsupported Media Type" to a body the API's own check had taken for JSON.
    for (const contentType of [
      "application/json ; charset=utf-8",
      "application/json;",
      "APPLICATION/JSON ; CHARSET=UTF-8",
      "application/vnd.api.v2+json",
    ]) {
      const response = await call("/__debug/echo", {
        method: "POST",
        headers: { "Content-Type": contentType },
        body: JSON.stringify({ message: "hi", count: 1 }),
      });
      expect(response.status, contentType).toBe(200);
      expect(await response.json(), contentType).toEqual({ echoed: { message: "hi", count: 1 } });
    }
  });

  it("reads such a body on an authenticated API route too", async () => {
    const workspace = await createTestWorkspace((url, init) => exports.default.fetch(new Request(url, init)), BASE, {
      scopes: ["admin"],
    });
    const response = await call("/api/v1/api-keys", {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json ; charset=utf-8" },
      body: JSON.stringify({ name: "spaced", scopes: ["tasks:read"] }),
    });
    expect(response.status).toBe(201);
    expect(await response.json()).toMatchObject({ name: "spaced", scopes: ["tasks:read"] });
  });
});
