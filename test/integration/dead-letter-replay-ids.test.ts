import { env } from "cloudflare:workers";
import { inArray } from "drizzle-orm";
import { beforeAll, describe, expect, it } from "vitest";
import { createDb } from "../../src/db/client.ts";
import { tasks } from "../../src/db/schema.ts";
import { createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";
import { BASE, fetcher, insertDeadLetter } from "../unit/tasks/fakes.ts";

/** POST /api/v1/dead-letters/replay with `ids`: every id named is replayed or skipped for what it is. */

const db = createDb(env.DB);
let workspace: TestWorkspace;
beforeAll(async () => {
  workspace = await createTestWorkspace(fetcher, BASE, { name: "dead-letter replay by id" });
});

describe("replaying dead letters by id", () => {
  it("replays every id named, whatever `limit` says (it bounds a filter), and never calls one that exists not_found", async () => {
    const letters = [
      await insertDeadLetter(workspace.id, "2025-01-01T00:00:01.000Z"),
      await insertDeadLetter(workspace.id, "2025-01-01T00:00:02.000Z"),
      await insertDeadLetter(workspace.id, "2025-01-01T00:00:03.000Z"),
    ];
    const response = await fetcher(`${BASE}/api/v1/dead-letters/replay`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ ids: letters.map((letter) => letter.id), limit: 1 }),
    });
    expect(response.status).toBe(200);
    const outcome = (await response.json()) as {
      replayed: { dead_letter_id: string }[];
      skipped: { dead_letter_id: string; reason: string }[];
    };
    expect(outcome.skipped).toEqual([]);
    expect(outcome.replayed.map((entry) => entry.dead_letter_id).sort()).toEqual(
      letters.map((letter) => letter.id).sort(),
    );
    const rows = await db
      .select({ status: tasks.status })
      .from(tasks)
      .where(
        inArray(
          tasks.id,
          letters.map((letter) => letter.taskId),
        ),
      );
    expect(rows.map((row) => row.status).sort()).not.toContain("dead_lettered");
  });

  it("answers an id named twice once: replayed once, or skipped once", async () => {
    const letter = await insertDeadLetter(workspace.id, "2025-01-02T00:00:00.000Z");
    const missing = "dlq_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3";
    const response = await fetcher(`${BASE}/api/v1/dead-letters/replay`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ ids: [letter.id, missing, letter.id, missing] }),
    });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      replayed: [{ dead_letter_id: letter.id, task_id: letter.taskId, status: expect.any(String) }],
      skipped: [{ dead_letter_id: missing, task_id: null, reason: "not_found" }],
    });
  });
});
