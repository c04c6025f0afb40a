import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { createDb } from "../../src/db/client.ts";
import { TenantDb } from "../../src/db/tenant.ts";
import type { UsageRecord } from "../../src/llm/router.ts";
import { d1UsageSink, findCharge, usageSummary } from "../../src/llm/usage.ts";

/** The usage sink's batched write against the real D1: every field of every row lands, once per charge key. */

function record(workspaceId: string, chargeKey: string, overrides: Partial<UsageRecord> = {}): UsageRecord {
  return {
    workspaceId,
    chargeKey,
    taskId: null,
    runId: null,
    requestId: null,
    provider: "openai",
    model: "gpt-4o-mini",
    usage: { prompt_tokens: 21, completion_tokens: 2, total_tokens: 23 },
    costUsd: 0.000004350000000000001,
    simulated: false,
    latencyMs: 3,
    ...overrides,
  };
}

describe("d1UsageSink", () => {
  it("writes a batch of rows with their nulls, numbers and flags as given, skipping charge keys already written", async () => {
    const workspaceId = `ws_usage_${crypto.randomUUID()}`;
    const sink = d1UsageSink(env.DB);
    await sink.record(record(workspaceId, "earlier", { costUsd: 1 }));

    // Added together, these share one batch: the first add gets the batch's write to wait on.
    const written = sink.record(
      record(workspaceId, "a", { taskId: "task_1", runId: "run_1", requestId: "req_1", simulated: true }),
    );
    void sink.record(
      record(workspaceId, "b", {
        provider: "anthropic",
        model: "claude-3-5-haiku",
        usage: { prompt_tokens: 21, completion_tokens: 2, total_tokens: 23, cached_prompt_tokens: 16 },
        costUsd: 0.1 + 0.2,
        estimated: true,
      }),
    );
    void sink.record(record(workspaceId, "a", { costUsd: 99 }));
    void sink.record(record(workspaceId, "earlier", { costUsd: 99 }));
    await written;

    const db = createDb(env.DB);
    const a = await findCharge(db, workspaceId, "a");
    expect(a).toMatchObject({
      taskId: "task_1",
      runId: "run_1",
      requestId: "req_1",
      provider: "openai",
      model: "gpt-4o-mini",
      promptTokens: 21,
      completionTokens: 2,
      totalTokens: 23,
      costUsd: 0.000004350000000000001,
      simulated: true,
      estimated: false,
      day: new Date().toISOString().slice(0, 10),
    });
    const b = await findCharge(db, workspaceId, "b");
    expect(b).toMatchObject({
      taskId: null,
      runId: null,
      requestId: null,
      provider: "anthropic",
      cachedPromptTokens: 16,
      simulated: false,
      estimated: true,
    });
    expect(a?.cachedPromptTokens).toBe(0);
    expect(b?.costUsd).toBe(0.1 + 0.2);
    expect((await findCharge(db, workspaceId, "earlier"))?.costUsd).toBe(1);
    const { results } = await env.DB.prepare(
      "SELECT charge_key, count(*) AS n FROM usage_records WHERE workspace_id = ? GROUP BY charge_key ORDER BY charge_key",
    )
      .bind(workspaceId)
      .all<{ charge_key: string; n: number }>();
    expect(results).toEqual([
      { charge_key: "a", n: 1 },
      { charge_key: "b", n: 1 },
      { charge_key: "earlier", n: 1 },
    ]);

    // The daily sums count each charge once too: the repeated keys added nothing.
    const day = new Date().toISOString().slice(0, 10);
    const tokens = { prompt_tokens: 21, cached_prompt_tokens: 0, completion_tokens: 2, total_tokens: 23 };
    const counted = { calls: 1, estimated_calls: 0, timed_out_attempts: 0, interrupted_attempts: 0 };
    expect(await usageSummary(new TenantDb(db, workspaceId), { fromDay: day, toDay: day })).toEqual([
      {
        day,
        provider: "anthropic",
        model: "claude-3-5-haiku",
        simulated: false,
        ...counted,
        estimated_calls: 1,
        ...tokens,
        cached_prompt_tokens: 16,
        cost_usd: 0.3,
      },
      {
        day,
        provider: "openai",
        model: "gpt-4o-mini",
        simulated: false,
        ...counted,
        ...tokens,
        cost_usd: 1,
      },
      {
        day,
        provider: "openai",
        model: "gpt-4o-mini",
        simulated: true,
        ...counted,
        ...tokens,
        cost_usd: 0.00000435,
      },
    ]);
    await sink.record(record(workspaceId, "c", { costUsd: 0.5 }));
    const [, openai] = await usageSummary(new TenantDb(db, workspaceId), { fromDay: day, toDay: day });
    expect(openai).toMatchObject({ simulated: false, calls: 2, total_tokens: 46, cost_usd: 1.5 });
  });

  it("counts a timed-out or interrupted attempt's row apart from calls, by its flag, with its tokens and cost in the sums", async () => {
    const workspaceId = `ws_usage_${crypto.randomUUID()}`;
    const sink = d1UsageSink(env.DB);
    const prompt = { prompt_tokens: 9, completion_tokens: 0, total_tokens: 9 };
    const attempt = { usage: prompt, costUsd: 0.25, estimated: true, timedOut: true };
    const written = sink.record(record(workspaceId, "run_1:1", { costUsd: 1 }));
    void sink.record(record(workspaceId, "run_1:1:timed-out:1", attempt));
    void sink.record(record(workspaceId, "run_1:1:timed-out:2", attempt));
    // Written twice (a retried consumer): counted once.
    void sink.record(record(workspaceId, "run_1:1:timed-out:2", attempt));
    // A call whose key only looks like an attempt's (a client's X-Request-Id is part of a completion's key) is a call.
    void sink.record(record(workspaceId, "api:req:timed-out:3:01JCALL", { costUsd: 0.5, estimated: true }));
    // An attempt that broke mid-answer: its prompt and what was written.
    const broken = { prompt_tokens: 9, completion_tokens: 4, total_tokens: 13 };
    const interrupted = { usage: broken, costUsd: 0.125, estimated: true, interrupted: true };
    void sink.record(record(workspaceId, "run_1:1:interrupted:3", interrupted));
    void sink.record(record(workspaceId, "run_1:1:interrupted:3", interrupted));
    await written;
    await sink.record(record(workspaceId, "run_2:1:timed-out:1", attempt));

    const day = new Date().toISOString().slice(0, 10);
    const db = createDb(env.DB);
    expect(await usageSummary(new TenantDb(db, workspaceId), { fromDay: day, toDay: day })).toEqual([
      {
        day,
        provider: "openai",
        model: "gpt-4o-mini",
        simulated: false,
        calls: 2,
        estimated_calls: 1,
        timed_out_attempts: 3,
        interrupted_attempts: 1,
        prompt_tokens: 21 + 21 + 3 * 9 + 9,
        cached_prompt_tokens: 0,
        completion_tokens: 2 + 2 + 4,
        total_tokens: 23 + 23 + 3 * 9 + 13,
        cost_usd: 1 + 0.5 + 3 * 0.25 + 0.125,
      },
    ]);
    expect(await findCharge(db, workspaceId, "run_1:1:timed-out:1")).toMatchObject({
      promptTokens: 9,
      estimated: true,
    });
  });
});

describe("d1UsageSink at midnight (UTC)", () => {
  it("counts a call on the day it was recorded, not the day its batch was written", async () => {
    const workspaceId = `ws_usage_${crypto.randomUUID()}`;
    const sink = d1UsageSink(env.DB);
    vi.useFakeTimers({ toFake: ["Date"] });
    try {
      vi.setSystemTime(new Date("2026-03-31T23:59:59.900Z"));
      const written = sink.record(record(workspaceId, "late", { costUsd: 0.5 }));
      // The batch goes out after its delay, in the next day (and month).
      vi.setSystemTime(new Date("2026-04-01T00:00:00.600Z"));
      await written;
    } finally {
      vi.useRealTimers();
    }
    const tenant = new TenantDb(createDb(env.DB), workspaceId);
    const rows = await usageSummary(tenant, { fromDay: "2026-03-31", toDay: "2026-04-01" });
    expect(rows.map((row) => [row.day, row.calls, row.cost_usd])).toEqual([["2026-03-31", 1, 0.5]]);
    expect(await findCharge(createDb(env.DB), workspaceId, "late")).toMatchObject({ day: "2026-03-31" });
  });
});

describe("usage_records indexes", () => {
  it("a task's usage is one range of the task index, which holds only rows that have a task", async () => {
    const plan = await env.DB.prepare(
      "EXPLAIN QUERY PLAN SELECT charge_key FROM usage_records WHERE workspace_id = ? AND task_id = ?",
    )
      .bind("ws_plan", "task_1")
      .all<{ detail: string }>();
    expect(plan.results.map((step) => step.detail).join("\n")).toContain(
      "USING INDEX usage_records_workspace_task_idx (workspace_id=? AND task_id=?)",
    );
    // Partial: a call without a task (an OpenAI-compatible completion) adds no entry to it.
    const index = await env.DB.prepare("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?")
      .bind("usage_records_workspace_task_idx")
      .first<{ sql: string }>();
    expect(index?.sql).toMatch(/WHERE "usage_records"\."task_id" IS NOT NULL$/);
  });

  it("a call's row is written to its table and its (workspace, charge key) key, nothing else", async () => {
    // Each index entry is a row written (and billed) in D1; the partial task index is skipped for calls without a task.
    const { results } = await env.DB.prepare(
      "SELECT name, origin, partial FROM pragma_index_list('usage_records') ORDER BY name",
    ).all<{ name: string; origin: string; partial: number }>();
    expect(results).toEqual([
      { name: "sqlite_autoindex_usage_records_1", origin: "pk", partial: 0 },
      { name: "usage_records_workspace_task_idx", origin: "c", partial: 1 },
    ]);
    const key = await env.DB.prepare("SELECT name FROM pragma_index_info('sqlite_autoindex_usage_records_1')").all<{
      name: string;
    }>();
    expect(key.results.map((column) => column.name)).toEqual(["workspace_id", "charge_key"]);
  });

  it("the usage summary reads a range of the workspace's daily sums, not its calls", async () => {
    const plan = await env.DB.prepare(
      "EXPLAIN QUERY PLAN SELECT * FROM usage_daily WHERE workspace_id = ? AND day >= ? AND day <= ? ORDER BY day, provider, model, simulated",
    )
      .bind("ws_plan", "2026-11-01", "2026-11-30")
      .all<{ detail: string }>();
    const steps = plan.results.map((step) => step.detail).join("\n");
    expect(steps).toContain(
      "SEARCH usage_daily USING INDEX sqlite_autoindex_usage_daily_1 (workspace_id=? AND day>? AND day<?)",
    );
    expect(steps).not.toContain("usage_records");
    expect(steps).not.toContain("TEMP B-TREE");
  });
});
