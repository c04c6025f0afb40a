import { exports } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { openApiDocument } from "../../src/app.ts";
import { createTestKey, createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";
import { insertArtifact, submitTask } from "../unit/tasks/fakes.ts";

/**
 * Every workspace route that takes an id, called with another workspace's id,
 * answers exactly what a missing id gets. Routes come from the OpenAPI
 * document, so a new route with an id fails here until it has a fixture.
 */

const BASE = "http://edge.test";
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));
const OPERATOR_PATHS = new Set(["/api/v1/workspaces/{id}"]);
const MISSING_IDS: Record<string, string> = {
  key: "key_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3",
  task: "task_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3",
  art: "art_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3",
  resp: "resp_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3",
};

/** A response stored for the workspace (the simulated provider answers it). */
async function storeResponse(owner: TestWorkspace): Promise<string> {
  const response = await fetcher(`${BASE}/api/v1/llm/responses`, {
    method: "POST",
    headers: { ...owner.headers, "Content-Type": "application/json" },
    body: JSON.stringify({ input: "hi" }),
  });
  expect(response.status).toBe(200);
  return ((await response.json()) as { id: string }).id;
}

type Fixture = { prefix: string; create: (owner: TestWorkspace) => Promise<string> };
const FIXTURES: Record<string, Fixture> = {
  "/api/v1/api-keys/{id}": {
    prefix: "key",
    create: async (owner) => (await createTestKey(fetcher, BASE, owner.key, ["tasks:read"])).id,
  },
  ...Object.fromEntries(
    ["/api/v1/tasks/{id}", "/api/v1/tasks/{id}/cancel", "/api/v1/tasks/{id}/runs", "/api/v1/tasks/{id}/artifacts"].map(
      (path) => [path, { prefix: "task", create: (owner: TestWorkspace) => submitTask(owner.headers) }],
    ),
  ),
  ...Object.fromEntries(
    ["/api/v1/llm/responses/{id}", "/api/v1/llm/responses/{id}/input_items"].map((path) => [
      path,
      { prefix: "resp", create: storeResponse },
    ]),
  ),
  ...Object.fromEntries(
    ["/api/v1/artifacts/{id}", "/api/v1/artifacts/{id}/content"].map((path) => [
      path,
      { prefix: "art", create: (owner: TestWorkspace) => insertArtifact(owner.id) },
    ]),
  ),
};

let mine: TestWorkspace;
let theirs: TestWorkspace;
beforeAll(async () => {
  mine = await createTestWorkspace(fetcher, BASE, { name: "mine" });
  theirs = await createTestWorkspace(fetcher, BASE, { name: "theirs" });
});

const doc = openApiDocument();
const routesWithIds = Object.entries(doc.paths ?? {})
  .filter(([path]) => path.startsWith("/api/v1/") && path.includes("{id}") && !OPERATOR_PATHS.has(path))
  .flatMap(([path, item]) =>
    (["get", "post", "put", "patch", "delete"] as const)
      .filter((method) => item?.[method])
      .map((method) => ({ path, method })),
  );

function normalise(body: Record<string, unknown>, id: string) {
  const { request_id: _requestId, ...rest } = body;
  return JSON.parse(JSON.stringify(rest).replaceAll(id, "<id>"));
}

describe("tenant isolation", () => {
  it("covers at least the API key routes", () => {
    expect(routesWithIds.map((route) => route.path)).toContain("/api/v1/api-keys/{id}");
  });

  for (const { path, method } of routesWithIds) {
    it(`${method.toUpperCase()} ${path} treats another workspace's id as missing`, async () => {
      const fixture = FIXTURES[path];
      expect(fixture, `add a fixture for ${path} to this test`).toBeDefined();
      const foreignId = await fixture.create(theirs);
      const missingId = MISSING_IDS[fixture.prefix];
      const request = (id: string) =>
        fetcher(`${BASE}${path.replace("{id}", id)}`, { method: method.toUpperCase(), headers: mine.headers });

      const foreign = await request(foreignId);
      const missing = await request(missingId);
      expect(foreign.status).toBe(404);
      expect(missing.status).toBe(404);
      expect(normalise(await foreign.json(), foreignId)).toEqual(normalise(await missing.json(), missingId));

      // And the owner still sees it untouched.
      const list = (await (await fetcher(`${BASE}/api/v1/api-keys`, { headers: theirs.headers })).json()) as {
        data: { id: string; revoked_at: string | null }[];
      };
      if (fixture.prefix === "key") expect(list.data.find((key) => key.id === foreignId)?.revoked_at).toBeNull();
      if (fixture.prefix === "resp") {
        const stored = await fetcher(`${BASE}/api/v1/llm/responses/${foreignId}`, { headers: theirs.headers });
        expect(stored.status).toBe(200);
      }
      if (fixture.prefix === "task") {
        const task = await fetcher(`${BASE}/api/v1/tasks/${foreignId}`, { headers: theirs.headers });
        expect(((await task.json()) as { status: string }).status).not.toBe("cancelled");
      }
    });
  }
});
