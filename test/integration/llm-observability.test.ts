import { createExecutionContext, createMessageBatch, getQueueResult, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { afterEach, describe, expect, it, vi } from "vitest";
import { EventHub } from "../../durable-objects/event-hub.ts";
import { createApp } from "../../src/app.ts";
import { createDb } from "../../src/db/client.ts";
import { taskRuns } from "../../src/db/schema.ts";
import { SimulatedAdapter } from "../../src/llm/adapters/simulated.ts";
import { Router } from "../../src/llm/router.ts";
import { handleQueueBatch } from "../../src/queues/consumer.ts";
import {
  ANTHROPIC_URL,
  anthropicMessage,
  BASE,
  eventsOf,
  fakeUpstreams,
  fetcher,
  OPENAI_URL,
  openAiCompletion,
  postChat,
  problem,
  usageWhenWritten,
  workspaceWith,
} from "../support/llm.ts";
import { recordSentryReports, TEST_SENTRY_DSN } from "../support/sentry.ts";
import { insertTask, taskBody } from "../unit/tasks/fakes.ts";

/** What an operator and a caller can tell of an LLM call: its events, and a bug's report. */

afterEach(() => vi.restoreAllMocks());

const chat = postChat;

describe("the events of a call", () => {
  it("carry the caller's X-Request-Id, so it can tell which of its calls they came from", async () => {
    // A first target that always fails, then one that answers: an llm.provider.error per attempt and a fallback.
    const workspace = await workspaceWith(
      {
        strategy: "fallback",
        chain: [
          { provider: "simulated", model: "sim-1?failure_rate=1&failure_status=500" },
          { provider: "simulated", model: "sim-1?completion_tokens=60" },
        ],
      },
      { daily_tokens: 100, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null },
    );
    const requestId = "caller-request-0001";
    const lines: string[] = [];
    vi.spyOn(console, "log").mockImplementation((line: unknown) => void lines.push(String(line)));
    const response = await chat(
      { ...workspace.headers, "X-Request-Id": requestId },
      { model: "auto", messages: [{ role: "user", content: "hi" }] },
    );
    expect(response.status).toBe(200);
    expect(response.headers.get("X-Request-Id")).toBe(requestId);

    const errors = await eventsOf(workspace, "llm.provider.error", 1);
    const fallbacks = await eventsOf(workspace, "llm.provider.fallback", 1);
    // The call's 60 tokens of answer cross 50% of the 100-token day, told by the workspace's limiter.
    const reached = await eventsOf(workspace, "billing.threshold.reached", 1);
    expect(errors.length).toBeGreaterThan(0);
    expect(fallbacks).toHaveLength(1);
    expect(reached.length).toBeGreaterThan(0);
    for (const event of [...errors, ...fallbacks, ...reached]) {
      expect(event, event.event_type).toMatchObject({ request_id: requestId });
    }
    // The limiter's log line of the crossing names the request and its trace, as the request's own lines do.
    const logged = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    const accessLine = logged.find((line) => line.msg === "request completed" && line.request_id === requestId);
    const crossing = logged.find((line) => line.msg === "budget threshold reached");
    expect(crossing).toMatchObject({ request_id: requestId, trace_id: accessLine?.trace_id });
  });

  it("carry it for a task's submission too (task.created)", async () => {
    const workspace = await workspaceWith(null);
    const requestId = "caller-request-0002";
    const submitted = await fetcher(`${BASE}/api/v1/tasks`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json", "X-Request-Id": requestId },
      body: JSON.stringify({ title: "Build the bundle", type: "code_generation" }),
    });
    expect(submitted.status).toBe(202);
    const [created] = await eventsOf(workspace, "task.created", 1);
    expect(created).toMatchObject({ request_id: requestId });
  });

  it("are described whole by GET /api/v1/events/schema: the simulated label, and which budget a billing alert is of", async () => {
    const workspace = await workspaceWith(null);
    const response = await fetcher(`${BASE}/api/v1/events/schema`, { headers: workspace.headers });
    expect(response.status).toBe(200);
    const schema = (await response.json()) as { $defs: Record<string, any> };
    const dataOf = (name: string) => schema.$defs[name].properties.data.properties;
    expect(schema.$defs.envelope.properties.request_id).toMatchObject({ type: "string" });
    for (const name of ["llm.provider.error@1.0", "llm.provider.error@1.1", "llm.provider.fallback@1.0"]) {
      expect(dataOf(name).simulated, name).toEqual({ type: "boolean" });
    }
    for (const name of ["billing.threshold.reached@1.0", "billing.usage_alert@1.0"]) {
      // current_usage and threshold are tokens or US dollars: metric says which.
      expect(dataOf(name).metric, name).toEqual({ type: "string", enum: ["tokens", "cost_usd"] });
      expect(dataOf(name).threshold_percent, name).toMatchObject({ type: "integer" });
    }
  });
});

describe("a task run's unexpected error", () => {
  it("reaches Sentry, tagged with the task, run and workspace, as a request's does with its request id", async () => {
    const workspace = await workspaceWith(null);
    const row = await insertTask(workspace.id);
    // A bug in the call path (not a provider's failure, which the router turns into an LlmError).
    vi.spyOn(Router.prototype, "chat").mockRejectedValue(new TypeError("settings.chain is not iterable"));
    const reports = recordSentryReports();
    const batch = createMessageBatch("tasks", [
      { id: "msg-unexpected", timestamp: new Date(), attempts: 1, body: taskBody(workspace.id, row.id) },
    ]);
    const ctx = createExecutionContext();
    await handleQueueBatch(batch, { ...env, SENTRY_DSN: TEST_SENTRY_DSN }, ctx);
    await waitOnExecutionContext(ctx);
    // The run is retried, as an unexplained failure is.
    expect((await getQueueResult(batch, ctx)).retryMessages).toEqual([{ msgId: "msg-unexpected" }]);
    const report = reports.find((body) => body.includes("settings.chain is not iterable"));
    expect(report, `${reports.length} reports`).toBeDefined();
    const [run] = await createDb(env.DB).select().from(taskRuns).where(eq(taskRuns.taskId, row.id));
    expect(report).toContain(`"task_id":"${row.id}"`);
    expect(report).toContain(`"run_id":"${run.id}"`);
    expect(report).toContain(`"workspace_id":"${workspace.id}"`);
  });
});

describe("a bug in a call's attempt", () => {
  it("is reported to Sentry with the request id, not only told to the caller as a provider's connection failure", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [
        { provider: "simulated", model: "sim-1?latency_ms=1" },
        { provider: "simulated", model: "sim-1" },
      ],
    });
    const realComplete = SimulatedAdapter.prototype.complete;
    // The adapter breaks on its first target's answer (as a parser meeting a shape it did not expect); the
    // call still fails over to the next target, which answers.
    vi.spyOn(SimulatedAdapter.prototype, "complete").mockImplementation(function (this: SimulatedAdapter, call) {
      if (call.model.includes("latency_ms"))
        throw new TypeError("Cannot read properties of undefined (reading 'text')");
      return realComplete.call(this, call);
    });
    const reports = recordSentryReports();
    const requestId = "caller-request-bug-0001";
    const ctx = createExecutionContext();
    const response = await createApp().fetch(
      new Request(`${BASE}/api/v1/llm/chat/completions`, {
        method: "POST",
        headers: { ...workspace.headers, "Content-Type": "application/json", "X-Request-Id": requestId },
        // A short answer, asked whole (complete), as the spy above expects.
        body: JSON.stringify({ model: "auto", messages: [{ role: "user", content: "hi" }], max_tokens: 16 }),
      }),
      { ...env, SENTRY_DSN: TEST_SENTRY_DSN },
      ctx,
    );
    expect(response.status).toBe(200);
    await waitOnExecutionContext(ctx);
    const report = reports.find((body) => body.includes("reading 'text'"));
    expect(report, `${reports.length} reports`).toBeDefined();
    expect(report).toContain(`"request_id":"${requestId}"`);
    expect(report).toContain(`"workspace_id":"${workspace.id}"`);
    expect(report).not.toContain(workspace.key);
  });
});

describe("a failed attempt's log line", () => {
  it("names the provider's own id for the request it refused, which its support asks for", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [
        { provider: "openai", model: "gpt-4o-mini-request-ids" },
        { provider: "anthropic", model: "claude-3-5-haiku-latest" },
      ],
    });
    const fake = fakeUpstreams({
      "openai.test": () => problem(500, { "x-request-id": "req_7f3a9c0e2b" }),
      "anthropic.test": (_request, call) =>
        call === 1
          ? Response.json(
              { type: "error", error: { type: "overloaded_error", message: "Overloaded" } },
              { status: 529, headers: { "request-id": "req_011CSHoEeqs5C35K2UUqR7Fy" } },
            )
          : anthropicMessage("from claude"),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const lines: string[] = [];
    vi.spyOn(console, "log").mockImplementation((line: unknown) => void lines.push(String(line)));
    const response = await createApp().fetch(
      new Request(`${BASE}/api/v1/llm/chat/completions`, {
        method: "POST",
        headers: { ...workspace.headers, "Content-Type": "application/json" },
        body: JSON.stringify({ model: "auto", messages: [{ role: "user", content: "hi" }] }),
      }),
      {
        ...env,
        OPENAI_API_KEY: "sk-test",
        OPENAI_BASE_URL: OPENAI_URL,
        ANTHROPIC_API_KEY: "ak-test",
        ANTHROPIC_BASE_URL: ANTHROPIC_URL,
      },
      createExecutionContext(),
    );
    expect(response.status).toBe(200);
    const failed = lines
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((line) => line.msg === "llm attempt failed");
    expect(failed.map((line) => [line.provider, line.status, line.provider_request_id])).toEqual([
      ["openai", 500, "req_7f3a9c0e2b"],
      ["openai", 500, "req_7f3a9c0e2b"],
      ["openai", 500, "req_7f3a9c0e2b"],
      ["anthropic", 529, "req_011CSHoEeqs5C35K2UUqR7Fy"],
    ]);
  });
});

describe("a call's events", () => {
  it("land in the order they happened, even when the hub misses the first one for a moment", async () => {
    // A 400 fails over at once: the provider's error and the fallback are told back to back.
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [
        { provider: "simulated", model: "sim-1?failure_rate=1&failure_status=400" },
        { provider: "simulated", model: "sim-1" },
      ],
    });
    const publish = EventHub.prototype.publish;
    let missed = false;
    vi.spyOn(EventHub.prototype, "publish").mockImplementation(function (this: EventHub, event) {
      if (event.event_type === "llm.provider.error" && !missed) {
        missed = true;
        return Promise.reject(new Error("Durable Object reset because its code was updated."));
      }
      return publish.call(this, event);
    });
    const response = await chat(workspace.headers, { model: "auto", messages: [{ role: "user", content: "hi" }] });
    expect(response.status).toBe(200);
    const events = await eventsOf(workspace, "llm.*", 2);
    expect(missed).toBe(true);
    expect(events.map((event) => event.event_type)).toEqual(["llm.provider.error", "llm.provider.fallback"]);
  });
});

describe("the upstream call", () => {
  it("carries the request's id to OpenAI as X-Client-Request-Id, which its support can look the call up by", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "openai", model: "gpt-4o-mini-client-ids" }],
    });
    const fake = fakeUpstreams({ "openai.test": () => openAiCompletion("done") });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const config = {
      ...env,
      OPENAI_API_KEY: "sk-test",
      OPENAI_BASE_URL: OPENAI_URL,
    };
    const send = (headers: Record<string, string>) =>
      createApp().fetch(
        new Request(`${BASE}/api/v1/llm/chat/completions`, {
          method: "POST",
          headers: { ...workspace.headers, "Content-Type": "application/json", ...headers },
          body: JSON.stringify({ model: "auto", messages: [{ role: "user", content: "hi" }] }),
        }),
        config,
        createExecutionContext(),
      );
    const named = await send({ "X-Request-Id": "caller-request-upstream-1" });
    expect(named.status).toBe(200);
    // Without one of the caller's, the id the answer's X-Request-Id gives.
    const unnamed = await send({});
    expect(unnamed.status).toBe(200);
    expect(fake.calls["openai.test"].map((request) => request.headers.get("X-Client-Request-Id"))).toEqual([
      "caller-request-upstream-1",
      unnamed.headers.get("X-Request-Id"),
    ]);
  });
});

describe("a model named by its settings alone", () => {
  it("is told as its provider's default model: its events are published, not refused as invalid and reported", async () => {
    const workspace = await workspaceWith(null);
    const reports = recordSentryReports();
    const send = async (model: string) => {
      const ctx = createExecutionContext();
      const response = await createApp().fetch(
        new Request(`${BASE}/api/v1/llm/chat/completions`, {
          method: "POST",
          headers: { ...workspace.headers, "Content-Type": "application/json" },
          body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }] }),
        }),
        { ...env, SENTRY_DSN: TEST_SENTRY_DSN },
        ctx,
      );
      const body = (await response.json()) as { model: string };
      await waitOnExecutionContext(ctx);
      return { status: response.status, body };
    };
    // Tried first and failing, then the default chain's sim-1 answers.
    expect((await send("simulated:?failure_rate=1&failure_status=500")).status).toBe(200);
    const errors = await eventsOf(workspace, "llm.provider.error", 3);
    expect(errors.map((event) => event.data.model)).toEqual(["sim-1", "sim-1", "sim-1"]);
    const [fallback] = await eventsOf(workspace, "llm.provider.fallback", 1);
    expect(fallback?.data).toMatchObject({ from_model: "sim-1", to_model: "sim-1" });
    // Served itself, its answer and usage row name the model too.
    const served = await send("simulated:?latency_ms=1");
    expect(served).toMatchObject({ status: 200, body: { model: "sim-1" } });
    const usage = await usageWhenWritten(workspace);
    expect(usage.data.map((row: { model: string }) => row.model)).toEqual(["sim-1"]);
    expect(reports).toEqual([]);
  });
});

describe("a stream the provider cuts mid-answer", () => {
  it("is logged as a failed attempt naming the provider and model, as one that fails before its answer is", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "simulated", model: "sim-1?stream_chunks=8&cut_after_chunks=3" }],
    });
    const lines: string[] = [];
    vi.spyOn(console, "log").mockImplementation((line: unknown) => void lines.push(String(line)));
    const response = await chat(
      { ...workspace.headers, "X-Request-Id": "caller-request-cut-0001" },
      { model: "auto", stream: true, messages: [{ role: "user", content: "hi" }] },
    );
    expect(response.status).toBe(200);
    expect(await response.text()).toContain('"error"');
    const failed = lines
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((line) => line.msg === "llm attempt failed");
    expect(failed).toEqual([
      expect.objectContaining({
        request_id: "caller-request-cut-0001",
        provider: "simulated",
        model: "sim-1",
        code: "connection",
        mid_stream: true,
      }),
    ]);
  });
});
