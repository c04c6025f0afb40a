import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { bearer, createTestKey, createTestWorkspace } from "../support/workspaces.ts";

const BASE = "http://edge.test";
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));

describe("rate limits over HTTP", () => {
  it("admits at most burst + rate·t of a concurrent flood, answers 429 with Retry-After, then recovers", async () => {
    const burst = 8;
    const ratePerSecond = 2;
    const workspace = await createTestWorkspace(fetcher, BASE, {
      limits: { requests_per_second: ratePerSecond, burst },
    });
    const startedAtMs = Date.now();
    const responses = await Promise.all(
      Array.from({ length: 120 }, () => fetcher(`${BASE}/api/v1/whoami`, { headers: workspace.headers })),
    );
    const elapsedSeconds = (Date.now() - startedAtMs) / 1000;
    const admitted = responses.filter((response) => response.status === 200);
    const refused = responses.filter((response) => response.status === 429);
    expect(admitted.length + refused.length).toBe(responses.length);
    expect(admitted.length).toBeGreaterThanOrEqual(burst);
    expect(admitted.length).toBeLessThanOrEqual(burst + Math.ceil(ratePerSecond * elapsedSeconds));

    expect(admitted[0].headers.get("RateLimit-Policy")).toMatch(/q=\d+;w=\d+/);
    expect(admitted[0].headers.get("RateLimit")).toMatch(/r=\d+;t=\d+/);
    const refusal = refused[0];
    const retryAfterSeconds = Number(refusal.headers.get("Retry-After"));
    expect(retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(refusal.headers.get("Content-Type")).toBe("application/problem+json");
    expect(await refusal.json()).toMatchObject({ status: 429, code: "RATE_LIMITED" });

    await new Promise((wake) => setTimeout(wake, retryAfterSeconds * 1000 + 100));
    expect((await fetcher(`${BASE}/api/v1/whoami`, { headers: workspace.headers })).status).toBe(200);
  });

  it("gives each key its own bucket inside the workspace's", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE, {
      limits: { requests_per_second: 1, burst: 50, key_requests_per_second: 1, key_burst: 3 },
    });
    const other = await createTestKey(fetcher, BASE, workspace.key, ["tasks:read"]);
    const first = await Promise.all(
      Array.from({ length: 6 }, () => fetcher(`${BASE}/api/v1/whoami`, { headers: workspace.headers })),
    );
    expect(first.filter((response) => response.status === 200).length).toBeLessThanOrEqual(4);
    // The other key still has its own burst.
    const second = await fetcher(`${BASE}/api/v1/whoami`, { headers: other.headers });
    expect(second.status).toBe(200);
  });

  it("does not limit the operator", async () => {
    const responses = await Promise.all(
      Array.from({ length: 30 }, () =>
        fetcher(`${BASE}/api/v1/whoami`, { headers: bearer("test-admin-token-0123456789abcdef") }),
      ),
    );
    expect(responses.every((response) => response.status === 200)).toBe(true);
  });
});
