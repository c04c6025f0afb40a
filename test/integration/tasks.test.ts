import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import {
  bearer,
  createTestKey,
  createTestWorkspace,
  TEST_ADMIN_TOKEN,
  type TestWorkspace,
} from "../support/workspaces.ts";
import { BASE, eventsOf, fetcher } from "../unit/tasks/fakes.ts";

/** The tasks API inside workerd: submission, idempotency, admission, listing, cancellation, queue depth. */

// A slow simulated model keeps a task running long enough to observe it.
const SLOW = { model: "simulated:sim-1?latency_ms=4000" };

function submit(workspace: TestWorkspace, body: Record<string, unknown>, headers: Record<string, string> = {}) {
  return fetcher(`${BASE}/api/v1/tasks`, {
    method: "POST",
    headers: { ...workspace.headers, "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
}

const basic = { title: "Add a CLI flag", type: "code_generation", priority: "high" };

let workspace: TestWorkspace;
beforeAll(async () => {
  workspace = await createTestWorkspace(fetcher, BASE, { name: "tasks api" });
});

describe("POST /api/v1/tasks", () => {
  it("accepts a task (202) as queued, with a Location and a task.created event", async () => {
    const response = await submit(workspace, {
      ...basic,
      description: "With tests.",
      estimated_tokens: 500,
      project_id: "proj_1",
    });
    expect(response.status).toBe(202);
    const task = (await response.json()) as Record<string, unknown>;
    expect(task).toMatchObject({
      title: "Add a CLI flag",
      type: "code_generation",
      priority: "high",
      status: "queued",
      project_id: "proj_1",
      estimated_tokens: 500,
      attempts: 0,
      max_retries: 3,
      tokens: { prompt: 0, completion: 0, total: 0 },
    });
    expect(task.id).toMatch(/^task_[0-9A-Z]{26}$/);
    expect(response.headers.get("Location")).toBe(`/api/v1/tasks/${task.id}`);
    const [created] = await eventsOf(workspace.headers, task.id as string);
    expect(created.event_type).toBe("task.created");
    expect(created.data).toMatchObject({ task: { id: task.id, priority: "high" }, user: { id: workspace.keyId } });
  });

  it("validates the body: 422 with field errors", async () => {
    const response = await submit(workspace, { title: "", type: "poetry", priority: "urgent" });
    expect(response.status).toBe(422);
    const body = (await response.json()) as { errors: { path: string }[] };
    expect(body.errors.map((error) => error.path).sort()).toEqual(["priority", "title", "type"]);
  });

  it("refuses text with a lone surrogate (422 naming each field) rather than store U+FFFD in its place", async () => {
    // Found by fuzz: the 202 answered "a\ud800", GET then "a\ufffd", and an idempotent replay the second.
    const count = async () =>
      (
        await env.DB.prepare("SELECT count(*) AS n FROM tasks WHERE workspace_id = ?")
          .bind(workspace.id)
          .first<{ n: number }>()
      )?.n;
    const before = await count();
    const response = await submit(workspace, {
      ...basic,
      title: "Fix a\ud800",
      description: "b\udc00",
      project_id: "p\ud800",
      agent_config: { model: "simulated:\ud800" },
    });
    expect(response.status).toBe(422);
    expect(response.headers.get("Content-Type")).toBe("application/problem+json");
    const body = (await response.json()) as { errors: { path: string; message: string }[] };
    expect(body.errors.map((error) => error.path).sort()).toEqual([
      "agent_config.model",
      "description",
      "project_id",
      "title",
    ]);
    expect(body.errors.find((error) => error.path === "title")?.message).toBe(
      "must be well-formed Unicode: a lone surrogate (such as \\ud800) is no character, and would be stored as U+FFFD",
    );
    expect(await count()).toBe(before);
    // A pair is one character, and is kept as sent.
    const emoji = await submit(workspace, { ...basic, title: "Fix \ud83d\ude00" });
    expect(emoji.status).toBe(202);
    const { id } = (await emoji.json()) as { id: string };
    const read = await fetcher(`${BASE}/api/v1/tasks/${id}`, { headers: workspace.headers });
    expect(((await read.json()) as { title: string }).title).toBe("Fix \u{1f600}");
  });

  it("refuses an agent_config key named __proto__ (422) rather than drop it", async () => {
    // Found by fuzz: the 202 answered `agent_config: {}`, and an object under it read as the config's own fields.
    for (const config of ['{"__proto__":{"max_steps":999}}', '{"__proto__":1,"max_steps":3}']) {
      const response = await fetcher(`${BASE}/api/v1/tasks`, {
        method: "POST",
        headers: { ...workspace.headers, "Content-Type": "application/json" },
        body: `{"title":"Proto","type":"testing","agent_config":${config}}`,
      });
      expect(response.status).toBe(422);
      expect(response.headers.get("Content-Type")).toBe("application/problem+json");
      expect(((await response.json()) as { errors: unknown }).errors).toEqual([
        { path: "agent_config.__proto__", message: "is a key an agent_config cannot keep; rename it" },
      ]);
    }
  });

  it("refuses an agent_config nested past its limit with 422, not a 500, and takes one at the limit", async () => {
    const nested = (depth: number) => {
      let value: unknown = "leaf";
      for (let level = 0; level < depth; level++) value = level % 2 ? { inner: value } : [value];
      return value;
    };
    // Thousands of levels took the canonical hash (idempotency, audit) past the stack.
    const deep = await fetcher(`${BASE}/api/v1/tasks`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: `{"title":"Deep","type":"testing","agent_config":{"extra":${"[".repeat(5_000)}${"]".repeat(5_000)}}}`,
    });
    expect(deep.status).toBe(422);
    expect(((await deep.json()) as { errors: unknown }).errors).toEqual([
      { path: "agent_config", message: "nests objects and arrays more than 32 levels deep" },
    ]);
    expect((await submit(workspace, { ...basic, agent_config: { extra: nested(32) } })).status).toBe(422);
    expect((await submit(workspace, { ...basic, agent_config: { extra: nested(31) } })).status).toBe(202);
  });

  it("honours Idempotency-Key: same body → the first task, different body → 409", async () => {
    const key = { "Idempotency-Key": `idem-${crypto.randomUUID()}` };
    const first = await submit(workspace, basic, key);
    const again = await submit(workspace, basic, key);
    expect(first.status).toBe(202);
    expect(again.status).toBe(202);
    expect(again.headers.get("Idempotent-Replayed")).toBe("true");
    const firstBody = (await first.json()) as { id: string };
    expect(((await again.json()) as { id: string }).id).toBe(firstBody.id);
    const conflict = await submit(workspace, { ...basic, title: "Something else" }, key);
    expect(conflict.status).toBe(409);
    expect(await conflict.json()).toMatchObject({
      code: "CONFLICT",
      task_id: firstBody.id,
      detail:
        "This Idempotency-Key was used with a different request body (task_id names its task); send a new key for a new task.",
    });
  });

  it("gives concurrent submissions with one key one task", async () => {
    const key = { "Idempotency-Key": `race-${crypto.randomUUID()}` };
    const responses = await Promise.all(Array.from({ length: 5 }, () => submit(workspace, basic, key)));
    const ids = new Set(
      await Promise.all(responses.map(async (response) => ((await response.json()) as { id: string }).id)),
    );
    expect(responses.map((response) => response.status)).toEqual([202, 202, 202, 202, 202]);
    expect(ids.size).toBe(1);
  });

  it("needs tasks:write", async () => {
    const reader = await createTestKey(fetcher, BASE, workspace.key, ["tasks:read"]);
    const response = await fetcher(`${BASE}/api/v1/tasks`, {
      method: "POST",
      headers: { ...reader.headers, "Content-Type": "application/json" },
      body: JSON.stringify(basic),
    });
    expect(response.status).toBe(403);
    expect(await response.json()).toMatchObject({
      required_scope: "tasks:write",
      detail:
        "This credential lacks the tasks:write scope: use a key or token that has it (or admin); an admin key makes such a key with POST /api/v1/api-keys.",
    });
  });

  it("releases tasks waiting in line at once when the operator raises the running cap", async () => {
    const small = await createTestWorkspace(fetcher, BASE, {
      name: "raised caps",
      limits: { max_running_tasks: 1, max_pending_tasks: 5 },
    });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const response = await submit(small, { ...basic, agent_config: SLOW });
      ids.push(((await response.json()) as { id: string }).id);
    }
    expect(await env.WORKSPACE_LIMITER.getByName(small.id).admissionSnapshot()).toMatchObject({
      pending: 2,
      leased: 1,
    });

    const raised = await fetcher(`${BASE}/api/v1/workspaces/${small.id}`, {
      method: "PATCH",
      headers: { ...bearer(TEST_ADMIN_TOKEN), "Content-Type": "application/json" },
      body: JSON.stringify({ limits: { max_running_tasks: 3 } }),
    });
    expect(raised.status).toBe(200);
    expect(await env.WORKSPACE_LIMITER.getByName(small.id).admissionSnapshot()).toMatchObject({
      pending: 0,
      leased: 3,
      maxRunning: 3,
    });
    for (const id of ids) {
      const task = (await (await fetcher(`${BASE}/api/v1/tasks/${id}`, { headers: small.headers })).json()) as {
        status: string;
      };
      expect(task.status, id).not.toBe("pending");
    }
  });

  it("lines tasks up over the running cap and refuses over the pending cap with 429 + Retry-After", async () => {
    const small = await createTestWorkspace(fetcher, BASE, {
      name: "caps",
      limits: { max_running_tasks: 1, max_pending_tasks: 2 },
    });
    const statuses: string[] = [];
    for (let i = 0; i < 3; i++) {
      const response = await submit(small, { ...basic, agent_config: SLOW });
      statuses.push(((await response.json()) as { status: string }).status);
    }
    expect(statuses).toEqual(["queued", "pending", "pending"]);
    const refused = await submit(small, { ...basic, agent_config: SLOW });
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get("Retry-After"))).toBeGreaterThanOrEqual(1);
    expect(await refused.json()).toMatchObject({ code: "RATE_LIMITED", pending: 2, max_pending_tasks: 2 });

    const workspaceView = (await (await fetcher(`${BASE}/api/v1/workspace`, { headers: small.headers })).json()) as {
      queue: { pending: number; queued: number; running: number };
    };
    expect(workspaceView.queue.pending).toBe(2);
    expect(workspaceView.queue.queued + workspaceView.queue.running).toBe(1);
    expect(await env.WORKSPACE_LIMITER.getByName(small.id).admissionSnapshot()).toMatchObject({
      pending: 2,
      leased: 1,
    });
  });
});

describe("reading and cancelling tasks", () => {
  it("lists newest first with filters and a cursor", async () => {
    const own = await createTestWorkspace(fetcher, BASE, { name: "list" });
    const ids: string[] = [];
    for (const priority of ["low", "medium", "high", "low"]) {
      const response = await submit(own, {
        ...basic,
        priority,
        type: priority === "high" ? "testing" : "documentation",
      });
      ids.push(((await response.json()) as { id: string }).id);
    }
    const page1 = (await (await fetcher(`${BASE}/api/v1/tasks?limit=3`, { headers: own.headers })).json()) as {
      data: { id: string }[];
      next_cursor: string;
    };
    expect(page1.data.map((task) => task.id)).toEqual(ids.slice(1).reverse());
    const page2 = (await (
      await fetcher(`${BASE}/api/v1/tasks?limit=3&cursor=${page1.next_cursor}`, { headers: own.headers })
    ).json()) as {
      data: { id: string }[];
      next_cursor: string | null;
    };
    expect(page2).toEqual({ data: [expect.objectContaining({ id: ids[0] })], next_cursor: null });
    const low = (await (await fetcher(`${BASE}/api/v1/tasks?priority=low`, { headers: own.headers })).json()) as {
      data: { id: string }[];
    };
    expect(low.data.map((task) => task.id)).toEqual([ids[3], ids[0]]);
    const testing = (await (await fetcher(`${BASE}/api/v1/tasks?type=testing`, { headers: own.headers })).json()) as {
      data: { id: string }[];
    };
    expect(testing.data.map((task) => task.id)).toEqual([ids[2]]);
    const bad = await fetcher(`${BASE}/api/v1/tasks?status=sleeping`, { headers: own.headers });
    expect(bad.status).toBe(422);
  });

  it("cancels a pending task at once (200), frees its place, and refuses to cancel it twice (409)", async () => {
    const small = await createTestWorkspace(fetcher, BASE, {
      name: "cancel",
      limits: { max_running_tasks: 1, max_pending_tasks: 1 },
    });
    await submit(small, { ...basic, agent_config: SLOW });
    const waiting = (await (await submit(small, { ...basic, agent_config: SLOW })).json()) as {
      id: string;
      status: string;
    };
    expect(waiting.status).toBe("pending");
    expect((await submit(small, basic)).status).toBe(429);

    const cancel = await fetcher(`${BASE}/api/v1/tasks/${waiting.id}/cancel`, {
      method: "POST",
      headers: small.headers,
    });
    expect(cancel.status).toBe(200);
    expect(await cancel.json()).toMatchObject({ id: waiting.id, status: "cancelled" });
    const error = (await eventsOf(small.headers, waiting.id)).find((event) => event.event_type === "task.error");
    expect(error?.data).toMatchObject({ error_type: "cancelled", fatal: true });
    // Its place in line is free again.
    expect((await submit(small, basic)).status).toBe(202);
    const twice = await fetcher(`${BASE}/api/v1/tasks/${waiting.id}/cancel`, {
      method: "POST",
      headers: small.headers,
    });
    expect(twice.status).toBe(409);
    // The task's state rides in its own member: a problem's `status` is the HTTP status.
    expect(await twice.json()).toMatchObject({ status: 409, code: "CONFLICT", task_status: "cancelled" });
  });

  it("answers concurrent cancels of a pending task one 200 and 409s, with one task.cancel entry", async () => {
    // Found by fuzz: every cancel that lost the race answered 409 and still wrote an entry claiming the cancel.
    const small = await createTestWorkspace(fetcher, BASE, { name: "cancel race", limits: { max_running_tasks: 1 } });
    await submit(small, { ...basic, agent_config: SLOW });
    const waiting = (await (await submit(small, { ...basic, agent_config: SLOW })).json()) as {
      id: string;
      status: string;
    };
    expect(waiting.status).toBe("pending");
    const cancels = await Promise.all(
      Array.from({ length: 8 }, () =>
        fetcher(`${BASE}/api/v1/tasks/${waiting.id}/cancel`, { method: "POST", headers: small.headers }),
      ),
    );
    expect(cancels.map((response) => response.status).sort()).toEqual([200, 409, 409, 409, 409, 409, 409, 409]);
    const entries = await env.DB.prepare(
      "SELECT count(*) AS n FROM audit_logs WHERE workspace_id = ? AND action = 'task.cancel' AND resource_id = ?",
    )
      .bind(small.id, waiting.id)
      .first<{ n: number }>();
    expect(entries?.n).toBe(1);
  });

  it("shows runs and artifacts of a task, and 404 for unknown ids", async () => {
    const created = (await (await submit(workspace, basic)).json()) as { id: string };
    const runs = await fetcher(`${BASE}/api/v1/tasks/${created.id}/runs`, { headers: workspace.headers });
    expect(runs.status).toBe(200);
    expect(((await runs.json()) as { data: unknown[] }).data.length).toBeLessThanOrEqual(1);
    const files = await fetcher(`${BASE}/api/v1/tasks/${created.id}/artifacts`, { headers: workspace.headers });
    expect(files.status).toBe(200);
    const missing = await fetcher(`${BASE}/api/v1/tasks/task_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3`, {
      headers: workspace.headers,
    });
    expect(missing.status).toBe(404);
  });

  it("runs a submitted task to completion through the real queue and the simulated provider", async () => {
    const created = (await (await submit(workspace, { ...basic, title: "End to end in workerd" })).json()) as {
      id: string;
    };
    let task: { status: string; result: { artifacts: string[] } | null } = { status: "queued", result: null };
    // Local queues run one batch at a time, and other tests' slow tasks may be ahead of this one.
    for (let i = 0; i < 250 && !["completed", "failed", "dead_lettered"].includes(task.status); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      task = (await (
        await fetcher(`${BASE}/api/v1/tasks/${created.id}`, { headers: workspace.headers })
      ).json()) as typeof task;
    }
    expect(task.status).toBe("completed");
    const runs = (await (
      await fetcher(`${BASE}/api/v1/tasks/${created.id}/runs`, { headers: workspace.headers })
    ).json()) as {
      data: { status: string; provider: string }[];
    };
    expect(runs.data).toMatchObject([{ status: "succeeded", provider: "simulated" }]);
    const files = (await (
      await fetcher(`${BASE}/api/v1/tasks/${created.id}/artifacts`, { headers: workspace.headers })
    ).json()) as {
      data: { id: string; path: string; content_url: string }[];
    };
    expect(files.data.map((file) => file.path)).toContain("REPORT.md");
    const content = await fetcher(`${BASE}${files.data[0].content_url}`, { headers: workspace.headers });
    expect(content.headers.get("Content-Type")).toBe("text/markdown; charset=utf-8");
    expect(await content.text()).toContain("# End to end in workerd");
  }, 30_000);
});

describe("the operator token", () => {
  it("cannot submit tasks", async () => {
    const response = await fetcher(`${BASE}/api/v1/tasks`, {
      method: "POST",
      headers: { Authorization: `Bearer ${TEST_ADMIN_TOKEN}`, "Content-Type": "application/json" },
      body: JSON.stringify(basic),
    });
    expect(response.status).toBe(403);
  });
});
