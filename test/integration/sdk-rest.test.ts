import { beforeAll, describe, expect, it } from "vitest";
import { MgxApiError, MgxClient, type Task } from "../../sdk/index.ts";
import { createTestWorkspace, TEST_ADMIN_TOKEN } from "../support/workspaces.ts";
import { BASE, fetcher } from "../unit/tasks/fakes.ts";

/** The SDK's typed REST methods against the API inside workerd: what a program using the client sees. */

let client: MgxClient;

beforeAll(async () => {
  const workspace = await createTestWorkspace(fetcher, BASE, { name: "sdk rest" });
  client = new MgxClient({
    baseUrl: BASE,
    apiKey: workspace.key,
    fetch: (input, init) => fetcher(String(input), init),
  });
});

// Local queues run one batch at a time, and other tests' tasks may be ahead of this one.
const untilEnded = (id: string): Promise<Task> => client.tasks.wait(id, { intervalMs: 100, timeoutMs: 25_000 });

describe("MgxClient: tasks and artifacts", () => {
  it("submits once under an idempotency key, runs the task, and reads its runs, artifacts and file", async () => {
    const newTask = { title: "Through the SDK", type: "documentation" } as const;
    const first = await client.tasks.create(newTask, { idempotencyKey: "sdk-rest-1" });
    const again = await client.tasks.create(newTask, { idempotencyKey: "sdk-rest-1" });
    expect(first).toMatchObject({ title: "Through the SDK", type: "documentation", priority: "medium" });
    expect(["queued", "pending"]).toContain(first.status);
    expect(again.id).toBe(first.id);

    const listed = await client.tasks.list({ type: "documentation", limit: 100 });
    expect(listed.data.map((task) => task.id)).toContain(first.id);
    const all: string[] = [];
    for await (const task of client.tasks.listAll({ limit: 1 })) all.push(task.id);
    expect(all).toContain(first.id);
    expect(new Set(all).size).toBe(all.length);

    const ended = await untilEnded(first.id);
    expect(ended.status).toBe("completed");
    const runs = await client.tasks.runs(first.id);
    expect(runs.data).toMatchObject([{ task_id: first.id, status: "succeeded", provider: "simulated" }]);
    const files = await client.tasks.artifacts(first.id);
    const report = files.data.find((artifact) => artifact.path === "REPORT.md");
    expect(report).toMatchObject({ task_id: first.id, mime_type: expect.stringContaining("text/markdown") });
    const content = await client.artifacts.content(report!.id);
    expect(content.headers.get("Content-Type")).toContain("text/markdown");
    const text = await content.text();
    expect(new TextEncoder().encode(text).byteLength).toBe(report!.size_bytes);
    // Asked with the ETag of the copy the caller has, the answer is that it is current: a 304, not an error.
    const etag = content.headers.get("ETag");
    expect(etag).toBe(`"${report!.sha256}"`);
    const unchanged = await client.artifacts.content(report!.id, { headers: { "If-None-Match": etag! } });
    expect(unchanged.status).toBe(304);
    expect(unchanged.headers.get("ETag")).toBe(etag);
  });

  it("cancels a task, queued or already running", async () => {
    const slow = await client.tasks.create({
      title: "Cancelled through the SDK",
      type: "testing",
      agent_config: { model: "simulated:sim-1?latency_ms=4000" },
    });
    const cancelled = await client.tasks.cancel(slow.id);
    expect(cancelled.id).toBe(slow.id);
    // Cancelled at once if it was still queued (200), else asked to stop (202).
    expect(cancelled.status === "cancelled" || cancelled.cancel_requested_at !== null).toBe(true);
    expect((await untilEnded(slow.id)).status).toBe("cancelled");
  });

  it("throws the API's problem as MgxApiError", async () => {
    const missing = await client.tasks.get("task_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3").catch((error: unknown) => error);
    expect(missing).toBeInstanceOf(MgxApiError);
    expect(missing).toMatchObject({ status: 404, problem: { code: "NOT_FOUND" } });
    const invalid = await client.tasks
      .create({ title: "", type: "code_generation" } as never)
      .catch((error: unknown) => error);
    expect(invalid).toMatchObject({
      status: 422,
      problem: { code: "VALIDATION_FAILED", errors: [expect.objectContaining({ path: "title" })] },
    });
  });
});

describe("MgxClient: budgets, usage and providers", () => {
  it("sets and reads budgets, reads the usage a call charged, and lists the providers", async () => {
    const set = await client.budgets.set({
      daily_tokens: 100_000,
      monthly_tokens: null,
      daily_cost_usd: null,
      monthly_cost_usd: 5,
    });
    expect(set.budgets).toEqual({
      daily_tokens: 100_000,
      monthly_tokens: null,
      daily_cost_usd: null,
      monthly_cost_usd: 5,
    });
    expect(set.exhausted).toBe(false);

    // A route without a typed method, through request(): a chat completion, charged to the workspace.
    const chat = await client.request<{ usage: { total_tokens: number } }>("POST", "/api/v1/llm/chat/completions", {
      body: { model: "simulated:sim-1", messages: [{ role: "user", content: "hi" }] },
    });
    const charged = chat.usage.total_tokens;
    expect(charged).toBeGreaterThan(0);

    // Usage rows are written in batches, about half a second after the call.
    let usage = await client.usage({ provider: "simulated" });
    for (let i = 0; i < 50 && usage.totals.total_tokens < charged; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      usage = await client.usage({ provider: "simulated" });
    }
    expect(usage.totals.total_tokens).toBeGreaterThanOrEqual(charged);
    expect(usage.data.every((row) => row.provider === "simulated" && row.simulated)).toBe(true);
    const budgets = await client.budgets.get();
    expect(budgets.daily.tokens).toBeGreaterThanOrEqual(charged);

    const providers = [];
    for await (const provider of client.providers()) providers.push(provider);
    expect(providers.find((provider) => provider.provider === "simulated")).toMatchObject({
      configured: true,
      simulated: true,
    });
    expect(providers.map((provider) => provider.provider)).toEqual(
      expect.arrayContaining(["openai", "anthropic", "azure", "local", "workers-ai"]),
    );
  });
});

describe("MgxClient: the workspace, its keys and its dead letters", () => {
  it("renames the workspace and sets its routing", async () => {
    const before = await client.workspace.get();
    const changed = await client.workspace.update({
      name: "sdk rest, renamed",
      llm: { strategy: "fallback", chain: [{ provider: "simulated", model: "sim-1", weight: 1 }] },
    });
    expect(changed).toMatchObject({ id: before.id, name: "sdk rest, renamed" });
    expect((await client.workspace.get()).llm).toMatchObject({
      strategy: "fallback",
      chain: [{ provider: "simulated" }],
    });
  });

  it("lets the operator create a workspace, read it and change its plan; a workspace key may not", async () => {
    const operator = new MgxClient({
      baseUrl: BASE,
      apiKey: TEST_ADMIN_TOKEN,
      fetch: (input, init) => fetcher(String(input), init),
    });
    const created = await operator.workspaces.create({
      name: "sdk operator",
      limits: { max_running_tasks: 2 },
      api_key: { name: "reader", scopes: ["tasks:read"] },
    });
    expect(created.workspace).toMatchObject({ name: "sdk operator", plan: "free", limits: { max_running_tasks: 2 } });
    expect(created.api_key).toMatchObject({ name: "reader", scopes: ["tasks:read"] });

    const ownClient = new MgxClient({
      baseUrl: BASE,
      apiKey: created.api_key.key,
      fetch: (input, init) => fetcher(String(input), init),
    });
    expect(await ownClient.whoami()).toMatchObject({ workspace_id: created.workspace.id });

    const changed = await operator.workspaces.update(created.workspace.id, { plan: "team", limits: { burst: 7 } });
    expect(changed).toMatchObject({ id: created.workspace.id, plan: "team", limits: { burst: 7 } });
    expect(changed.limits.max_running_tasks).not.toBe(2);
    expect(await operator.workspaces.get(created.workspace.id)).toEqual(changed);

    await expect(client.workspaces.get(created.workspace.id)).rejects.toMatchObject({ status: 403 });
  });

  it("creates a key that works, lists it, and revokes it", async () => {
    const created = await client.apiKeys.create({ name: "ci reader", scopes: ["tasks:read"] });
    expect(created.key).toMatch(/^mgx_/);
    expect(created).toMatchObject({ name: "ci reader", scopes: ["tasks:read"], revoked_at: null });
    const reader = new MgxClient({
      baseUrl: BASE,
      apiKey: created.key,
      fetch: (input, init) => fetcher(String(input), init),
    });
    expect(await reader.whoami()).toMatchObject({ kind: "api_key", id: created.id, scopes: ["tasks:read"] });
    expect((await reader.workspace.get()).name).toBe((await client.workspace.get()).name);
    // Its scope is read-only.
    await expect(reader.tasks.create({ title: "Not allowed", type: "testing" })).rejects.toMatchObject({ status: 403 });

    const listed = await client.apiKeys.list({ limit: 100 });
    expect(listed.data.map((key) => key.id)).toContain(created.id);
    const revoked = await client.apiKeys.revoke(created.id);
    expect(revoked.revoked_at).not.toBeNull();
    await expect(reader.workspace.get()).rejects.toMatchObject({ status: 401 });
  });

  it("reads the audit log: entries, an export, counts and a chain that verifies", async () => {
    const key = await client.apiKeys.create({ name: "audited", scopes: ["tasks:read"] });
    await client.apiKeys.revoke(key.id);
    const revokes = await client.auditLogs.list({ action: "api_key.revoke" });
    expect(revokes.data).toEqual(
      expect.arrayContaining([expect.objectContaining({ resource_type: "api_key", resource_id: key.id })]),
    );
    const actions: string[] = [];
    for await (const entry of client.auditLogs.listAll({ limit: 2 })) actions.push(entry.action);
    expect(actions).toEqual(expect.arrayContaining(["api_key.create", "api_key.revoke"]));
    const revokeCount = actions.filter((action) => action === "api_key.revoke").length;

    // Counted before the export below, which is an entry of its own.
    const stats = await client.auditLogs.stats();
    expect(stats.total).toBe(actions.length);
    expect(stats.by_action).toEqual(expect.arrayContaining([{ action: "api_key.revoke", count: revokeCount }]));

    const csv = await (await client.auditLogs.export({ format: "csv", action: "api_key.create" })).text();
    const [header, ...rows] = csv.trim().split("\r\n");
    expect(header).toContain("action");
    const creates = actions.filter((action) => action === "api_key.create").length;
    expect(rows.length).toBe(creates);
    expect(rows.every((row) => row.includes("api_key.create"))).toBe(true);

    // A HEAD through request(): no body to read, and answered as such rather than failing to parse one.
    await expect(client.request("HEAD", "/api/v1/audit-logs/export", { query: { format: "csv" } })).resolves.toBe(
      undefined,
    );

    let verdict = await client.auditLogs.verify();
    for (let i = 0; i < 20 && verdict.ok && !verdict.complete && verdict.next; i++) {
      verdict = await client.auditLogs.verify(verdict.next);
    }
    expect(verdict).toMatchObject({ ok: true, complete: true, first_broken: null });
  });

  it("lists dead letters and tells why an unknown one is not replayed", async () => {
    const letters = await client.deadLetters.list({ limit: 5 });
    expect(letters).toMatchObject({ data: [], next_cursor: null });
    // The route's filters, `replayed` among them (sent as `true` or `false`).
    for (const replayed of [true, false]) {
      await expect(
        client.deadLetters.list({ replayed, error_type: "timeout", task_id: "task_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3" }),
      ).resolves.toMatchObject({ data: [], next_cursor: null });
    }
    const replay = await client.deadLetters.replay({ ids: ["dlq_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3"] });
    expect(replay.replayed).toEqual([]);
    expect(replay.skipped).toMatchObject([{ dead_letter_id: "dlq_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3" }]);
  });
});
