import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { bearer, createTestWorkspace, TEST_ADMIN_TOKEN } from "../support/workspaces.ts";

/**
 * PATCH /api/v1/workspaces/{id} `limits.key_requests_per_second` / `key_burst`: optional, defaulting to the
 * workspace's. A merge patch's null takes one away again, back to that default.
 */

const BASE = "http://edge.test";
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));

function patch(workspaceId: string, body: unknown) {
  return fetcher(`${BASE}/api/v1/workspaces/${workspaceId}`, {
    method: "PATCH",
    headers: { ...bearer(TEST_ADMIN_TOKEN), "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

describe("a key's own rate limit", () => {
  it("set by the operator, is taken away again with null: back to the workspace's rate and burst", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE, { plan: "team" });
    const set = await patch(workspace.id, { limits: { key_requests_per_second: 2, key_burst: 4 } });
    expect(set.status).toBe(200);
    expect(((await set.json()) as { limits: object }).limits).toMatchObject({
      key_requests_per_second: 2,
      key_burst: 4,
    });

    const cleared = await patch(workspace.id, { limits: { key_requests_per_second: null, key_burst: null } });
    expect(cleared.status).toBe(200);
    const { limits } = (await cleared.json()) as { limits: Record<string, unknown> };
    expect(limits).toEqual({ requests_per_second: 50, burst: 100, max_running_tasks: 10, max_pending_tasks: 1000 });

    // As stored: a read shows the same.
    const read = await fetcher(`${BASE}/api/v1/workspaces/${workspace.id}`, { headers: bearer(TEST_ADMIN_TOKEN) });
    expect(((await read.json()) as { limits: object }).limits).toEqual(limits);
  });

  it("is the only limit null takes away: the workspace's own four are required", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE, { plan: "team" });
    const response = await patch(workspace.id, { limits: { burst: null } });
    expect(response.status).toBe(422);
    expect(response.headers.get("Content-Type")).toBe("application/problem+json");
    const body = (await response.json()) as { errors: { path: string }[] };
    expect(body.errors.map((error) => error.path)).toEqual(["limits.burst"]);
  });
});
