import { describe, expect, it } from "vitest";
import { createApp } from "../../src/app.ts";
import { routeCallers } from "../../src/docs/shared-headers.ts";
import { BASE, fetcher, workspaceWith } from "../support/llm.ts";
import { type Doc, documentedResponse, openApi, resolve } from "../support/openapi.ts";
import { createTestWorkspace } from "../support/workspaces.ts";

/**
 * The problem responses /openapi.json lists against what the shared middleware
 * answers: every operation that takes a body lists the body checks' refusals,
 * and a real refusal on a route that did not list one is the one documented.
 */

const WITH_BODY = new Set(["post", "put", "patch", "delete"]);

function operations(doc: Doc): [string, string, Record<string, any>][] {
  return Object.entries(doc.paths as Record<string, Record<string, any>>).flatMap(([path, item]) =>
    Object.entries(item).map(([method, operation]): [string, string, Record<string, any>] => [method, path, operation]),
  );
}

/** The statuses one operation does not list as problem+json responses. */
function unlisted(doc: Doc, method: string, path: string, statuses: number[]): string[] {
  return statuses
    .filter((status) => {
      const response = doc.paths[path][method].responses?.[String(status)];
      return !response || !documentedResponse(doc, method, path, status).content?.["application/problem+json"];
    })
    .map((status) => `${method.toUpperCase()} ${path} ${status}`);
}

describe("the problem responses in /openapi.json", () => {
  it("list 400, 413 and 415 on every operation with a request body", async () => {
    const doc = await openApi();
    const withBody = operations(doc).filter(([, , operation]) => operation.requestBody);
    expect(withBody.length).toBeGreaterThanOrEqual(8);
    expect(withBody.flatMap(([method, path]) => unlisted(doc, method, path, [400, 413, 415]))).toEqual([]);
  });

  it("list what the middleware answers everywhere: a body's refusals by method, credentials' and limits' under /api/v1", async () => {
    const doc = await openApi();
    const guarded = routeCallers(createApp());
    const missing: string[] = [];
    const needless: string[] = [];
    for (const [method, path] of operations(doc)) {
      // A POST, PUT, PATCH or DELETE body is checked even where the operation reads none; a GET's never is.
      if (WITH_BODY.has(method)) missing.push(...unlisted(doc, method, path, [413, 415]));
      else
        for (const status of ["413", "415"])
          if (doc.paths[path][method].responses[status]) needless.push(`${method} ${path} ${status}`);
      // 422 too: every operation there checks its query, one that declares none included (refuseUndeclaredQueries).
      if (path.startsWith("/api/v1/")) missing.push(...unlisted(doc, method, path, [401, 422, 429, 503]));
      if (guarded.has(`${method} ${path}`)) missing.push(...unlisted(doc, method, path, [403]));
    }
    expect(missing).toEqual([]);
    expect(needless).toEqual([]);
  });

  it("list 422 on every operation whose path or query parameters the request is checked against", async () => {
    const doc = await openApi();
    // A parameter with bounds is refused past them by the route's validator, with a 422 problem.
    const CONSTRAINTS = ["maxLength", "minLength", "pattern", "enum", "minimum", "maximum", "format"];
    const constrained = (parameter: Record<string, any>) => {
      const schema = resolve(doc, parameter.schema ?? {});
      return CONSTRAINTS.some((key) => key in schema);
    };
    const checked = operations(doc).filter(([, , operation]) =>
      (operation.parameters ?? []).some((parameter: Record<string, any>) => constrained(resolve(doc, parameter))),
    );
    expect(checked.length).toBeGreaterThanOrEqual(5);
    expect(checked.flatMap(([method, path]) => unlisted(doc, method, path, [422]))).toEqual([]);
    // As the server answers: an id past its param's 64 characters.
    const workspace = await workspaceWith(null);
    const answer = await fetcher(`${BASE}/api/v1/tasks/task_${"x".repeat(70)}`, { headers: workspace.headers });
    expect(answer.status).toBe(422);
    expect(answer.headers.get("Content-Type")).toBe("application/problem+json");
    expect(await answer.json()).toMatchObject({ code: "VALIDATION_FAILED", errors: [{ path: "id" }] });
  });

  it("are what the server answers, on routes that did not list them", async () => {
    const doc = await openApi();
    const workspace = await workspaceWith(null);
    const as = (contentType: string) => ({ ...workspace.headers, "Content-Type": contentType });
    const cases: [string, string, string, RequestInit, number][] = [
      [
        "post",
        "/api/v1/tasks",
        "/api/v1/tasks",
        { method: "POST", headers: as("application/json"), body: '{"title": ' },
        400,
      ],
      [
        "put",
        "/api/v1/budgets",
        "/api/v1/budgets",
        {
          method: "PUT",
          headers: as("application/json"),
          body: JSON.stringify({ daily_tokens: 1, pad: "x".repeat(1024 * 1024) }),
        },
        413,
      ],
      [
        "patch",
        "/api/v1/workspace",
        "/api/v1/workspace",
        { method: "PATCH", headers: as("text/plain"), body: "llm=null" },
        415,
      ],
      // An operation that reads no body still has a body it was sent checked.
      [
        "delete",
        "/api/v1/api-keys/{id}",
        "/api/v1/api-keys/key_nope",
        { method: "DELETE", headers: as("text/plain"), body: "x" },
        415,
      ],
    ];
    for (const [method, path, url, init, status] of cases) {
      const where = `${method.toUpperCase()} ${path} ${status}`;
      const answer = await fetcher(`${BASE}${url}`, init);
      expect(answer.status, where).toBe(status);
      expect(answer.headers.get("Content-Type"), where).toBe("application/problem+json");
      const documented = documentedResponse(doc, method, path, status).content["application/problem+json"];
      const { type, title, code } = documented.example;
      expect(await answer.json(), where).toMatchObject({ type, title, status, code });
    }
  });

  it("name every member the LLM routes' problems carry", async () => {
    const doc = await openApi();
    const documented = Object.keys(resolve(doc, doc.components.schemas.Problem).properties);
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "simulated", model: "sim-1?failure_rate=1" }],
    });
    const post = (path: string, body: unknown) =>
      fetcher(`${BASE}${path}`, {
        method: "POST",
        headers: { ...workspace.headers, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    const answers: [string, Response][] = [
      [
        "previous_response_not_found",
        await post("/api/v1/llm/responses", { model: "auto", input: "hi", previous_response_id: "resp_nope" }),
      ],
      [
        "item_not_found",
        await post("/api/v1/llm/responses", { model: "auto", input: [{ type: "item_reference", id: "msg_nope" }] }),
      ],
      ["validation_failed", await post("/api/v1/llm/chat/completions", { model: "auto", messages: [], n: 2 })],
      [
        "all_providers_failed",
        await post("/api/v1/llm/chat/completions", { model: "auto", messages: [{ role: "user", content: "hi" }] }),
      ],
    ];
    const limited = await createTestWorkspace(fetcher, BASE, { limits: { requests_per_second: 1, burst: 2 } });
    const flood = await Promise.all(
      Array.from({ length: 6 }, () => fetcher(`${BASE}/api/v1/llm/models`, { headers: limited.headers })),
    );
    const refused = flood.find((answer) => answer.status === 429);
    expect(refused).toBeDefined();
    answers.push(["rate_limit_exceeded", refused as Response]);
    const undocumented: string[] = [];
    for (const [name, answer] of answers) {
      const body = (await answer.json()) as Record<string, unknown>;
      expect(body.type, name).toMatch(/^\/problems\//);
      for (const member of Object.keys(body)) if (!documented.includes(member)) undocumented.push(`${name}: ${member}`);
    }
    expect(undocumented).toEqual([]);
  });
});
