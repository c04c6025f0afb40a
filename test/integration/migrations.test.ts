import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";

/**
 * D1 migrations that move data, run against rows written under the schema
 * before them. The tests share one database and run in order, each migrating
 * it further; each uses workspaces of its own.
 */

function migrationsBefore(name: string) {
  const index = env.TEST_MIGRATIONS.findIndex((migration) => migration.name.startsWith(name));
  if (index === -1) throw new Error(`no migration ${name}`);
  return { before: env.TEST_MIGRATIONS.slice(0, index), from: env.TEST_MIGRATIONS.slice(0, index + 1) };
}

describe("0003_usage_records_natural_key", () => {
  it("keeps every usage row, without its id, under the (workspace, charge key) key", async () => {
    const db = env.MIGRATIONS_TEST_DB;
    const { before, from } = migrationsBefore("0003_");
    await applyD1Migrations(db, before);
    await db
      .prepare(
        `INSERT INTO usage_records (id, workspace_id, charge_key, task_id, provider, model, prompt_tokens, completion_tokens, total_tokens, cost_usd, simulated, day, request_id)
         VALUES ('use_1', 'ws_keyed', 'run_1:1', 'task_1', 'openai', 'gpt-4o-mini', 10, 5, 15, 0.25, 0, '2026-11-24', 'req_1')`,
      )
      .run();

    await applyD1Migrations(db, from);

    const row = await db.prepare("SELECT * FROM usage_records").first();
    expect(row).toMatchObject({
      workspace_id: "ws_keyed",
      charge_key: "run_1:1",
      task_id: "task_1",
      total_tokens: 15,
      cost_usd: 0.25,
      request_id: "req_1",
    });
    expect(row).not.toHaveProperty("id");
    // The key still refuses a second row for the charge.
    await expect(
      db
        .prepare(
          `INSERT INTO usage_records (workspace_id, charge_key, provider, model, prompt_tokens, completion_tokens, total_tokens, cost_usd, day)
           VALUES ('ws_keyed', 'run_1:1', 'openai', 'gpt-4o-mini', 1, 1, 2, 0, '2026-11-24')`,
        )
        .run(),
    ).rejects.toThrow(/UNIQUE constraint failed/);
  });
});

describe("0004_usage_daily", () => {
  it("fills the daily sums from the usage rows written before it", async () => {
    const db = env.MIGRATIONS_TEST_DB;
    const { before, from } = migrationsBefore("0004_");
    await applyD1Migrations(db, before);
    const insert = db.prepare(
      `INSERT INTO usage_records (workspace_id, charge_key, provider, model, prompt_tokens, completion_tokens, total_tokens, cost_usd, simulated, day)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    await db.batch([
      insert.bind("ws_a", "c1", "openai", "gpt-4o-mini", 10, 5, 15, 0.25, 0, "2026-11-24"),
      insert.bind("ws_a", "c2", "openai", "gpt-4o-mini", 20, 5, 25, 0.5, 0, "2026-11-24"),
      insert.bind("ws_a", "c3", "openai", "gpt-4o-mini", 1, 1, 2, 0, 1, "2026-11-24"),
      insert.bind("ws_a", "c4", "anthropic", "claude-3-5-haiku", 7, 3, 10, 0.125, 0, "2026-11-25"),
      insert.bind("ws_b", "c1", "openai", "gpt-4o-mini", 100, 50, 150, 2, 0, "2026-11-24"),
    ]);

    await applyD1Migrations(db, from);

    const { results } = await db
      .prepare(
        "SELECT * FROM usage_daily WHERE workspace_id IN ('ws_a', 'ws_b') ORDER BY workspace_id, day, provider, model, simulated",
      )
      .all();
    expect(results).toEqual([
      {
        workspace_id: "ws_a",
        day: "2026-11-24",
        provider: "openai",
        model: "gpt-4o-mini",
        simulated: 0,
        calls: 2,
        prompt_tokens: 30,
        completion_tokens: 10,
        total_tokens: 40,
        cost_usd: 0.75,
      },
      {
        workspace_id: "ws_a",
        day: "2026-11-24",
        provider: "openai",
        model: "gpt-4o-mini",
        simulated: 1,
        calls: 1,
        prompt_tokens: 1,
        completion_tokens: 1,
        total_tokens: 2,
        cost_usd: 0,
      },
      {
        workspace_id: "ws_a",
        day: "2026-11-25",
        provider: "anthropic",
        model: "claude-3-5-haiku",
        simulated: 0,
        calls: 1,
        prompt_tokens: 7,
        completion_tokens: 3,
        total_tokens: 10,
        cost_usd: 0.125,
      },
      {
        workspace_id: "ws_b",
        day: "2026-11-24",
        provider: "openai",
        model: "gpt-4o-mini",
        simulated: 0,
        calls: 1,
        prompt_tokens: 100,
        completion_tokens: 50,
        total_tokens: 150,
        cost_usd: 2,
      },
    ]);
    // The rows themselves are untouched.
    const rows = await db
      .prepare("SELECT count(*) AS n FROM usage_records WHERE workspace_id IN ('ws_a', 'ws_b')")
      .first<{ n: number }>();
    expect(rows?.n).toBe(5);
  });
});
