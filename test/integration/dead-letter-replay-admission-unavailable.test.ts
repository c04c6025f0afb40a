import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { beforeAll, describe, expect, it } from "vitest";
import { createApp } from "../../src/app.ts";
import { createDb } from "../../src/db/client.ts";
import { deadLetters, tasks } from "../../src/db/schema.ts";
import { limiterFailing } from "../support/limiter.ts";
import { createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";
import { BASE, fetcher, insertDeadLetter } from "../unit/tasks/fakes.ts";

/**
 * POST /api/v1/dead-letters/replay while task admission (the workspace's limiter) fails to answer: a retryable 503
 * that says so, as POST /api/v1/tasks answers then, not a 500. The letter and its task stay as they were, so the
 * same request, repeated once the limiter answers, replays it.
 */

const app = createApp();
const db = createDb(env.DB);
let workspace: TestWorkspace;
beforeAll(async () => {
  workspace = await createTestWorkspace(fetcher, BASE, { name: "replay without admission" });
});

const admissionFails = limiterFailing(["submitTask"]);

async function replay(ids: string[], limiter: typeof env.WORKSPACE_LIMITER | undefined): Promise<Response> {
  const ctx = createExecutionContext();
  const response = await app.fetch(
    new Request(`${BASE}/api/v1/dead-letters/replay`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ ids }),
    }),
    limiter ? { ...env, WORKSPACE_LIMITER: limiter } : env,
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return response;
}

describe("replaying dead letters while task admission is unavailable", () => {
  it("answers a retryable 503 problem, changes nothing, and the repeated request replays", async () => {
    const { id: letterId, taskId } = await insertDeadLetter(workspace.id, "2025-02-01T00:00:00.000Z");

    const refused = await replay([letterId], admissionFails);
    expect(refused.status).toBe(503);
    expect(refused.headers.get("Content-Type")).toBe("application/problem+json");
    expect(refused.headers.get("Retry-After")).toMatch(/^\d+$/);
    expect(await refused.json()).toMatchObject({ status: 503, code: "DEPENDENCY_UNAVAILABLE" });
    const [letter] = await db.select().from(deadLetters).where(eq(deadLetters.id, letterId));
    expect(letter.replayedAt).toBeNull();
    const [row] = await db.select().from(tasks).where(eq(tasks.id, taskId));
    expect(row.status).toBe("dead_lettered");

    const replayed = await replay([letterId], undefined);
    expect(replayed.status).toBe(200);
    expect(((await replayed.json()) as { replayed: { dead_letter_id: string }[] }).replayed).toEqual([
      expect.objectContaining({ dead_letter_id: letterId, task_id: taskId }),
    ]);
  });
});
