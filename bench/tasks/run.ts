/**
 * bench/tasks: task throughput against the raw queue, in the same `wrangler dev`.
 *
 *   (a) baseline: 1,000 no-op messages on the `tasks` queue, acknowledged by
 *       the same consumer entry without work (batches of 100, as configured);
 *   (b) 1,000 tasks submitted over HTTP (32 at a time) and run by the agent on
 *       the `simulated` provider at zero latency: admission, queue, claims,
 *       LLM turns, tool calls, an R2 artifact, events and slot release each.
 *
 * Alternating, each twice. Prints msg/s and tasks/s end to end (first submit →
 * last completion), the submit and execution phases, p50/p95 of
 * submit→started and submit→completed (server timestamps), and last the
 * ratio tasks/s ÷ no-op msg/s against the goal (≥ 0.25).
 */

import { startWorker, type WorkerProcess } from "../../test/e2e/harness.ts";
import { createTestWorkspace, TEST_ADMIN_TOKEN, type TestWorkspace } from "../../test/support/workspaces.ts";

const TASKS = Number(process.env.BENCH_TASKS ?? 1_000);
const NOOP_MESSAGES = Number(process.env.BENCH_MESSAGES ?? 1_000);
const SUBMIT_CONCURRENCY = 32;
const ROUNDS = 2;
const GOAL_RATIO = 0.25;
const NOOP_LOG = "no-op messages acknowledged";

interface TaskRow {
  id: string;
  status: string;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function waitFor<T>(what: string, probe: () => Promise<T | null>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== null) return value;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function noopLines(worker: WorkerProcess) {
  return worker.jsonLogs().filter((line) => line.msg === NOOP_LOG);
}

async function measureNoop(worker: WorkerProcess, count: number) {
  const before = noopLines(worker).length;
  const startedAtMs = Date.now();
  const response = await fetch(`${worker.baseUrl}/__debug/queues/tasks/noop`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ count }),
  });
  if (!response.ok) throw new Error(`enqueueing no-ops answered ${response.status}`);
  const lastAtMs = await waitFor(
    `${count} no-op messages`,
    async () => {
      const lines = noopLines(worker).slice(before);
      const acked = lines.reduce((sum, line) => sum + Number(line.count), 0);
      return acked >= count ? Date.parse(String(lines.at(-1)?.time)) : null;
    },
    120_000,
  );
  const seconds = (lastAtMs - startedAtMs) / 1000;
  return { count, seconds, perSecond: count / seconds };
}

async function listAll(worker: WorkerProcess, workspace: TestWorkspace): Promise<TaskRow[]> {
  const rows: TaskRow[] = [];
  let cursor: string | null = null;
  do {
    const response = await fetch(`${worker.baseUrl}/api/v1/tasks?limit=100${cursor ? `&cursor=${cursor}` : ""}`, {
      headers: workspace.headers,
    });
    const page = (await response.json()) as { data: TaskRow[]; next_cursor: string | null };
    rows.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor);
  return rows;
}

async function measureTasks(worker: WorkerProcess, count: number) {
  const workspace = await createTestWorkspace(fetch, worker.baseUrl, {
    name: "bench tasks",
    limits: { requests_per_second: 100_000, burst: 100_000, max_running_tasks: 100, max_pending_tasks: 10_000 },
  });
  const startedAtMs = Date.now();
  let next = 0;
  let failed = 0;
  await Promise.all(
    Array.from({ length: SUBMIT_CONCURRENCY }, async () => {
      while (next < count) {
        const index = next++;
        const response = await fetch(`${worker.baseUrl}/api/v1/tasks`, {
          method: "POST",
          headers: { ...workspace.headers, "Content-Type": "application/json" },
          body: JSON.stringify({ title: `bench ${index}`, type: "code_generation", priority: "medium" }),
        });
        await response.arrayBuffer();
        if (response.status !== 202) failed++;
      }
    }),
  );
  const submittedAtMs = Date.now();
  await waitFor(
    "every task to finish",
    async () => {
      const response = await fetch(`${worker.baseUrl}/api/v1/workspace`, { headers: workspace.headers });
      const { queue } = (await response.json()) as { queue: { pending: number; queued: number; running: number } };
      if (process.env.BENCH_DEBUG) console.log(JSON.stringify(queue));
      return queue.pending + queue.queued + queue.running === 0 ? true : null;
    },
    600_000,
  );
  const rows = await listAll(worker, workspace);
  const completed = rows.filter((row) => row.status === "completed");
  const lastFinishedMs = Math.max(...completed.map((row) => Date.parse(row.finished_at!)));
  const firstStartedMs = Math.min(...completed.map((row) => Date.parse(row.started_at!)));
  const toStart = completed
    .map((row) => Date.parse(row.started_at!) - Date.parse(row.created_at))
    .sort((a, b) => a - b);
  const toDone = completed
    .map((row) => Date.parse(row.finished_at!) - Date.parse(row.created_at))
    .sort((a, b) => a - b);
  const seconds = (lastFinishedMs - startedAtMs) / 1000;
  return {
    count,
    completed: completed.length,
    failed: failed + (rows.length - completed.length),
    seconds,
    perSecond: completed.length / seconds,
    submitPerSecond: count / ((submittedAtMs - startedAtMs) / 1000),
    executionPerSecond: completed.length / ((lastFinishedMs - firstStartedMs) / 1000),
    startP50: percentile(toStart, 50),
    startP95: percentile(toStart, 95),
    doneP50: percentile(toDone, 50),
    doneP95: percentile(toDone, 95),
  };
}

async function main(): Promise<void> {
  const worker = await startWorker({
    vars: { ADMIN_TOKEN: TEST_ADMIN_TOKEN, ENABLE_DEBUG_ROUTES: "true", LOG_LEVEL: "info" },
  });
  try {
    await rounds(worker);
  } catch (error) {
    const troubles = worker.jsonLogs().filter((line) => line.level === "warn" || line.level === "error");
    console.error(
      troubles
        .slice(0, 20)
        .map((line) => JSON.stringify(line).slice(0, 1_000))
        .join("\n"),
    );
    throw error;
  } finally {
    await worker.stop();
  }
}

async function rounds(worker: WorkerProcess): Promise<void> {
  // Warm-up: both paths once, small.
  await measureNoop(worker, 200);
  await measureTasks(worker, 50);

  const ratios: number[] = [];
  console.log(
    `\nbench/tasks: ${TASKS} tasks (simulated provider, zero latency) vs ${NOOP_MESSAGES} no-op messages, wrangler dev`,
  );
  for (let round = 1; round <= ROUNDS; round++) {
    const noop = await measureNoop(worker, NOOP_MESSAGES);
    console.log(
      `(a) no-op queue #${round}   ${noop.perSecond.toFixed(0).padStart(6)} msg/s   (${noop.count} in ${noop.seconds.toFixed(2)} s)`,
    );
    const tasks = await measureTasks(worker, TASKS);
    console.log(
      `(b) tasks #${round}          ${tasks.perSecond.toFixed(0).padStart(6)} tasks/s end to end (${tasks.completed}/${tasks.count} completed in ${tasks.seconds.toFixed(2)} s, ${tasks.failed} not completed)\n` +
        `                        submit ${tasks.submitPerSecond.toFixed(0)} tasks/s, execution ${tasks.executionPerSecond.toFixed(0)} tasks/s (first start → last completion)\n` +
        `                        submit→started p50 ${tasks.startP50} ms p95 ${tasks.startP95} ms; submit→completed p50 ${tasks.doneP50} ms p95 ${tasks.doneP95} ms`,
    );
    ratios.push(tasks.perSecond / noop.perSecond);
  }
  const worst = Math.min(...ratios);
  console.log(
    `\ntasks/s ÷ no-op msg/s = ${ratios.map((ratio) => ratio.toFixed(2)).join(", ")} (worst ${worst.toFixed(2)}; goal ≥ ${GOAL_RATIO})`,
  );
}

await main();
