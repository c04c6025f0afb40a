import { describe, expect, it } from "vitest";
import { MgxClient } from "../../sdk/index.ts";

/**
 * The SDK under Node's own timers, which the workers project (workerd) does not have: a delay past 2^31 − 1 ms
 * fires after 1 ms there (TimeoutOverflowWarning), as in browsers. No server: a scripted fetch answers.
 */

const task = { id: "task_1", title: "t", type: "testing", status: "running" };

describe("MgxClient under Node", () => {
  it("tasks.wait with timeoutMs Infinity waits on for the task's end, not a TimeoutError after 1 ms", async () => {
    const answers = [
      Response.json(task),
      ...Array.from({ length: 3 }, () => Response.json(task)),
      Response.json({ ...task, status: "completed" }),
    ];
    let reads = 0;
    const client = new MgxClient({
      baseUrl: "http://api.test",
      fetch: (async () => {
        reads++;
        return answers.shift() ?? Response.json({ ...task, status: "completed" });
      }) as typeof fetch,
    });
    await expect(
      client.tasks.wait("task_1", { intervalMs: 20, timeoutMs: Number.POSITIVE_INFINITY }),
    ).resolves.toMatchObject({ status: "completed" });
    expect(reads).toBe(5);
  });
});
