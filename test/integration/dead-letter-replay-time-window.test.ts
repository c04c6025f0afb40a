import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { beforeAll, describe, expect, it } from "vitest";
import { createDb } from "../../src/db/client.ts";
import { deadLetters } from "../../src/db/schema.ts";
import { createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";
import { BASE, fetcher, insertDeadLetter } from "../unit/tasks/fakes.ts";

/**
 * POST /api/v1/dead-letters/replay with `filter.created_after` / `created_before` given as a client writes a time
 * (whole seconds, or fewer fraction digits than the stored milliseconds): the window is compared as time.
 */

const db = createDb(env.DB);
let workspace: TestWorkspace;
beforeAll(async () => {
  workspace = await createTestWorkspace(fetcher, BASE, { name: "dead-letter replay window" });
});

async function replay(filter: Record<string, unknown>) {
  const response = await fetcher(`${BASE}/api/v1/dead-letters/replay`, {
    method: "POST",
    headers: { ...workspace.headers, "Content-Type": "application/json" },
    body: JSON.stringify({ filter }),
  });
  expect(response.status).toBe(200);
  const outcome = (await response.json()) as {
    replayed: { dead_letter_id: string }[];
    skipped: { dead_letter_id: string }[];
  };
  return [...outcome.replayed, ...outcome.skipped].map((entry) => entry.dead_letter_id);
}

describe("replaying dead letters by a time window", () => {
  it("compares times as times: a letter half a second past a whole-second bound is after it, not before", async () => {
    const letter = await insertDeadLetter(workspace.id, "2025-03-04T05:06:07.500Z");
    // Before 05:06:07 (whole seconds, as most clients write a time): the letter, recorded half a second later, is not.
    expect(await replay({ created_before: "2025-03-04T05:06:07Z" })).not.toContain(letter.id);
    expect(await replay({ created_after: "2025-03-04T05:06:08Z" })).not.toContain(letter.id);
    // Between 05:06:07 and 05:06:08: it is, and it is replayed.
    expect(await replay({ created_after: "2025-03-04T05:06:07Z", created_before: "2025-03-04T05:06:08Z" })).toEqual([
      letter.id,
    ]);
    const [stored] = await db.select().from(deadLetters).where(eq(deadLetters.id, letter.id));
    expect(stored.replayCount).toBe(1);
  });

  it("takes a bound with fewer fraction digits than the stored milliseconds as the same instant", async () => {
    const letter = await insertDeadLetter(workspace.id, "2025-06-07T08:09:10.510Z");
    expect(await replay({ created_after: "2025-06-07T08:09:10.5Z", created_before: "2025-06-07T08:09:11Z" })).toEqual([
      letter.id,
    ]);
  });
});
