import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { bearer, createTestKey, createTestWorkspace, TEST_ADMIN_TOKEN } from "../support/workspaces.ts";

const BASE = "http://edge.test";
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));

function send(path: string, token: string | null, method = "GET", body?: unknown) {
  const headers: Record<string, string> = token ? bearer(token) : {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return fetcher(`${BASE}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

describe("operator workspace routes", () => {
  it("creates a workspace on a plan with its first key, shown once", async () => {
    const response = await send("/api/v1/workspaces", TEST_ADMIN_TOKEN, "POST", {
      name: "Acme",
      plan: "team",
      limits: { burst: 7 },
    });
    expect(response.status).toBe(201);
    const body = (await response.json()) as any;
    expect(body.workspace).toMatchObject({
      id: expect.stringMatching(/^ws_[0-9A-Z]{26}$/),
      name: "Acme",
      plan: "team",
      limits: { requests_per_second: 50, burst: 7, max_running_tasks: 10, max_pending_tasks: 1000 },
    });
    expect(body.api_key).toMatchObject({ id: expect.stringMatching(/^key_/), scopes: ["admin"], revoked_at: null });
    expect(body.api_key.key).toMatch(/^mgx_[A-Za-z0-9_-]{43}$/);
    expect(body.api_key.prefix).toBe(body.api_key.key.slice(0, 12));

    // The key works; listing never shows the secret again.
    const list = await send("/api/v1/api-keys", body.api_key.key);
    expect(list.status).toBe(200);
    const keys = (await list.json()) as any;
    expect(keys.data).toHaveLength(1);
    expect(JSON.stringify(keys)).not.toContain(body.api_key.key);

    // A first key asked to expire does.
    const expiresAt = "2031-06-30T12:00:00.000Z";
    const expiring = await send("/api/v1/workspaces", TEST_ADMIN_TOKEN, "POST", {
      name: "Acme trial",
      plan: "team",
      api_key: { name: "Trial key", scopes: ["tasks:read"], expires_at: expiresAt },
    });
    expect(expiring.status).toBe(201);
    expect(((await expiring.json()) as any).api_key).toMatchObject({ name: "Trial key", expires_at: expiresAt });
  });

  it("reads and changes any workspace; a new plan resets limits before overrides", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE, { plan: "free" });
    const read = await send(`/api/v1/workspaces/${workspace.id}`, TEST_ADMIN_TOKEN);
    expect(read.status).toBe(200);
    expect(await read.json()).toMatchObject({ plan: "free", queue: { pending: 0, queued: 0, running: 0 } });

    const patched = await send(`/api/v1/workspaces/${workspace.id}`, TEST_ADMIN_TOKEN, "PATCH", {
      plan: "team",
      limits: { max_running_tasks: 3 },
    });
    expect(patched.status).toBe(200);
    expect(await patched.json()).toMatchObject({
      plan: "team",
      limits: { requests_per_second: 50, burst: 100, max_running_tasks: 3, max_pending_tasks: 1000 },
    });
  });

  it("refuses workspace keys on operator routes and the operator on workspace routes", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE);
    const notOperator = await send("/api/v1/workspaces", workspace.key, "POST", { name: "x" });
    expect(notOperator.status).toBe(403);
    expect(((await notOperator.json()) as { detail: string }).detail).toBe(
      "This route is for the operator, whose bearer token is the deployment's ADMIN_TOKEN; a workspace key reads and changes its own workspace at /api/v1/workspace.",
    );
    expect((await send(`/api/v1/workspaces/${workspace.id}`, workspace.key)).status).toBe(403);
    expect((await send("/api/v1/workspace", TEST_ADMIN_TOKEN)).status).toBe(403);
  });

  it("answers 404 for an unknown workspace and 422 for bad fields", async () => {
    expect((await send("/api/v1/workspaces/ws_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3", TEST_ADMIN_TOKEN)).status).toBe(404);
    const invalid = await send("/api/v1/workspaces", TEST_ADMIN_TOKEN, "POST", { name: "", plan: "gold", extra: 1 });
    expect(invalid.status).toBe(422);
    const body = (await invalid.json()) as { errors: { path: string }[] };
    expect(body.errors.map((error) => error.path).sort()).toEqual(["extra", "name", "plan"]);
  });
});

describe("rate limits near zero", () => {
  it("are refused (422) below one request per 1,000 s, rather than answer 429s with no usable Retry-After", async () => {
    // Found by fuzz: 5e-324 was taken, and every 429 after said "retry after Infinity s." (retry_after_seconds null).
    const workspace = await createTestWorkspace(fetcher, BASE, { limits: { requests_per_second: 5, burst: 5 } });
    for (const limits of [{ requests_per_second: 5e-324 }, { key_requests_per_second: 1e-300 }]) {
      const response = await send(`/api/v1/workspaces/${workspace.id}`, TEST_ADMIN_TOKEN, "PATCH", { limits });
      expect(response.status).toBe(422);
      expect(response.headers.get("Content-Type")).toBe("application/problem+json");
      const body = (await response.json()) as { errors: { path: string }[] };
      expect(body.errors.map((error) => error.path)).toEqual([`limits.${Object.keys(limits)[0]}`]);
    }
    const created = await send("/api/v1/workspaces", TEST_ADMIN_TOKEN, "POST", {
      name: "Slow",
      limits: { requests_per_second: 0.0009 },
    });
    expect(created.status).toBe(422);
    const slowest = await send(`/api/v1/workspaces/${workspace.id}`, TEST_ADMIN_TOKEN, "PATCH", {
      limits: { requests_per_second: 0.001, key_requests_per_second: 0.001 },
    });
    expect(slowest.status).toBe(200);
  });
});

describe("names with a lone surrogate", () => {
  it("are refused (422) by the operator's and the workspace's routes, rather than stored as U+FFFD", async () => {
    // Found by fuzz: the 2xx answered "w\ud800", GET then "w\ufffd".
    const expectRefused = async (response: Response) => {
      expect(response.status).toBe(422);
      expect(response.headers.get("Content-Type")).toBe("application/problem+json");
      expect(((await response.json()) as { errors: unknown }).errors).toEqual([
        {
          path: "name",
          message:
            "must be well-formed Unicode: a lone surrogate (such as \\ud800) is no character, and would be stored as U+FFFD",
        },
      ]);
    };
    await expectRefused(await send("/api/v1/workspaces", TEST_ADMIN_TOKEN, "POST", { name: "Acme \ud800" }));
    const workspace = await createTestWorkspace(fetcher, BASE, { name: "Well formed" });
    await expectRefused(
      await send(`/api/v1/workspaces/${workspace.id}`, TEST_ADMIN_TOKEN, "PATCH", { name: "\udfff" }),
    );
    await expectRefused(await send("/api/v1/workspace", workspace.key, "PATCH", { name: "w\ud800" }));
    await expectRefused(await send("/api/v1/api-keys", workspace.key, "POST", { name: "k\ud800" }));
    const read = await send("/api/v1/workspace", workspace.key);
    expect(((await read.json()) as { name: string }).name).toBe("Well formed");
  });
});

describe("the caller's workspace", () => {
  it("shows limits, budgets and queue depth, and lets an admin key change name and LLM routing", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE, { plan: "team" });
    const read = await send("/api/v1/workspace", workspace.key);
    expect(read.status).toBe(200);
    expect(await read.json()).toMatchObject({
      id: workspace.id,
      budgets: { daily_tokens: null, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null },
      queue: { pending: 0, queued: 0, running: 0 },
      llm: null,
    });

    const llm = { strategy: "fallback", chain: [{ provider: "openai", model: "gpt-4o-mini" }] };
    const patched = await send("/api/v1/workspace", workspace.key, "PATCH", { name: "Renamed", llm });
    expect(patched.status).toBe(200);
    expect(await patched.json()).toMatchObject({ name: "Renamed", llm });

    // A provider the router does not know could never serve a call: refused, naming those it knows.
    const unknown = await send("/api/v1/workspace", workspace.key, "PATCH", {
      llm: { strategy: "fallback", chain: [{ provider: "openia", model: "gpt-4o-mini" }] },
    });
    expect(unknown.status).toBe(422);
    const problem = (await unknown.json()) as { errors: { path: string; message: string }[] };
    expect(problem.errors).toEqual([{ path: "llm.chain.0.provider", message: expect.stringContaining('"openai"') }]);
    expect(problem.errors[0].message).toContain('"anthropic"');
    expect(((await (await send("/api/v1/workspace", workspace.key)).json()) as { llm: unknown }).llm).toEqual(llm);

    // Plan and limits are the operator's, budgets have their own route: each refusal says where it is changed.
    const refusal = async (body: Record<string, unknown>) => {
      const response = await send("/api/v1/workspace", workspace.key, "PATCH", body);
      expect(response.status).toBe(422);
      return ((await response.json()) as { errors: unknown }).errors;
    };
    const operators = "is the operator's to change: PATCH /api/v1/workspaces/{id} with the ADMIN_TOKEN bearer";
    expect(await refusal({ plan: "enterprise" })).toEqual([{ path: "plan", message: operators }]);
    expect(await refusal({ limits: { burst: 5 } })).toEqual([{ path: "limits", message: operators }]);
    expect(await refusal({ budgets: { daily_tokens: 5 } })).toEqual([
      { path: "budgets", message: "is set with PUT /api/v1/budgets" },
    ]);
    // A misspelt field is still one that does not exist.
    expect(await refusal({ nmae: "x" })).toEqual([
      { path: "nmae", message: "is not a field of this request; remove it or check its spelling" },
    ]);
  });

  it("refuses a chain entry with a blank model or a misspelt field, rather than store what can never route as meant", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE, { plan: "team" });
    const patch = (entry: Record<string, unknown>) =>
      send("/api/v1/workspace", workspace.key, "PATCH", { llm: { strategy: "weighted", chain: [entry] } });
    // Sent to the provider as "  ", no call could succeed.
    const blank = await patch({ provider: "openai", model: "  " });
    expect(blank.status).toBe(422);
    expect(((await blank.json()) as { errors: { path: string }[] }).errors).toEqual([
      { path: "llm.chain.0.model", message: expect.any(String) },
    ]);
    // "wieght" was dropped without a word, and every entry weighed the same.
    const misspelt = await patch({ provider: "openai", model: "gpt-4o-mini", wieght: 3 });
    expect(misspelt.status).toBe(422);
    expect(((await misspelt.json()) as { errors: { path: string; message: string }[] }).errors).toEqual([
      { path: "llm.chain.0.wieght", message: "is not a field of this request; remove it or check its spelling" },
    ]);
    expect(((await (await send("/api/v1/workspace", workspace.key)).json()) as { llm: unknown }).llm).toBeNull();
    // Spaces around a model name are not part of it.
    const padded = await patch({ provider: "openai", model: " gpt-4o-mini ", weight: 2 });
    expect(padded.status).toBe(200);
    expect(((await padded.json()) as { llm: unknown }).llm).toEqual({
      strategy: "weighted",
      chain: [{ provider: "openai", model: "gpt-4o-mini", weight: 2 }],
    });
  });

  it("needs the admin scope to change settings or manage keys", async () => {
    const workspace = await createTestWorkspace(fetcher, BASE);
    const reader = await createTestKey(fetcher, BASE, workspace.key, ["tasks:read"]);
    expect((await send("/api/v1/workspace", reader.key)).status).toBe(200);
    const forbidden = await send("/api/v1/workspace", reader.key, "PATCH", { name: "nope" });
    expect(forbidden.status).toBe(403);
    expect(await forbidden.json()).toMatchObject({ code: "FORBIDDEN", required_scope: "admin" });
    expect((await send("/api/v1/api-keys", reader.key)).status).toBe(403);
  });
});
