import { exports } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { bearer, createTestWorkspace, TEST_ADMIN_TOKEN, type TestWorkspace } from "../support/workspaces.ts";

/**
 * `expires_at` of a new key (POST /api/v1/api-keys, and the first key of POST /api/v1/workspaces) is stored and shown
 * in UTC: one whose UTC form falls past year 9999 (9999-12-31T23:59:59-05:00, a common "never") has no ISO 8601
 * form. It was stored as `+010000-01-01T04:59:59.000Z` and shown so in every key listing, which strict date parsers
 * refuse: a client could no longer read the workspace's keys.
 */

const BASE = "http://edge.test";
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));
const LAST_INSTANT = "9999-12-31T23:59:59.999Z";
/** What `expires_at` looks like in every answer: four-digit year, milliseconds, UTC. */
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

let workspace: TestWorkspace;
beforeAll(async () => {
  workspace = await createTestWorkspace(fetcher, BASE, { name: "key expiry bounds" });
});

function createKey(expires_at: string) {
  return fetcher(`${BASE}/api/v1/api-keys`, {
    method: "POST",
    headers: { ...workspace.headers, "Content-Type": "application/json" },
    body: JSON.stringify({ name: "far", scopes: ["tasks:read"], expires_at }),
  });
}

describe("a new key's expires_at", () => {
  it("past the last instant of year 9999 in UTC is refused (422) on expires_at, not stored with a six-digit year", async () => {
    const response = await createKey("9999-12-31T23:59:59-05:00");
    expect(response.status).toBe(422);
    expect(response.headers.get("Content-Type")).toBe("application/problem+json");
    const body = (await response.json()) as { errors: { path: string; message: string }[] };
    expect(body.errors).toEqual([{ path: "expires_at", message: `must be no later than ${LAST_INSTANT} (UTC)` }]);

    const listed = await fetcher(`${BASE}/api/v1/api-keys?limit=100`, { headers: workspace.headers });
    const page = (await listed.json()) as { data: { expires_at: string | null }[] };
    for (const key of page.data) if (key.expires_at !== null) expect(key.expires_at).toMatch(ISO_UTC);
  });

  it("up to that instant is taken, and shown as ISO 8601 UTC", async () => {
    for (const expiresAt of ["9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59+05:00"]) {
      const response = await createKey(expiresAt);
      expect(response.status).toBe(201);
      const key = (await response.json()) as { expires_at: string };
      expect(key.expires_at).toMatch(ISO_UTC);
      expect(Date.parse(key.expires_at)).toBe(Date.parse(expiresAt));
    }
  });

  it("is bounded the same for a workspace's first key", async () => {
    const response = await fetcher(`${BASE}/api/v1/workspaces`, {
      method: "POST",
      headers: { ...bearer(TEST_ADMIN_TOKEN), "Content-Type": "application/json" },
      body: JSON.stringify({
        name: "far first key",
        api_key: { name: "first", expires_at: "9999-12-31T20:00:00-12:00" },
      }),
    });
    expect(response.status).toBe(422);
    const body = (await response.json()) as { errors: { path: string }[] };
    expect(body.errors.map((error) => error.path)).toEqual(["api_key.expires_at"]);
  });
});
