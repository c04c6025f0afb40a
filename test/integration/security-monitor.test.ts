import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { AUTH_FAILURE_POLICY } from "../../src/auth/security.ts";
import { bearer, createTestKey, createTestWorkspace } from "../support/workspaces.ts";

const BASE = "http://edge.test";
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));

async function eventually<T>(probe: () => Promise<T | undefined>, timeoutMs = 3_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((wake) => setTimeout(wake, 50));
  }
  throw new Error("condition not met in time");
}

describe("security monitor", () => {
  it("blocks a client after repeated authentication failures, with a Retry-After", async () => {
    const ip = "203.0.113.77";
    const statuses: number[] = [];
    for (let attempt = 0; attempt < AUTH_FAILURE_POLICY.threshold + 2; attempt++) {
      const response = await fetcher(`${BASE}/api/v1/whoami`, {
        headers: { ...bearer(`mgx_${String(attempt).padStart(43, "x")}`), "CF-Connecting-IP": ip },
      });
      statuses.push(response.status);
      if (response.status === 429) {
        const retryAfter = Number(response.headers.get("Retry-After"));
        expect(retryAfter).toBeGreaterThan(60);
        // It says for how long, and that a good key from the address is refused too ("for a while" said neither).
        expect(await response.json()).toMatchObject({
          code: "RATE_LIMITED",
          blocked: true,
          retry_after_seconds: retryAfter,
          detail: `Too many failed authentications from this address: every request from it is refused for ${retryAfter} s more, whatever credentials it sends. Check the key before trying again.`,
        });
      }
    }
    expect(statuses.slice(0, AUTH_FAILURE_POLICY.threshold - 1).every((status) => status === 401)).toBe(true);
    expect(statuses.slice(AUTH_FAILURE_POLICY.threshold - 1)).toEqual([429, 429, 429]);

    // Even a valid key from that address is refused while the block lasts (in an isolate that saw it).
    const workspace = await createTestWorkspace(fetcher, BASE);
    const blocked = await fetcher(`${BASE}/api/v1/whoami`, {
      headers: { ...workspace.headers, "CF-Connecting-IP": ip },
    });
    expect(blocked.status).toBe(429);
    // Other clients are unaffected.
    const fine = await fetcher(`${BASE}/api/v1/whoami`, {
      headers: { ...workspace.headers, "CF-Connecting-IP": "203.0.113.78" },
    });
    expect(fine.status).toBe(200);
  });

  it("counts refused event-stream tickets as failed authentications, and blocks the address as for keys", async () => {
    const ip = "203.0.113.91";
    const workspace = await createTestWorkspace(fetcher, BASE);
    const upgrade = (ticket: string, from: string) =>
      fetcher(`${BASE}/api/v1/events/ws?ticket=${ticket}`, {
        headers: { Upgrade: "websocket", "CF-Connecting-IP": from },
      });
    const statuses: number[] = [];
    for (let attempt = 0; attempt < AUTH_FAILURE_POLICY.threshold + 1; attempt++) {
      const guessed = `tkt_${String(attempt).padStart(32, "g")}.${workspace.id}`;
      statuses.push((await upgrade(guessed, ip)).status);
    }
    expect(statuses.slice(0, AUTH_FAILURE_POLICY.threshold - 1).every((status) => status === 401)).toBe(true);
    expect(statuses.slice(AUTH_FAILURE_POLICY.threshold - 1)).toEqual([429, 429]);

    const takeTicket = async () => {
      const response = await fetcher(`${BASE}/api/v1/events/tickets`, { method: "POST", headers: workspace.headers });
      return ((await response.json()) as { ticket: string }).ticket;
    };
    // A good ticket from the blocked address is refused while the block lasts; from another, it opens the stream.
    const refused = await upgrade(await takeTicket(), ip);
    expect(refused.status).toBe(429);
    expect(await refused.json()).toMatchObject({ code: "RATE_LIMITED", blocked: true });
    const opened = await upgrade(await takeTicket(), "203.0.113.92");
    expect(opened.status).toBe(101);
    opened.webSocket!.accept();
    opened.webSocket!.close(1000);
  });

  it("reports a revoked key in use with a security event and an audit entry, once", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE, { scopes: ["admin"] });
    const victim = await createTestKey(fetcher, BASE, workspace.key, ["tasks:read"]);
    await fetcher(`${BASE}/api/v1/api-keys/${victim.id}`, { method: "DELETE", headers: workspace.headers });
    // Wait out the key cache, then use the revoked key twice.
    await eventually(async () => {
      const response = await fetcher(`${BASE}/api/v1/whoami`, {
        headers: { ...victim.headers, "CF-Connecting-IP": "192.0.2.10" },
      });
      return response.status === 401 ? true : undefined;
    }, 6_000);
    await fetcher(`${BASE}/api/v1/whoami`, { headers: { ...victim.headers, "CF-Connecting-IP": "192.0.2.10" } });

    const events = await eventually(async () => {
      const response = await fetcher(`${BASE}/api/v1/events?types=security.suspicious_activity`, {
        headers: workspace.headers,
      });
      const body = (await response.json()) as { data: { event_type: string; data: Record<string, unknown> }[] };
      return body.data?.length ? body.data : undefined;
    });
    expect(events).toHaveLength(1);
    expect(events[0].data).toMatchObject({
      event_type: "revoked_key",
      severity: "high",
      user_id: victim.id,
      ip_address: "192.0.2.10",
      blocked: false,
    });

    const audit = await eventually(async () => {
      const response = await fetcher(`${BASE}/api/v1/audit-logs?action=auth.failed`, { headers: workspace.headers });
      const body = (await response.json()) as { data: Record<string, unknown>[] };
      return body.data?.length ? body.data : undefined;
    });
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ action: "auth.failed", ip: "192.0.2.10" });
  });
});
