import { describe, expect, it } from "vitest";
import { createApp } from "../../src/app.ts";
import { rateLimit } from "../../src/middleware/rate-limit.ts";
import { BASE, fetcher, workspaceWith } from "../support/llm.ts";
import { type Doc, documentedHeaders, openApi, SHARED_HEADERS } from "../support/openapi.ts";
import { bearer, createTestWorkspace, TEST_ADMIN_TOKEN } from "../support/workspaces.ts";

/**
 * The response headers /openapi.json names, against what the server sends: for
 * representative operations, each header the document says a response always
 * carries is there, and each header the middleware sets that is there is one
 * the document names for that response.
 */

/** Checks one real answer against the document's entry for it, and returns the names present. */
async function check(doc: Doc, method: string, path: string, answer: Response): Promise<string[]> {
  const where = `${method.toUpperCase()} ${path} ${answer.status}`;
  const declared = documentedHeaders(doc, method, path, answer.status);
  for (const [name, header] of Object.entries(declared)) {
    if (header.required) expect(answer.headers.get(name), `${where}: ${name} (required)`).not.toBeNull();
  }
  const present = SHARED_HEADERS.filter((name) => answer.headers.has(name));
  for (const name of present) expect(Object.keys(declared), `${where}: ${name} is sent`).toContain(name);
  expect(declared["X-Request-Id"]?.required, where).toBe(true);
  expect(declared["X-API-Version"]?.required, where).toBe(true);
  await answer.body?.cancel();
  return present;
}

describe("the response headers in /openapi.json", () => {
  it("are the ones the server sends, on a list, a create, errors, the operator's routes and a chat completion", async () => {
    const doc = await openApi();
    const workspace = await workspaceWith(null);
    const json = { ...workspace.headers, "Content-Type": "application/json" };
    const cases: [string, string, Promise<Response>, number][] = [
      ["get", "/health", fetcher(`${BASE}/health`), 200],
      ["get", "/api/v1/tasks", fetcher(`${BASE}/api/v1/tasks`, { headers: workspace.headers }), 200],
      [
        "post",
        "/api/v1/tasks",
        fetcher(`${BASE}/api/v1/tasks`, {
          method: "POST",
          headers: json,
          body: JSON.stringify({ title: "Add a CLI flag", type: "code_generation", priority: "high" }),
        }),
        202,
      ],
      ["get", "/api/v1/tasks", fetcher(`${BASE}/api/v1/tasks`), 401],
      ["get", "/api/v1/tasks", fetcher(`${BASE}/api/v1/tasks`, { headers: bearer(TEST_ADMIN_TOKEN) }), 403],
      ["get", "/api/v1/tasks/{id}", fetcher(`${BASE}/api/v1/tasks/task_nope`, { headers: workspace.headers }), 404],
      [
        "post",
        "/api/v1/tasks",
        fetcher(`${BASE}/api/v1/tasks`, { method: "POST", headers: json, body: JSON.stringify({ title: "" }) }),
        422,
      ],
      [
        "get",
        "/api/v1/workspaces/{id}",
        fetcher(`${BASE}/api/v1/workspaces/${workspace.id}`, { headers: bearer(TEST_ADMIN_TOKEN) }),
        200,
      ],
      [
        "get",
        "/api/v1/workspaces/{id}",
        fetcher(`${BASE}/api/v1/workspaces/${workspace.id}`, { headers: workspace.headers }),
        403,
      ],
      [
        "post",
        "/api/v1/llm/chat/completions",
        fetcher(`${BASE}/api/v1/llm/chat/completions`, {
          method: "POST",
          headers: json,
          body: JSON.stringify({ messages: [{ role: "user", content: "Say hi" }], max_tokens: 5 }),
        }),
        200,
      ],
      [
        "post",
        "/api/v1/llm/responses",
        fetcher(`${BASE}/api/v1/llm/responses`, {
          method: "POST",
          headers: json,
          body: JSON.stringify({ input: "Say hi", max_output_tokens: 5 }),
        }),
        200,
      ],
      [
        "post",
        "/api/v1/llm/chat/completions",
        fetcher(`${BASE}/api/v1/llm/chat/completions`, {
          method: "POST",
          headers: { ...workspace.headers, "Content-Type": "text/plain" },
          body: "hi",
        }),
        415,
      ],
    ];
    const seen: Record<string, string[]> = {};
    for (const [method, path, pending, status] of cases) {
      const answer = await pending;
      expect(answer.status, `${method.toUpperCase()} ${path}`).toBe(status);
      seen[`${method.toUpperCase()} ${path} ${status}`] = await check(doc, method, path, answer);
    }
    // What the server sends, as the document says it: counted workspace calls carry the rate limit; the operator's,
    // a 401, a 415 (both refused before counting) and what is outside /api/v1 do not.
    const limited = ["X-Request-Id", "X-API-Version", "RateLimit", "RateLimit-Policy"];
    expect(seen).toEqual({
      "GET /health 200": ["X-Request-Id", "X-API-Version"],
      "GET /api/v1/tasks 200": limited,
      "POST /api/v1/tasks 202": limited,
      "GET /api/v1/tasks 401": ["X-Request-Id", "X-API-Version", "WWW-Authenticate"],
      "GET /api/v1/tasks 403": ["X-Request-Id", "X-API-Version"],
      "GET /api/v1/tasks/{id} 404": limited,
      "POST /api/v1/tasks 422": limited,
      "GET /api/v1/workspaces/{id} 200": ["X-Request-Id", "X-API-Version"],
      "GET /api/v1/workspaces/{id} 403": limited,
      "POST /api/v1/llm/chat/completions 200": limited,
      "POST /api/v1/llm/responses 200": limited,
      "POST /api/v1/llm/chat/completions 415": ["X-Request-Id", "X-API-Version"],
    });
  });

  it("names a submitted task's Location and Idempotent-Replayed, and an audit export's Content-Disposition", async () => {
    const doc = await openApi();
    const workspace = await workspaceWith(null);
    const submit = () =>
      fetcher(`${BASE}/api/v1/tasks`, {
        method: "POST",
        headers: { ...workspace.headers, "Content-Type": "application/json", "Idempotency-Key": "headers-1" },
        body: JSON.stringify({ title: "Add a CLI flag", type: "code_generation" }),
      });
    const declared = documentedHeaders(doc, "post", "/api/v1/tasks", 202);
    expect(declared.Location?.required).toBe(true);
    expect(declared["Idempotent-Replayed"]).toBeDefined();
    const first = await submit();
    const { id } = (await first.json()) as { id: string };
    expect(first.headers.get("Location")).toBe(`/api/v1/tasks/${id}`);
    expect(first.headers.get("Idempotent-Replayed")).toBeNull();
    const repeat = await submit();
    expect(repeat.headers.get("Idempotent-Replayed")).toBe("true");
    await repeat.body?.cancel();
    // A browser reads them only if CORS exposes them.
    const fromBrowser = await fetcher(`${BASE}/api/v1/tasks/${id}`, {
      headers: { ...workspace.headers, Origin: "http://localhost:8787" },
    });
    await fromBrowser.body?.cancel();
    expect((fromBrowser.headers.get("Access-Control-Expose-Headers") ?? "").split(",")).toEqual(
      expect.arrayContaining(["Location", "Idempotent-Replayed"]),
    );
    const exported = await fetcher(`${BASE}/api/v1/audit-logs/export?format=csv`, { headers: workspace.headers });
    expect(exported.status).toBe(200);
    const exportHeaders = documentedHeaders(doc, "get", "/api/v1/audit-logs/export", 200);
    for (const name of ["Content-Disposition", "Cache-Control"]) {
      expect(exportHeaders[name]?.required, name).toBe(true);
      expect(exported.headers.get(name), name).not.toBeNull();
    }
    await exported.body?.cancel();
  });

  it("names Retry-After and the rate limit on a rate limiter's 429, on a task route and an events route", async () => {
    const doc = await openApi();
    for (const path of ["/api/v1/tasks", "/api/v1/events"]) {
      const workspace = await createTestWorkspace(fetcher, BASE, { limits: { requests_per_second: 1, burst: 2 } });
      let refused: Response | undefined;
      for (let tries = 0; tries < 10 && !refused; tries++) {
        const answer = await fetcher(`${BASE}${path}`, { headers: workspace.headers });
        if (answer.status === 429) refused = answer;
        else await answer.body?.cancel();
      }
      expect(refused?.status, path).toBe(429);
      expect(await check(doc, "get", path, refused!)).toEqual([
        "X-Request-Id",
        "X-API-Version",
        "RateLimit",
        "RateLimit-Policy",
        "Retry-After",
      ]);
    }
  });

  it("lists 429 and 503 on every operation the rate limiter guards", async () => {
    // Where the app mounts the rate limiter (`app.use(pattern, rateLimit)`), read from the app itself: it refuses
    // with 429 when a bucket is empty and with 503 when its Durable Object cannot be reached.
    const mounts = createApp()
      .routes.filter((route) => route.handler === rateLimit)
      .map((route) => new RegExp(`^${route.path.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replaceAll("*", ".*")}$`));
    expect(mounts.length).toBeGreaterThan(0);
    const doc = await openApi();
    const missing: string[] = [];
    let guarded = 0;
    for (const [path, operations] of Object.entries(doc.paths as Record<string, Record<string, any>>)) {
      const concrete = path.replace(/\{\w+\}/g, "x");
      if (!mounts.some((mount) => mount.test(concrete))) continue;
      for (const [method, operation] of Object.entries(operations)) {
        guarded++;
        for (const status of ["429", "503"]) {
          if (!operation.responses?.[status]) missing.push(`${method.toUpperCase()} ${path} ${status}`);
        }
      }
    }
    expect(guarded).toBeGreaterThan(30);
    expect(missing).toEqual([]);
  });

  it("declares X-Request-Id and X-API-Version on every response of every operation, and Retry-After on every 429", async () => {
    const doc = await openApi();
    for (const [path, operations] of Object.entries(doc.paths as Record<string, Record<string, any>>)) {
      for (const [method, operation] of Object.entries(operations)) {
        for (const status of Object.keys(operation.responses ?? {})) {
          const headers = documentedHeaders(doc, method, path, Number(status));
          const where = `${method.toUpperCase()} ${path} ${status}`;
          expect(headers["X-Request-Id"]?.required, where).toBe(true);
          expect(headers["X-API-Version"]?.required, where).toBe(true);
          if (status === "429") expect(headers["Retry-After"]?.required, where).toBe(true);
          if (status === "401") expect(headers, where).not.toHaveProperty("RateLimit");
          if (!path.startsWith("/api/v1/")) expect(headers, where).not.toHaveProperty("RateLimit");
        }
      }
    }
  });
});
