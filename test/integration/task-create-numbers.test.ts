import { beforeAll, describe, expect, it } from "vitest";
import { createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";
import { BASE, fetcher } from "../unit/tasks/fakes.ts";

/**
 * POST /api/v1/tasks with a number in agent_config that JSON parses past the double range (`1e400` is Infinity):
 * it was accepted, stored and answered as null, and an Idempotency-Key sent with it then replayed a body that
 * said null there instead of answering 409.
 */

let workspace: TestWorkspace;

beforeAll(async () => {
  workspace = await createTestWorkspace(fetcher, BASE, { name: "task numbers" });
});

function submit(rawBody: string, headers: Record<string, string> = {}) {
  return fetcher(`${BASE}/api/v1/tasks`, {
    method: "POST",
    headers: { ...workspace.headers, "Content-Type": "application/json", ...headers },
    body: rawBody,
  });
}

describe("a task's agent_config", () => {
  it("with a number too large for JSON is refused with 422 naming agent_config, at any depth", async () => {
    for (const config of ['{"budget": 1e400}', '{"limits": {"tokens": [1, -1e999]}}']) {
      const response = await submit(`{"title": "Big numbers", "type": "testing", "agent_config": ${config}}`);
      expect(response.status, config).toBe(422);
      expect(response.headers.get("Content-Type")).toContain("application/problem+json");
      const problem = (await response.json()) as { code: string; errors: { path: string; message: string }[] };
      expect(problem.code).toBe("VALIDATION_FAILED");
      expect(problem.errors.map((error) => error.path)).toContain("agent_config");
    }
  });

  it("is not replayed as the null a number too large for JSON used to become", async () => {
    const key = { "Idempotency-Key": `numbers-${crypto.randomUUID()}` };
    const first = await submit('{"title": "Nulls", "type": "testing", "agent_config": {"budget": null}}', key);
    expect(first.status).toBe(202);
    const other = await submit('{"title": "Nulls", "type": "testing", "agent_config": {"budget": 1e400}}', key);
    expect(other.status).toBe(422);
    expect(other.headers.get("Idempotent-Replayed")).toBeNull();
  });

  it("keeps large finite numbers as sent", async () => {
    const response = await submit('{"title": "Finite", "type": "testing", "agent_config": {"budget": 1e300}}');
    expect(response.status).toBe(202);
    expect(((await response.json()) as { agent_config: { budget: number } }).agent_config.budget).toBe(1e300);
  });
});
