import { createExecutionContext } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app.ts";
import { createTestWorkspace } from "../support/workspaces.ts";

const BASE = "http://edge.test";

function call(path: string, init?: RequestInit) {
  return exports.default.fetch(new Request(`${BASE}${path}`, init));
}

async function expectProblem(response: Response, status: number, code: string) {
  expect(response.status).toBe(status);
  expect(response.headers.get("Content-Type")).toBe("application/problem+json");
  const body = (await response.json()) as Record<string, unknown>;
  expect(body).toMatchObject({ status, code, type: expect.stringMatching(/^\/problems\//) });
  expect(body.request_id).toBe(response.headers.get("X-Request-Id"));
  expect(typeof body.title).toBe("string");
  expect(typeof body.detail).toBe("string");
  return body;
}

describe("conventions every response follows", () => {
  it("GET /health answers 200 with version headers and a request id", async () => {
    const response = await call("/health");
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ status: "ok" });
    expect(response.headers.get("X-API-Version")).toBe("1.0");
    expect(response.headers.get("X-Request-Id")).toMatch(/^req_[0-9A-Z]{26}$/);
    expect(response.headers.get("X-Content-Type-Options")).toBe("nosniff");
    expect(response.headers.get("Content-Security-Policy")).toContain("frame-ancestors 'none'");
    expect(response.headers.get("X-Frame-Options")).toBe("DENY");
  });

  it("echoes a sane caller request id and replaces an unsafe one", async () => {
    const sane = await call("/health", { headers: { "X-Request-Id": "client-abc-12345" } });
    expect(sane.headers.get("X-Request-Id")).toBe("client-abc-12345");
    const unsafe = await call("/health", { headers: { "X-Request-Id": "bad id\twith spaces" } });
    expect(unsafe.headers.get("X-Request-Id")).toMatch(/^req_/);
  });

  it("GET /ready checks D1, a Durable Object, the queue and R2", async () => {
    const response = await call("/ready");
    expect(response.status).toBe(200);
    const body = (await response.json()) as { status: string; checks: Record<string, { ok: boolean }> };
    expect(body.status).toBe("ready");
    expect(Object.keys(body.checks).sort()).toEqual([
      "d1",
      "durable_objects",
      "llm_attempt_timeout",
      "llm_default_chain",
      "queue",
      "r2",
    ]);
    for (const check of Object.values(body.checks)) expect(check.ok).toBe(true);
  });
});

describe("GET /ready and LLM_DEFAULT_CHAIN", () => {
  const ready = (vars: Record<string, string>) =>
    createApp().fetch(new Request(`${BASE}/ready`), { ...env, ...vars }, createExecutionContext());

  it("is not ready when LLM_DEFAULT_CHAIN names no provider configured here, naming the settings they need", async () => {
    // Unchecked, production's chain without its secrets put was ready, and every call of a workspace without a
    // chain of its own refused as the caller's fault.
    const response = await ready({ LLM_DEFAULT_CHAIN: "openai:gpt-4o-mini,anthropic:claude-3-5-haiku-latest" });
    const body = await expectProblem(response, 503, "DEPENDENCY_UNAVAILABLE");
    expect(body.detail).toBe("Not ready: llm_default_chain failed.");
    const check = (body.checks as Record<string, { ok: boolean; error?: string }>).llm_default_chain;
    expect(check.ok).toBe(false);
    expect(check.error).toBe(
      "LLM_DEFAULT_CHAIN names providers not configured here: openai (OPENAI_API_KEY or OPENAI_BASE_URL), " +
        "anthropic (ANTHROPIC_API_KEY); a call without a workspace chain has no provider",
    );
  });

  it("is ready, with a warning, when it names one configured here and others that are not", async () => {
    const response = await ready({
      LLM_DEFAULT_CHAIN: "openai:gpt-4o-mini,anthropic:claude-3-5-haiku-latest,workers-ai",
      OPENAI_API_KEY: "sk-test",
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { checks: Record<string, { ok: boolean; warning?: string }> };
    expect(body.checks.llm_default_chain).toEqual({
      ok: true,
      latency_ms: 0,
      warning:
        "LLM_DEFAULT_CHAIN names providers not configured here: anthropic (ANTHROPIC_API_KEY), " +
        "workers-ai (the AI binding); skipped",
    });
    const plain = (await (await ready({})).json()) as { checks: Record<string, unknown> };
    expect(plain.checks.llm_default_chain).toEqual({ ok: true, latency_ms: 0 });
  });

  it("warns of a model the price table lacks, a typo or one charged at the unknown-model rate", async () => {
    // As a workspace's chain naming one is logged when it is set; LLM_DEFAULT_CHAIN's was told nowhere.
    const response = await ready({
      LLM_DEFAULT_CHAIN: "openai:gpt-4o-mnii,openai:gpt-4o-mini,local:qwen2.5,anthropic:claude-typo",
      OPENAI_API_KEY: "sk-test",
      LOCAL_LLM_BASE_URL: "http://127.0.0.1:11434",
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { checks: Record<string, { ok: boolean; warning?: string }> };
    expect(body.checks.llm_default_chain.warning).toBe(
      "LLM_DEFAULT_CHAIN names providers not configured here: anthropic (ANTHROPIC_API_KEY); skipped; " +
        "LLM_DEFAULT_CHAIN names models the price table lacks: openai:gpt-4o-mnii; charged at the unknown-model rate",
    );
  });

  it("warns of an LLM_ATTEMPT_TIMEOUT_MS under a second, as one given in seconds is", async () => {
    // `60` meant as a minute timed out nearly every call, each attempt charged, while /ready said ready.
    const response = await ready({ LLM_ATTEMPT_TIMEOUT_MS: "60" });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { checks: Record<string, { ok: boolean; warning?: string }> };
    expect(body.checks.llm_attempt_timeout).toEqual({
      ok: true,
      latency_ms: 0,
      warning:
        "LLM_ATTEMPT_TIMEOUT_MS is 60 ms (milliseconds, not seconds): most calls will time out, each attempt charged its prompt",
    });
    const plain = (await (await ready({ LLM_ATTEMPT_TIMEOUT_MS: "1000" })).json()) as {
      checks: Record<string, unknown>;
    };
    expect(plain.checks.llm_attempt_timeout).toEqual({ ok: true, latency_ms: 0 });
  });

  it("warns, in production, of a chain with simulated, whose answers are placeholders", async () => {
    // Unchecked, a production deployment left with the default chain (or `openai,simulated` as a last resort)
    // answered its callers 200 with placeholder text, and /ready said nothing of it.
    const production = { ENVIRONMENT: "production", ENABLE_DEBUG_ROUTES: "false" };
    for (const chain of [undefined, "openai:gpt-4o-mini,simulated"]) {
      const vars = { ...production, OPENAI_API_KEY: "sk-test", ...(chain ? { LLM_DEFAULT_CHAIN: chain } : {}) };
      const lines: string[] = [];
      vi.spyOn(console, "log").mockImplementation((line: string) => lines.push(line));
      const response = await ready(vars);
      vi.restoreAllMocks();
      expect(response.status).toBe(200);
      const body = (await response.json()) as { checks: Record<string, { ok: boolean; warning?: string }> };
      expect(body.checks.llm_default_chain).toEqual({
        ok: true,
        latency_ms: 0,
        warning: "LLM_DEFAULT_CHAIN names simulated (its default when unset): the calls it serves get placeholders",
      });
      const logged = lines.map((line) => JSON.parse(line)).find((line) => line.msg === "readiness check warned");
      expect(logged?.checks.llm_default_chain.warning).toContain("simulated");
    }
    const staging = (await (await ready({ ENVIRONMENT: "staging", ENABLE_DEBUG_ROUTES: "false" })).json()) as {
      checks: Record<string, unknown>;
    };
    expect(staging.checks.llm_default_chain).toEqual({ ok: true, latency_ms: 0 });
  });
});

describe("bad input is a 4xx problem, never a 5xx", () => {
  it("unknown route → 404", async () => {
    const body = await expectProblem(await call("/nope"), 404, "NOT_FOUND");
    expect(body.detail).toContain("/nope");
  });

  it("wrong method → 405 with Allow", async () => {
    const response = await call("/health", { method: "DELETE" });
    await expectProblem(response, 405, "METHOD_NOT_ALLOWED");
    expect(response.headers.get("Allow")).toBe("GET, HEAD, OPTIONS");
  });

  it("a trailing slash → 404 naming the route meant, not a 405 that allows the method used", async () => {
    const body = await expectProblem(await call("/health/"), 404, "NOT_FOUND");
    expect(body).toMatchObject({
      detail: "No route matches GET /health/; did you mean /health?",
      did_you_mean: "/health",
    });
    const wrongMethod = await expectProblem(await call("/health/", { method: "DELETE" }), 404, "NOT_FOUND");
    expect(wrongMethod.did_you_mean).toBeUndefined();
    const workspace = await createTestWorkspace((url, init) => exports.default.fetch(new Request(url, init)), BASE);
    const tasks = await expectProblem(await call("/api/v1/tasks/", { headers: workspace.headers }), 404, "NOT_FOUND");
    expect(tasks.did_you_mean).toBe("/api/v1/tasks");
  });

  it("an OpenAI SDK whose baseURL misses /api/v1/llm is told the route and the baseURL it meant", async () => {
    const workspace = await createTestWorkspace((url, init) => exports.default.fetch(new Request(url, init)), BASE);
    const chat = { model: "auto", messages: [{ role: "user", content: "hi" }] };
    for (const path of ["/v1/chat/completions", "/api/v1/chat/completions", "/api/v1/llm/v1/chat/completions"]) {
      const response = await call(path, {
        method: "POST",
        headers: { ...workspace.headers, "Content-Type": "application/json" },
        body: JSON.stringify(chat),
      });
      expect(await expectProblem(response, 404, "NOT_FOUND"), path).toMatchObject({
        did_you_mean: "/api/v1/llm/chat/completions",
        detail: `No route matches POST ${path}; did you mean /api/v1/llm/chat/completions? (an OpenAI SDK's baseURL is /api/v1/llm)`,
        // What OpenAI's SDKs make their error's message of; without it, the whole body.
        error: { message: expect.stringMatching(/^No route matches POST /), type: "invalid_request_error" },
      });
    }
    const models = await expectProblem(await call("/api/v1/models", { headers: workspace.headers }), 404, "NOT_FOUND");
    expect(models.did_you_mean).toBe("/api/v1/llm/models");
    const responses = await call("/v1/responses", {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ model: "auto", input: "hi" }),
    });
    expect((await expectProblem(responses, 404, "NOT_FOUND")).did_you_mean).toBe("/api/v1/llm/responses");
    // The route itself with a trailing slash is still the trailing slash's 404.
    const slash = await call("/api/v1/llm/chat/completions/", {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify(chat),
    });
    expect((await expectProblem(slash, 404, "NOT_FOUND")).did_you_mean).toBe("/api/v1/llm/chat/completions");
  });

  it("malformed JSON → 400 saying what the parser found and where, or that the body is empty", async () => {
    const response = await call("/__debug/echo", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: '{"message": "unterminated',
    });
    const unterminated = await expectProblem(response, 400, "MALFORMED_JSON");
    expect(unterminated.detail).toMatch(/^The body is not valid JSON: .*JSON.*\.$/);
    const comma = await call("/__debug/echo", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: '{"message": "hi",}',
    });
    expect((await expectProblem(comma, 400, "MALFORMED_JSON")).detail).toMatch(
      /Expected double-quoted property name in JSON at position 17/,
    );
    const empty = await call("/__debug/echo", { method: "POST", headers: { "Content-Type": "application/json" } });
    expect((await expectProblem(empty, 400, "MALFORMED_JSON")).detail).toBe("The body is empty; send a JSON object.");
  });

  it("an operation that reads no body refuses one that is not JSON too, before acting; an empty or JSON one passes", async () => {
    const workspace = await createTestWorkspace((url, init) => exports.default.fetch(new Request(url, init)), BASE, {
      scopes: ["admin"],
    });
    const json = { ...workspace.headers, "Content-Type": "application/json" };
    const created = await call("/api/v1/api-keys", {
      method: "POST",
      headers: json,
      body: JSON.stringify({ name: "kept", scopes: ["tasks:read"] }),
    });
    const key = (await created.json()) as { id: string; key: string };
    const revoke = (body?: string) =>
      call(`/api/v1/api-keys/${key.id}`, {
        method: "DELETE",
        headers: body === undefined ? workspace.headers : json,
        body,
      });

    const malformed = await expectProblem(await revoke("{"), 400, "MALFORMED_JSON");
    expect(malformed.detail).toMatch(/^The body is not valid JSON: .*JSON.*\.$/);
    // Refused before acting: the key still works.
    expect((await call("/api/v1/whoami", { headers: { Authorization: `Bearer ${key.key}` } })).status).toBe(200);
    const tickets = await call("/api/v1/events/tickets", { method: "POST", headers: json, body: "not json" });
    await expectProblem(tickets, 400, "MALFORMED_JSON");
    expect((await call("/api/v1/events/tickets", { method: "POST", headers: json, body: "{}" })).status).toBe(201);
    expect((await call("/api/v1/events/tickets", { method: "POST", headers: workspace.headers })).status).toBe(201);
    expect((await revoke("  ")).status).toBe(200);
  });

  it("under wrangler dev without ADMIN_TOKEN, a token of no known form says no token is the operator's", async () => {
    const operatorCall = (vars: Record<string, string>) =>
      createApp().fetch(
        new Request(`${BASE}/api/v1/workspaces`, {
          method: "POST",
          headers: {
            Authorization: "Bearer change-me-local-admin-token",
            "Content-Type": "application/json",
            "CF-Connecting-IP": "198.51.100.201",
          },
          body: JSON.stringify({ name: "Mine" }),
        }),
        { ...env, ...vars },
        createExecutionContext(),
      );
    // The README's operator step before `cp .dev.vars.example .dev.vars`: it said only "Invalid credentials.".
    const local = await expectProblem(
      await operatorCall({ ENVIRONMENT: "development", ADMIN_TOKEN: "" }),
      401,
      "UNAUTHENTICATED",
    );
    expect(local.detail).toBe(
      "Invalid credentials: this is no workspace key or JWT, and no ADMIN_TOKEN is set here, so no token is the operator's (locally: cp .dev.vars.example .dev.vars, then restart npm run dev).",
    );
    // Elsewhere a refused token is told nothing more.
    const staging = await expectProblem(
      await operatorCall({ ENVIRONMENT: "staging", ADMIN_TOKEN: "", ENABLE_DEBUG_ROUTES: "false" }),
      401,
      "UNAUTHENTICATED",
    );
    expect(staging.detail).toBe("Invalid credentials.");
  });

  it("wrong content type → 415", async () => {
    const response = await call("/__debug/echo", {
      method: "POST",
      headers: { "Content-Type": "text/plain" },
      body: "message=hi",
    });
    const body = await expectProblem(response, 415, "UNSUPPORTED_MEDIA_TYPE");
    expect(body.detail).toContain("text/plain");
  });

  it("oversized body → 413, declared or streamed", async () => {
    const big = JSON.stringify({ message: "x".repeat(1024 * 1024 + 10) });
    const declared = await call("/__debug/echo", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: big,
    });
    await expectProblem(declared, 413, "PAYLOAD_TOO_LARGE");

    const bytes = new TextEncoder().encode(big);
    const streamed = await call("/__debug/echo", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Transfer-Encoding": "chunked" },
      body: new ReadableStream({
        start(controller) {
          for (let offset = 0; offset < bytes.length; offset += 64 * 1024) {
            controller.enqueue(bytes.slice(offset, offset + 64 * 1024));
          }
          controller.close();
        },
      }),
      // @ts-expect-error duplex is required by the fetch spec for streamed bodies
      duplex: "half",
    });
    await expectProblem(streamed, 413, "PAYLOAD_TOO_LARGE");
  });

  it("invalid fields → 422 with field errors", async () => {
    const response = await call("/__debug/echo", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ message: "", count: -1.5 }),
    });
    const body = await expectProblem(response, 422, "VALIDATION_FAILED");
    const paths = (body.errors as { path: string }[]).map((error) => error.path).sort();
    expect(paths).toEqual(["count", "message"]);
  });

  it("a field left out says it is required (an enum with its options), each unknown field is named, a bad number shown", async () => {
    const workspace = await createTestWorkspace((url, init) => exports.default.fetch(new Request(url, init)), BASE);
    const response = await call("/api/v1/tasks", {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ titel: "Hello", colour: "red", agent_config: { max_steps: 2 } }),
    });
    const body = await expectProblem(response, 422, "VALIDATION_FAILED");
    expect(body.errors).toEqual([
      { path: "title", message: "is required (expected string)" },
      {
        path: "type",
        message: 'is required (one of "code_generation", "refactoring", "testing", "documentation")',
      },
      { path: "titel", message: "is not a field of this request; remove it or check its spelling" },
      { path: "colour", message: "is not a field of this request; remove it or check its spelling" },
    ]);
    const wrong = await call("/api/v1/tasks", {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ title: "Hello", type: "docs" }),
    });
    expect((await expectProblem(wrong, 422, "VALIDATION_FAILED")).errors).toEqual([
      { path: "type", message: expect.stringMatching(/^Invalid option: expected one of/) },
    ]);
    // A query number that is not one: zod said "expected number, received NaN".
    const notANumber = await call("/api/v1/tasks?limit=ten", { headers: workspace.headers });
    expect((await expectProblem(notANumber, 422, "VALIDATION_FAILED")).errors).toEqual([
      { path: "limit", message: 'must be a number, not "ten"' },
    ]);
    // The part of the request at fault is named as a caller knows it: "param" was Hono's word.
    const longId = await call(`/api/v1/tasks/task_${"X".repeat(80)}`, { headers: workspace.headers });
    expect(await expectProblem(longId, 422, "VALIDATION_FAILED")).toMatchObject({
      detail: "The request path is invalid.",
      errors: [{ path: "id", message: expect.any(String) }],
    });
    const longKey = await call("/api/v1/tasks", {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json", "Idempotency-Key": "k".repeat(300) },
      body: JSON.stringify({ title: "Hello", type: "testing" }),
    });
    expect((await expectProblem(longKey, 422, "VALIDATION_FAILED")).detail).toBe("The request header is invalid.");
    // A query parameter the route does not take is refused as an unknown body field is: `state` for `status`
    // was dropped, and every task answered as if filtered.
    const misspelt = await call("/api/v1/tasks?state=failed&limit=5", { headers: workspace.headers });
    expect((await expectProblem(misspelt, 422, "VALIDATION_FAILED")).errors).toEqual([
      { path: "state", message: "is not a parameter of this route; remove it or check its spelling" },
    ]);
    expect((await call("/api/v1/tasks?status=failed&limit=5", { headers: workspace.headers })).status).toBe(200);
    // So is one on a route that takes none: `?limit=1` answered every model as if paged.
    for (const [path, method] of [
      ["/api/v1/llm/models?limit=1", "GET"],
      ["/api/v1/llm/models/simulated:sim-1?verbose=1", "GET"],
      ["/api/v1/budgets?foo=1", "GET"],
      [`/api/v1/tasks/task_${"0".repeat(26)}?expand=runs`, "GET"],
      ["/api/v1/whoami?x=", "GET"],
    ]) {
      const refused = await call(path, { method, headers: workspace.headers });
      const param = path.split("?")[1].split("=")[0];
      expect((await expectProblem(refused, 422, "VALIDATION_FAILED")).errors, path).toEqual([
        { path: param, message: "is not a parameter of this route; remove it or check its spelling" },
      ]);
    }
    const chat = await call("/api/v1/llm/chat/completions?api-version=2024-06-01", {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: "hi" }] }),
    });
    expect((await expectProblem(chat, 422, "VALIDATION_FAILED")).error).toMatchObject({ param: "api-version" });
    // Outside /api/v1 a probe's cache-buster is no parameter anyone reads.
    expect((await call("/health?t=1")).status).toBe(200);
    // A date-time that is not one: zod said only "Invalid ISO datetime".
    const notATime = await call("/api/v1/audit-logs?from=2026-11-27", { headers: workspace.headers });
    expect((await expectProblem(notATime, 422, "VALIDATION_FAILED")).errors).toEqual([
      { path: "from", message: 'must be an ISO 8601 date-time, such as 2026-01-31T00:00:00Z; got "2026-11-27"' },
    ]);
    // A parameter repeated (`?status=a&status=b`, as some clients write a list) reached zod as an array.
    const repeated = await call("/api/v1/tasks?status=queued&status=running", { headers: workspace.headers });
    expect((await expectProblem(repeated, 422, "VALIDATION_FAILED")).errors).toEqual([
      {
        path: "status",
        message: "is given 2 times; give it once (a parameter that takes a list takes it comma-separated: a,b)",
      },
    ]);
  });

  it("a valid body passes every check", async () => {
    const response = await call("/__debug/echo", {
      method: "POST",
      headers: { "Content-Type": "application/json; charset=utf-8" },
      body: JSON.stringify({ message: "hello", count: 2 }),
    });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ echoed: { message: "hello", count: 2 } });
  });

  it("an unexpected error → 500 problem that hides the cause", async () => {
    const response = await call("/__debug/error");
    const body = await expectProblem(response, 500, "INTERNAL");
    expect(JSON.stringify(body)).not.toContain("Deliberate failure");
  });

  it("the root tells a visitor where the reference, the OpenAPI document and health are, without credentials", async () => {
    const response = await call("/");
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      name: "MGX-AI Edge",
      api_version: "1.0",
      docs: "/docs",
      openapi: "/openapi.json",
      health: "/health",
      ready: "/ready",
    });
  });

  it("problem types resolve", async () => {
    const response = await call("/problems/payload-too-large");
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ code: "PAYLOAD_TOO_LARGE", status: 413 });
    await expectProblem(await call("/problems/nonsense"), 404, "NOT_FOUND");
  });
});

describe("CORS", () => {
  it("allows listed origins only", async () => {
    const allowed = await call("/health", { headers: { Origin: "http://localhost:8787" } });
    expect(allowed.headers.get("Access-Control-Allow-Origin")).toBe("http://localhost:8787");
    expect(allowed.headers.get("Access-Control-Expose-Headers")).toContain("X-Request-Id");
    expect(allowed.headers.get("Access-Control-Expose-Headers")).toContain("X-Should-Retry");
    // A browser resuming an artifact download reads which part it got, and may ask for one.
    expect(allowed.headers.get("Access-Control-Expose-Headers")).toContain("Content-Range");
    const preflight = await call("/api/v1/artifacts/art_x/content", {
      method: "OPTIONS",
      headers: {
        Origin: "http://localhost:8787",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, range, if-range, if-none-match",
      },
    });
    expect(preflight.headers.get("Access-Control-Allow-Headers")).toMatch(/Range.*If-Range.*If-None-Match/);
    // OpenAI's SDK in a browser (dangerouslyAllowBrowser), against the OpenAI-compatible endpoint.
    const sdkHeaders = [
      "x-stainless-arch",
      "x-stainless-lang",
      "x-stainless-os",
      "x-stainless-package-version",
      "x-stainless-retry-count",
      "x-stainless-runtime",
      "x-stainless-runtime-version",
      "x-stainless-timeout",
    ];
    const sdkPreflight = await call("/api/v1/llm/chat/completions", {
      method: "OPTIONS",
      headers: {
        Origin: "http://localhost:8787",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": ["authorization", "content-type", ...sdkHeaders].join(", "),
      },
    });
    const allowedHeaders = (sdkPreflight.headers.get("Access-Control-Allow-Headers") ?? "")
      .toLowerCase()
      .split(/\s*,\s*/);
    for (const header of sdkHeaders) expect(allowedHeaders).toContain(header);
    const other = await call("/health", { headers: { Origin: "https://evil.example" } });
    expect(other.headers.get("Access-Control-Allow-Origin")).toBeNull();
    // No Origin: not a CORS request. No Access-Control-* headers, but caches still learn the answer varies by Origin.
    const plain = await call("/health");
    expect([...plain.headers.keys()].filter((name) => name.startsWith("access-control-"))).toEqual([]);
    expect(plain.headers.get("Vary")).toBe("Origin");
    expect(allowed.headers.get("Vary")).toBe("Origin");
  });

  it("answers preflight for listed origins", async () => {
    const response = await call("/__debug/echo", {
      method: "OPTIONS",
      headers: {
        Origin: "http://127.0.0.1:8787",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization",
      },
    });
    expect(response.status).toBe(204);
    expect(response.headers.get("Access-Control-Allow-Origin")).toBe("http://127.0.0.1:8787");
  });
});

describe("OpenAPI document and reference page", () => {
  it("serves an OpenAPI 3.1 document generated from the routes", async () => {
    const response = await call("/openapi.json");
    expect(response.status).toBe(200);
    const doc = (await response.json()) as {
      openapi: string;
      info: { description: string };
      paths: Record<string, unknown>;
      components: any;
    };
    expect(doc.openapi).toBe("3.1.0");
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(["/health", "/ready", "/problems/{slug}"]));
    expect(Object.keys(doc.paths).some((path) => path.startsWith("/__debug"))).toBe(false);
    expect(doc.components.schemas.Problem).toBeDefined();
    // The reference page shows info.description first: it tells a newcomer how to authenticate.
    expect(doc.info.description).toContain("Authenticate with `Authorization: Bearer <token>`: a workspace API key");
  });

  it("serves the reference page and its assets", async () => {
    const page = await call("/docs");
    expect(page.status).toBe(200);
    expect(page.headers.get("Content-Type")).toContain("text/html");
    expect(await page.text()).toContain('src="/docs/reference.js"');
    const script = await call("/docs/reference.js");
    expect(script.headers.get("Content-Type")).toContain("text/javascript");
  });
});
