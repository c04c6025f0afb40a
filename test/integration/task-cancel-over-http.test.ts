import { describe, expect, it } from "vitest";
import { BASE, eventsOf, fetcher } from "../support/llm.ts";
import { createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";

/**
 * A running agent cancelled by a request of its own (POST /api/v1/tasks/{id}/cancel through exports.default.fetch,
 * as a client's is) in the isolate that runs it. The agent's queue batch runs in the queue invocation; the cancel
 * is another request. Aborted by the cancelling request, the agent's code went on in that request's context: the
 * batch then touched its own timers and writes from there, which workerd refuses ("Cannot perform I/O on behalf of
 * a different request"), so the batch failed, its tasks' ends were never written and they ran again.
 */

const SLOW = { model: "simulated:sim-1?latency_ms=2000" };

async function submit(workspace: TestWorkspace, title: string, agentConfig?: Record<string, unknown>) {
  const response = await fetcher(`${BASE}/api/v1/tasks`, {
    method: "POST",
    headers: { ...workspace.headers, "Content-Type": "application/json" },
    body: JSON.stringify({ title, type: "testing", ...(agentConfig ? { agent_config: agentConfig } : {}) }),
  });
  expect(response.status).toBe(202);
  return ((await response.json()) as { id: string }).id;
}

async function taskOf(workspace: TestWorkspace, id: string) {
  const response = await fetcher(`${BASE}/api/v1/tasks/${id}`, { headers: workspace.headers });
  return (await response.json()) as { status: string; attempts: number };
}

async function runsOf(workspace: TestWorkspace, id: string) {
  const response = await fetcher(`${BASE}/api/v1/tasks/${id}/runs`, { headers: workspace.headers });
  return ((await response.json()) as { data: { status: string }[] }).data.map((run) => run.status);
}

async function until(check: () => Promise<boolean>, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check()) && Date.now() < deadline) await new Promise((wake) => setTimeout(wake, 50));
}

describe("a running task cancelled over HTTP in the isolate that runs it", () => {
  it("stops; its batch's other tasks end once, with one run each", { timeout: 30_000 }, async () => {
    const workspace = await createTestWorkspace(fetcher, BASE, { name: "cancel over http" });
    // One queue batch: quick tasks beside slow ones, which are cancelled while their calls are at the provider.
    const quick = [await submit(workspace, "Quick 1"), await submit(workspace, "Quick 2")];
    const slow = [await submit(workspace, "Slow 1", SLOW), await submit(workspace, "Slow 2", SLOW)];
    await until(
      async () =>
        (await Promise.all(slow.map((id) => taskOf(workspace, id)))).every((task) => task.status === "running"),
      10_000,
    );

    const cancels = await Promise.all(
      slow.map(
        async (id) =>
          (await fetcher(`${BASE}/api/v1/tasks/${id}/cancel`, { method: "POST", headers: workspace.headers })).status,
      ),
    );
    expect(cancels).toEqual([202, 202]);
    const ended = async () =>
      (await Promise.all([...quick, ...slow].map((id) => taskOf(workspace, id)))).every((task) =>
        ["completed", "cancelled", "failed"].includes(task.status),
      );
    await until(ended, 10_000);
    // A batch that failed is delivered again a moment later: its tasks would run (and be charged) a second time.
    await new Promise((wake) => setTimeout(wake, 1_500));

    for (const id of slow) {
      expect(await taskOf(workspace, id)).toMatchObject({ status: "cancelled", attempts: 1 });
      expect(await runsOf(workspace, id)).toEqual(["cancelled"]);
    }
    for (const id of quick) {
      expect(await taskOf(workspace, id)).toMatchObject({ status: "completed", attempts: 1 });
      expect(await runsOf(workspace, id)).toEqual(["succeeded"]);
    }
    // Each task's end is told once: the failed batch never got to publish them (nor to give the slots back).
    const ends = await eventsOf(workspace, "task.completed,task.error", 4, 3_000);
    expect(ends.map((event) => `${event.task_id} ${event.event_type}`).sort()).toEqual(
      [...quick.map((id) => `${id} task.completed`), ...slow.map((id) => `${id} task.error`)].sort(),
    );
  });
});
