import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { revokeStatement } from "../../src/auth/api-keys.ts";
import { CACHE_TTL_MS } from "../../src/auth/authenticate.ts";
import { createDb } from "../../src/db/client.ts";
import { bearer, createTestKey, createTestWorkspace } from "../support/workspaces.ts";

const BASE = "http://edge.test";
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));

describe("API keys", () => {
  it("are listed newest first with cursor pagination and no secrets", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE);
    const made = [];
    for (let index = 0; index < 4; index++)
      made.push(await createTestKey(fetcher, BASE, workspace.key, ["tasks:read"]));

    const first = await fetcher(`${BASE}/api/v1/api-keys?limit=3`, { headers: workspace.headers });
    const page1 = (await first.json()) as { data: { id: string }[]; next_cursor: string | null };
    expect(page1.data.map((key) => key.id)).toEqual([made[3].id, made[2].id, made[1].id]);
    expect(page1.next_cursor).toEqual(expect.any(String));

    const second = await fetcher(`${BASE}/api/v1/api-keys?limit=3&cursor=${page1.next_cursor}`, {
      headers: workspace.headers,
    });
    const page2 = (await second.json()) as { data: { id: string }[]; next_cursor: string | null };
    expect(page2.data.map((key) => key.id)).toEqual([made[0].id, workspace.keyId]);
    expect(page2.next_cursor).toBeNull();

    const badCursor = await fetcher(`${BASE}/api/v1/api-keys?cursor=garbage`, { headers: workspace.headers });
    expect(badCursor.status).toBe(422);
    const badLimit = await fetcher(`${BASE}/api/v1/api-keys?limit=1000`, { headers: workspace.headers });
    expect(badLimit.status).toBe(422);
  });

  it("stop working when they expire, and cannot be made already expired", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE);
    const create = (expires_at: string) =>
      fetcher(`${BASE}/api/v1/api-keys`, {
        method: "POST",
        headers: { ...workspace.headers, "Content-Type": "application/json" },
        body: JSON.stringify({ name: "short-lived", scopes: ["tasks:read"], expires_at }),
      });
    const expiresAtMs = Date.now() + 1_500;
    // Any offset is taken, and stored in UTC.
    const local = new Date(expiresAtMs + 2 * 3_600_000).toISOString().replace("Z", "+02:00");
    const made = await create(local);
    expect(made.status).toBe(201);
    const key = (await made.json()) as { key: string; expires_at: string | null };
    expect(key.expires_at).toBe(new Date(expiresAtMs).toISOString());
    expect((await fetcher(`${BASE}/api/v1/workspace`, { headers: bearer(key.key) })).status).toBe(200);
    await new Promise((wake) => setTimeout(wake, expiresAtMs - Date.now() + 50));
    const expired = await fetcher(`${BASE}/api/v1/workspace`, { headers: bearer(key.key) });
    expect(expired.status).toBe(401);

    const past = await create("2020-01-01T00:00:00Z");
    expect(past.status).toBe(422);
    expect(((await past.json()) as { errors: unknown }).errors).toEqual([
      { path: "expires_at", message: "must be in the future" },
    ]);
    // Not a date-time is one error that shows the form, not also "in the future".
    const notADate = await create("tomorrow");
    expect(notADate.status).toBe(422);
    expect(((await notADate.json()) as { errors: unknown }).errors).toEqual([
      {
        path: "expires_at",
        message: 'must be an ISO 8601 date-time, such as 2026-01-31T00:00:00Z; got "tomorrow"',
      },
    ]);
  });

  it("made by a key that expires, expire no later than it", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE);
    const makerEnds = new Date(Date.now() + 3_600_000).toISOString();
    const maker = await createTestKey(fetcher, BASE, workspace.key, ["admin"], { expiresAt: makerEnds });
    const create = (body: object) =>
      fetcher(`${BASE}/api/v1/api-keys`, {
        method: "POST",
        headers: { ...maker.headers, "Content-Type": "application/json" },
        body: JSON.stringify({ name: "made by a day key", scopes: ["admin"], ...body }),
      });
    const unbounded = await create({});
    expect(unbounded.status).toBe(201);
    expect(((await unbounded.json()) as { expires_at: string | null }).expires_at).toBe(makerEnds);
    const later = await create({ expires_at: new Date(Date.now() + 7_200_000).toISOString() });
    expect(later.status).toBe(422);
    expect(((await later.json()) as { errors: unknown }).errors).toEqual([
      { path: "expires_at", message: `must be no later than ${makerEnds}, when the key creating it expires` },
    ]);
    const sooner = new Date(Date.now() + 600_000).toISOString();
    const within = await create({ expires_at: sooner });
    expect(within.status).toBe(201);
    expect(((await within.json()) as { expires_at: string | null }).expires_at).toBe(sooner);
    // A key that never expires makes keys as it asks.
    const lasting = await fetcher(`${BASE}/api/v1/api-keys`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ name: "lasting", scopes: ["tasks:read"] }),
    });
    expect(((await lasting.json()) as { expires_at: string | null }).expires_at).toBeNull();
  });

  it("record when they were last used", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE);
    const key = await createTestKey(fetcher, BASE, workspace.key, ["tasks:read"]);
    expect((await fetcher(`${BASE}/api/v1/workspace`, { headers: key.headers })).status).toBe(200);
    let lastUsedAt: string | null = null;
    for (let attempt = 0; attempt < 50 && !lastUsedAt; attempt++) {
      const list = (await (await fetcher(`${BASE}/api/v1/api-keys`, { headers: workspace.headers })).json()) as {
        data: { id: string; last_used_at: string | null }[];
      };
      lastUsedAt = list.data.find((row) => row.id === key.id)?.last_used_at ?? null;
      if (!lastUsedAt) await new Promise((wake) => setTimeout(wake, 20));
    }
    expect(lastUsedAt).toEqual(expect.stringMatching(/^\d{4}-\d\d-\d\dT/));
  });

  it("stop working at once in the isolate that revoked them, and revoking again changes nothing", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE);
    const victim = await createTestKey(fetcher, BASE, workspace.key, ["tasks:read"]);
    // Use it once so this isolate caches it.
    expect((await fetcher(`${BASE}/api/v1/workspace`, { headers: victim.headers })).status).toBe(200);

    const revoke = await fetcher(`${BASE}/api/v1/api-keys/${victim.id}`, {
      method: "DELETE",
      headers: workspace.headers,
    });
    expect(revoke.status).toBe(200);
    expect(await revoke.json()).toMatchObject({ id: victim.id, revoked_at: expect.any(String) });
    const refused = await fetcher(`${BASE}/api/v1/workspace`, { headers: victim.headers });
    expect(refused.status).toBe(401);
    expect(await refused.json()).toMatchObject({ code: "UNAUTHENTICATED", detail: "Invalid credentials." });

    // Revoking again is a no-op; an unknown id is a 404.
    expect(
      (await fetcher(`${BASE}/api/v1/api-keys/${victim.id}`, { method: "DELETE", headers: workspace.headers })).status,
    ).toBe(200);
    const missing = await fetcher(`${BASE}/api/v1/api-keys/key_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3`, {
      method: "DELETE",
      headers: workspace.headers,
    });
    expect(missing.status).toBe(404);
  });

  it("revoked by concurrent requests, are revoked once: one revoke entry, and every answer the stored time", async () => {
    // Found by fuzz: each of 5 concurrent revokes wrote an entry claiming the revoke, and overwrote revoked_at.
    const workspace = await createTestWorkspace(fetcher, BASE);
    const victim = await createTestKey(fetcher, BASE, workspace.key, ["tasks:read"]);
    // Each request's rate-limit lease and key lookup cached, so the revokes reach D1 together.
    for (let warm = 0; warm < 3; warm++) await fetcher(`${BASE}/api/v1/api-keys`, { headers: workspace.headers });
    const revokes = await Promise.all(
      Array.from({ length: 5 }, () =>
        fetcher(`${BASE}/api/v1/api-keys/${victim.id}`, { method: "DELETE", headers: workspace.headers }),
      ),
    );
    expect(revokes.map((response) => response.status)).toEqual([200, 200, 200, 200, 200]);
    const answered = await Promise.all(
      revokes.map(async (response) => (await response.json()) as { revoked_at: string }),
    );
    const stored = await env.DB.prepare("SELECT revoked_at FROM api_keys WHERE id = ?")
      .bind(victim.id)
      .first<{ revoked_at: string }>();
    expect(new Set(answered.map((key) => key.revoked_at))).toEqual(new Set([stored?.revoked_at]));
    const entries = await env.DB.prepare(
      "SELECT count(*) AS n FROM audit_logs WHERE workspace_id = ? AND action = 'api_key.revoke' AND resource_id = ?",
    )
      .bind(workspace.id, victim.id)
      .first<{ n: number }>();
    expect(entries?.n).toBe(1);
  });

  it("stop working within 5 s where they were cached when another isolate revoked them", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE);
    const victim = await createTestKey(fetcher, BASE, workspace.key, ["tasks:read"]);
    expect((await fetcher(`${BASE}/api/v1/workspace`, { headers: victim.headers })).status).toBe(200);

    // Another isolate's revocation: the row changes, this isolate's cache is not told.
    await revokeStatement(createDb(env.DB), workspace.id, victim.id, new Date().toISOString()).run();
    const revokedAtMs = Date.now();
    let refusedAfterMs = Number.POSITIVE_INFINITY;
    while (Date.now() - revokedAtMs < 6_000) {
      const response = await fetcher(`${BASE}/api/v1/workspace`, { headers: victim.headers });
      if (response.status === 401) {
        refusedAfterMs = Date.now() - revokedAtMs;
        break;
      }
      await new Promise((wake) => setTimeout(wake, 200));
    }
    expect(refusedAfterMs).toBeGreaterThan(0);
    expect(refusedAfterMs).toBeLessThanOrEqual(5_000);
    expect(CACHE_TTL_MS).toBeLessThan(5_000);
  });
});

describe("bad credentials are 401 problems that say nothing more", () => {
  const NO_CREDENTIALS = "No credentials were sent: send `Authorization: Bearer <api key or JWT>`.";
  const NOT_BEARER = "The Authorization header is not a bearer token: send `Authorization: Bearer <api key or JWT>`.";
  // A caller that sent no token is told how to send one; a token sent is only "invalid".
  const cases: [string, Record<string, string>, string][] = [
    ["no header", {}, NO_CREDENTIALS],
    ["not a bearer", { Authorization: "Basic dXNlcjpwYXNz" }, NOT_BEARER],
    ["empty bearer", { Authorization: "Bearer " }, NOT_BEARER],
    ["key of the wrong form", bearer("mgx_short"), "Invalid credentials."],
    ["unknown key", bearer(`mgx_${"A".repeat(43)}`), "Invalid credentials."],
    ["garbage token", bearer("not-a-token"), "Invalid credentials."],
    ["wrong operator token", bearer("test-admin-token-0123456789abcdeX"), "Invalid credentials."],
  ];
  for (const [name, headers, detail] of cases) {
    it(name, async () => {
      const response = await fetcher(`${BASE}/api/v1/workspace`, {
        headers: { ...headers, "CF-Connecting-IP": `198.51.100.${name.length}` },
      });
      expect(response.status).toBe(401);
      expect(response.headers.get("WWW-Authenticate")).toContain("Bearer");
      expect(await response.json()).toMatchObject({ code: "UNAUTHENTICATED", detail });
    });
  }
});
