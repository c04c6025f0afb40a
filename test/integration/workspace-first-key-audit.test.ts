import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { bearer, TEST_ADMIN_TOKEN } from "../support/workspaces.ts";

/**
 * The audit entry of a workspace's first key (POST /api/v1/workspaces) records what the entry of any other key
 * (POST /api/v1/api-keys) does: name, scopes and `expires_at`. It left out when the key expires.
 */

const BASE = "http://edge.test";
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));

describe("the audit entry of a workspace's first key", () => {
  it("records when the key expires, as every other key's creation entry does", async () => {
    const expiresAt = "2031-06-30T12:00:00.000Z";
    const created = await fetcher(`${BASE}/api/v1/workspaces`, {
      method: "POST",
      headers: { ...bearer(TEST_ADMIN_TOKEN), "Content-Type": "application/json" },
      body: JSON.stringify({
        name: "first key audit",
        api_key: { name: "Trial admin", scopes: ["admin"], expires_at: expiresAt },
      }),
    });
    expect(created.status).toBe(201);
    const { api_key } = (await created.json()) as { api_key: { id: string; key: string } };

    const response = await fetcher(`${BASE}/api/v1/audit-logs?action=api_key.create`, { headers: bearer(api_key.key) });
    expect(response.status).toBe(200);
    const page = (await response.json()) as { data: { resource_id: string; changes: unknown }[] };
    const entry = page.data.find((item) => item.resource_id === api_key.id);
    expect(entry?.changes).toEqual({
      before: null,
      after: { name: "Trial admin", scopes: ["admin"], expires_at: expiresAt },
    });
  });
});
