import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestWorkspace, TEST_ADMIN_TOKEN, type TestWorkspace } from "../support/workspaces.ts";
import { startWorker, type WorkerProcess } from "./harness.ts";

/**
 * Task execution under `wrangler dev` with the offline `simulated` provider:
 * real Queues (with the dead-letter queue), the WorkspaceLimiter's admission,
 * D1, R2 and the event hubs, driven only through the public API.
 */

let worker: WorkerProcess;
beforeAll(async () => {
  worker = await startWorker({ vars: { ADMIN_TOKEN: TEST_ADMIN_TOKEN } });
});
afterAll(async () => {
  await worker?.stop();
});

const PRIORITIES = ["low", "medium", "high", "critical"] as const;
const TERMINAL = new Set(["completed", "failed", "cancelled", "dead_lettered"]);

interface Task {
  id: string;
  status: string;
  priority: string;
  started_at: string | null;
  finished_at: string | null;
  attempts: number;
}
interface Run {
  id: string;
  status: string;
  started_at: string;
  finished_at: string | null;
}

const url = (path: string) => `${worker.baseUrl}${path}`;

async function getJson<T>(path: string, workspace: TestWorkspace): Promise<T> {
  const response = await fetch(url(path), { headers: workspace.headers });
  if (!response.ok) throw new Error(`GET ${path} answered ${response.status}: ${await response.text()}`);
  return (await response.json()) as T;
}

function post(path: string, workspace: TestWorkspace, body: unknown, method = "POST") {
  return fetch(url(path), {
    method,
    headers: { ...workspace.headers, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function submit(workspace: TestWorkspace, body: Record<string, unknown>): Promise<Task> {
  const response = await post("/api/v1/tasks", workspace, { type: "code_generation", ...body });
  if (response.status !== 202) throw new Error(`submit answered ${response.status}: ${await response.text()}`);
  return (await response.json()) as Task;
}

async function waitFor<T>(
  what: string,
  probe: () => Promise<T | null | undefined | false>,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value) return value;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function allTasks(workspace: TestWorkspace): Promise<Task[]> {
  const out: Task[] = [];
  let cursor: string | null = null;
  do {
    const page: { data: Task[]; next_cursor: string | null } = await getJson(
      `/api/v1/tasks?limit=100${cursor ? `&cursor=${cursor}` : ""}`,
      workspace,
    );
    out.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor);
  return out;
}

async function runsOf(workspace: TestWorkspace, taskId: string): Promise<Run[]> {
  return (await getJson<{ data: Run[] }>(`/api/v1/tasks/${taskId}/runs?limit=100`, workspace)).data;
}

async function eventsOf(workspace: TestWorkspace, taskId: string) {
  return (
    await getJson<{ data: { event_type: string; data: Record<string, unknown> }[] }>(
      `/api/v1/events?channels=task:${taskId}&limit=100`,
      workspace,
    )
  ).data;
}

/** Most runs alive at one instant, from their start and end times. */
function maxOverlap(runs: Run[]): number {
  const edges = runs.flatMap((run) => [
    { atMs: Date.parse(run.started_at), delta: 1 },
    { atMs: Date.parse(run.finished_at ?? run.started_at), delta: -1 },
  ]);
  edges.sort((a, b) => a.atMs - b.atMs || a.delta - b.delta);
  let current = 0;
  let max = 0;
  for (const edge of edges) {
    current += edge.delta;
    max = Math.max(max, current);
  }
  return max;
}

async function pool<T, R>(items: T[], width: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) {
        const index = next++;
        results[index] = await work(items[index]);
      }
    }),
  );
  return results;
}

describe("task execution under wrangler dev", () => {
  it("runs 300 tasks across 3 workspaces and all priorities: all terminal, none lost, none run twice, never over the cap", async () => {
    const CAP = 4;
    const workspaces = await Promise.all(
      [1, 2, 3].map((n) =>
        createTestWorkspace(fetch, worker.baseUrl, {
          name: `load ${n}`,
          limits: { max_running_tasks: CAP, max_pending_tasks: 1_000 },
        }),
      ),
    );
    const jobs = Array.from({ length: 300 }, (_, index) => ({ workspace: workspaces[index % 3], index }));
    let maxRunningSeen = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        for (const workspace of workspaces) {
          const view = await getJson<{ queue: { running: number } }>("/api/v1/workspace", workspace);
          maxRunningSeen = Math.max(maxRunningSeen, view.queue.running);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })();
    const submitted = await pool(jobs, 16, (job) =>
      submit(job.workspace, {
        title: `load task ${job.index}`,
        priority: PRIORITIES[job.index % 4],
        type: "documentation",
      }).then((task) => ({ workspace: job.workspace, id: task.id })),
    );
    expect(new Set(submitted.map((task) => task.id)).size).toBe(300);

    const finished = await waitFor(
      "300 terminal tasks",
      async () => {
        const lists = await Promise.all(workspaces.map(allTasks));
        const all = lists.flat();
        return all.length === 300 && all.every((task) => TERMINAL.has(task.status)) ? lists : null;
      },
      240_000,
    );
    sampling = false;
    await sampler;

    const byId = new Map(finished.flat().map((task) => [task.id, task]));
    for (const task of submitted) expect(byId.get(task.id)?.status).toBe("completed");
    expect(maxRunningSeen).toBeLessThanOrEqual(CAP);
    for (const [index, workspace] of workspaces.entries()) {
      const runs = await pool(finished[index], 8, (task) => runsOf(workspace, task.id));
      expect(runs.map((list) => list.length)).toEqual(finished[index].map(() => 1));
      expect(maxOverlap(runs.flat())).toBeLessThanOrEqual(CAP);
    }
  }, 300_000);

  it("with a running cap of 1, starts higher priorities first", async () => {
    const workspace = await createTestWorkspace(fetch, worker.baseUrl, {
      name: "priorities",
      limits: { max_running_tasks: 1, max_pending_tasks: 100 },
    });
    // Holds the only slot while the others line up.
    const blocker = await submit(workspace, {
      title: "blocker",
      agent_config: { model: "simulated:sim-1?latency_ms=1500" },
    });
    const waiting: Task[] = [];
    for (const priority of ["low", "medium", "high", "critical", "low", "medium", "high", "critical"]) {
      waiting.push(await submit(workspace, { title: `p ${priority}`, priority }));
    }
    expect(waiting.every((task) => task.status === "pending")).toBe(true);
    const done = await waitFor("the line to drain", async () => {
      const tasks = await allTasks(workspace);
      return tasks.every((task) => task.status === "completed") ? tasks : null;
    });
    const started = done
      .filter((task) => task.id !== blocker.id)
      .sort((a, b) => Date.parse(a.started_at!) - Date.parse(b.started_at!))
      .map((task) => task.priority);
    expect(started).toEqual(["critical", "critical", "high", "high", "medium", "medium", "low", "low"]);
  }, 120_000);

  it("dead-letters a poison task with a fatal task.error, and replays it once the cause is fixed", async () => {
    const workspace = await createTestWorkspace(fetch, worker.baseUrl, { name: "poison" });
    // The cause: the workspace routes every call to a provider that always fails (retryable 503s).
    const broken = await post(
      "/api/v1/workspace",
      workspace,
      { llm: { strategy: "fallback", chain: [{ provider: "simulated", model: "sim-1?failure_rate=1" }] } },
      "PATCH",
    );
    expect(broken.status).toBe(200);
    const task = await submit(workspace, { title: "poison" });
    const dead = await waitFor(
      "the poison task to be dead-lettered",
      async () => {
        const current = await getJson<Task>(`/api/v1/tasks/${task.id}`, workspace);
        return current.status === "dead_lettered" ? current : null;
      },
      180_000,
    );
    expect(dead.attempts).toBe(4);
    expect((await runsOf(workspace, task.id)).map((run) => run.status)).toEqual([
      "failed",
      "failed",
      "failed",
      "failed",
    ]);
    const errors = (await eventsOf(workspace, task.id)).filter((event) => event.event_type === "task.error");
    expect(errors.map((event) => event.data.fatal)).toEqual([false, false, false, true]);
    const letters = await getJson<{ data: { id: string; task_id: string }[] }>("/api/v1/dead-letters", workspace);
    expect(letters.data.map((letter) => letter.task_id)).toEqual([task.id]);

    // The fix, then a replay by filter.
    expect((await post("/api/v1/workspace", workspace, { llm: null }, "PATCH")).status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 5_500)); // routing settings are cached for 5 s per isolate
    const replay = await post("/api/v1/dead-letters/replay", workspace, { filter: {} });
    expect(replay.status).toBe(200);
    expect(
      ((await replay.json()) as { replayed: { task_id: string }[] }).replayed.map((entry) => entry.task_id),
    ).toEqual([task.id]);
    const fixed = await waitFor("the replayed task to complete", async () => {
      const current = await getJson<Task>(`/api/v1/tasks/${task.id}`, workspace);
      return TERMINAL.has(current.status) ? current : null;
    });
    expect(fixed.status).toBe("completed");
    expect((await runsOf(workspace, task.id)).map((run) => run.status)).toEqual([
      "failed",
      "failed",
      "failed",
      "failed",
      "succeeded",
    ]);
  }, 300_000);

  it("cancels a running task: it ends as cancelled", async () => {
    const workspace = await createTestWorkspace(fetch, worker.baseUrl, { name: "cancel" });
    const task = await submit(workspace, { title: "long", agent_config: { model: "simulated:sim-1?latency_ms=4000" } });
    await waitFor(
      "the task to run",
      async () => (await getJson<Task>(`/api/v1/tasks/${task.id}`, workspace)).status === "running",
    );
    const cancel = await post(`/api/v1/tasks/${task.id}/cancel`, workspace, {});
    expect(cancel.status).toBe(202);
    const ended = await waitFor("the task to stop", async () => {
      const current = await getJson<Task>(`/api/v1/tasks/${task.id}`, workspace);
      return TERMINAL.has(current.status) ? current : null;
    });
    expect(ended.status).toBe("cancelled");
    expect((await runsOf(workspace, task.id)).map((run) => run.status)).toEqual(["cancelled"]);
    const errors = (await eventsOf(workspace, task.id)).filter((event) => event.event_type === "task.error");
    expect(errors.at(-1)?.data).toMatchObject({ error_type: "cancelled", fatal: true });
  }, 60_000);

  it("answers a flood over the pending cap with 429 + Retry-After, and the same submissions succeed later", async () => {
    const workspace = await createTestWorkspace(fetch, worker.baseUrl, {
      name: "flood",
      limits: { max_running_tasks: 2, max_pending_tasks: 4 },
    });
    const bodies = Array.from({ length: 16 }, (_, index) => ({
      title: `flood ${index}`,
      type: "testing",
      agent_config: { model: "simulated:sim-1?latency_ms=200" },
    }));
    const first = await Promise.all(bodies.map((body) => post("/api/v1/tasks", workspace, body)));
    const refused = first.filter((response) => response.status === 429);
    expect(first.filter((response) => response.status === 202).length).toBe(6);
    expect(refused.length).toBe(10);
    for (const response of refused) {
      expect(Number(response.headers.get("Retry-After"))).toBeGreaterThanOrEqual(1);
      expect(((await response.json()) as { code: string }).code).toBe("RATE_LIMITED");
    }
    expect(first.every((response) => response.status === 202 || response.status === 429)).toBe(true);

    // Each refused submission waits as told and tries again until it is accepted.
    const pendingBodies = bodies.filter((_, index) => first[index].status === 429);
    const retryAfterOf = new Map(
      refused.map((response, index) => [index, Number(response.headers.get("Retry-After"))]),
    );
    await Promise.all(
      pendingBodies.map(async (body, index) => {
        let waitSeconds = retryAfterOf.get(index) ?? 1;
        for (let attempt = 0; attempt < 30; attempt++) {
          await new Promise((resolve) => setTimeout(resolve, waitSeconds * 1000));
          const response = await post("/api/v1/tasks", workspace, body);
          if (response.status === 202) return;
          expect(response.status).toBe(429);
          waitSeconds = Number(response.headers.get("Retry-After"));
        }
        throw new Error("never accepted");
      }),
    );
    const done = await waitFor("the flood to finish", async () => {
      const tasks = await allTasks(workspace);
      return tasks.length === 16 && tasks.every((task) => task.status === "completed") ? tasks : null;
    });
    expect(done).toHaveLength(16);
  }, 180_000);
});
