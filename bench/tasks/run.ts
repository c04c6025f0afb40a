/**
 * bench/tasks: task throughput against the raw queue, in the same `wrangler dev`.
 *
 *   (a) baseline: 1,000 no-op messages on the `tasks` queue, acknowledged by
 *       the same consumer entry without work (batches of 100, as configured);
 *   (a2) the floor: the same messages, each making the one R2 put a task makes
 *       for its report (same size and options), concurrently per batch: what
 *       the local runtime charges for that single write, before any task code;
 *   (b) 1,000 tasks submitted over HTTP (32 at a time) and run by the agent on
 *       the `simulated` provider at zero latency: admission, queue, claims,
 *       LLM turns, tool calls, an R2 artifact, events and slot release each.
 *
 * Alternating, each twice (BENCH_ROUNDS). Prints msg/s and tasks/s end to end (first submit →
 * last completion), the submit and execution phases, p50/p95 of
 * submit→started and submit→completed (server timestamps), and last the
 * ratio tasks/s ÷ no-op msg/s against the goal (≥ 0.25), next to the floor's own ratio (a2 ÷ a):
 * a task cannot go faster than its one R2 put alone.
 *
 * BENCH_PROFILE=<file.cpuprofile> also records a CPU profile of the Worker
 * during the first backlog drain and prints where its time went.
 */

import { freePort, startWorker, type WorkerProcess } from "../../test/e2e/harness.ts";
import { createTestWorkspace, TEST_ADMIN_TOKEN, type TestWorkspace } from "../../test/support/workspaces.ts";
import { attachProfiler, type Profiler, summarize } from "../lib/cpu-profile.ts";

const TASKS = Number(process.env.BENCH_TASKS ?? 1_000);
const NOOP_MESSAGES = Number(process.env.BENCH_MESSAGES ?? 1_000);
const SUBMIT_CONCURRENCY = 32;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const GOAL_RATIO = 0.25;
const PROFILE_PATH = process.env.BENCH_PROFILE;

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

async function noopAcked(worker: WorkerProcess): Promise<{ acked: number; last_acked_at_ms: number }> {
  const response = await fetch(`${worker.baseUrl}/__debug/queues/tasks/noop`);
  return (await response.json()) as { acked: number; last_acked_at_ms: number };
}

async function measureNoop(worker: WorkerProcess, count: number, work: "none" | "r2_put" = "none") {
  const before = (await noopAcked(worker)).acked;
  const startedAtMs = Date.now();
  const response = await fetch(`${worker.baseUrl}/__debug/queues/tasks/noop`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ count, work }),
  });
  if (!response.ok) throw new Error(`enqueueing no-ops answered ${response.status}`);
  const lastAtMs = await waitFor(
    `${count} no-op messages`,
    async () => {
      const state = await noopAcked(worker);
      return state.acked - before >= count ? state.last_acked_at_ms : null;
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

async function submitAll(
  worker: WorkerProcess,
  workspace: TestWorkspace,
  count: number,
  body: (index: number) => Record<string, unknown>,
): Promise<number> {
  let next = 0;
  let failed = 0;
  await Promise.all(
    Array.from({ length: SUBMIT_CONCURRENCY }, async () => {
      while (next < count) {
        const index = next++;
        const response = await fetch(`${worker.baseUrl}/api/v1/tasks`, {
          method: "POST",
          headers: { ...workspace.headers, "Content-Type": "application/json" },
          body: JSON.stringify(body(index)),
        });
        const text = await response.text();
        if (response.status !== 202) {
          failed++;
          if (failed <= 3) console.error(`submit answered ${response.status}: ${text.slice(0, 300)}`);
        }
      }
    }),
  );
  return failed;
}

async function submitOne(
  worker: WorkerProcess,
  workspace: TestWorkspace,
  body: Record<string, unknown>,
): Promise<string> {
  const response = await fetch(`${worker.baseUrl}/api/v1/tasks`, {
    method: "POST",
    headers: { ...workspace.headers, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (response.status !== 202) throw new Error(`submit answered ${response.status}: ${await response.text()}`);
  return ((await response.json()) as TaskRow).id;
}

async function drained(worker: WorkerProcess, workspace: TestWorkspace, leftRunning = 0): Promise<void> {
  await waitFor(
    "every task to finish",
    async () => {
      const response = await fetch(`${worker.baseUrl}/api/v1/workspace`, { headers: workspace.headers });
      const { queue } = (await response.json()) as { queue: { pending: number; queued: number; running: number } };
      if (process.env.BENCH_DEBUG) console.log(JSON.stringify(queue));
      return queue.pending + queue.queued + queue.running <= leftRunning ? true : null;
    },
    600_000,
  );
}

function figures(rows: TaskRow[], fromMs: number, failedSubmits: number) {
  const completed = rows.filter((row) => row.status === "completed");
  const notCompleted = rows.filter((row) => row.status !== "completed");
  if (notCompleted.length > 0) console.error(`not completed: ${JSON.stringify(notCompleted.slice(0, 3))}`);
  const lastFinishedMs = Math.max(...completed.map((row) => Date.parse(row.finished_at!)));
  const firstStartedMs = Math.min(...completed.map((row) => Date.parse(row.started_at!)));
  const sorted = (values: number[]) => values.sort((a, b) => a - b);
  const toStart = sorted(completed.map((row) => Date.parse(row.started_at!) - Date.parse(row.created_at)));
  const toDone = sorted(completed.map((row) => Date.parse(row.finished_at!) - Date.parse(row.created_at)));
  const seconds = (lastFinishedMs - fromMs) / 1000;
  return {
    completed: completed.length,
    failed: failedSubmits + notCompleted.length,
    seconds,
    perSecond: completed.length / seconds,
    executionPerSecond: completed.length / ((lastFinishedMs - firstStartedMs) / 1000),
    startP50: percentile(toStart, 50),
    startP95: percentile(toStart, 95),
    doneP50: percentile(toDone, 50),
    doneP95: percentile(toDone, 95),
  };
}

/** Submitted over HTTP and run as they come: the end-to-end figure, bounded by the HTTP submit path. */
async function measureEndToEnd(worker: WorkerProcess, count: number) {
  const workspace = await createTestWorkspace(fetch, worker.baseUrl, {
    name: "bench tasks",
    limits: { requests_per_second: 100_000, burst: 100_000, max_running_tasks: 100, max_pending_tasks: 10_000 },
  });
  const startedAtMs = Date.now();
  const failed = await submitAll(worker, workspace, count, (index) => ({
    title: `bench ${index}`,
    type: "code_generation",
  }));
  const submitPerSecond = count / ((Date.now() - startedAtMs) / 1000);
  await drained(worker, workspace);
  return { count, submitPerSecond, ...figures(await listAll(worker, workspace), startedAtMs, failed) };
}

/**
 * A backlog released at once: `count` tasks wait behind a running cap of 1
 * (a slow task holds the slot); the operator raises the cap to the enterprise
 * plan's 100, the slow task is cancelled, and one more submission lets the
 * limiter release the line. Measured from that submission to the last completion: what the
 * consumer does with tasks, against what it does with no-op messages.
 */
async function measureBacklog(worker: WorkerProcess, count: number, profiler?: Profiler) {
  const workspace = await createTestWorkspace(fetch, worker.baseUrl, {
    name: "bench backlog",
    limits: { requests_per_second: 100_000, burst: 100_000, max_running_tasks: 1, max_pending_tasks: 10_000 },
  });
  const blockerId = await submitOne(worker, workspace, {
    title: "holds the slot",
    type: "documentation",
    agent_config: { model: "simulated:sim-1?latency_ms=600000" },
  });
  const failed = await submitAll(worker, workspace, count - 1, (index) => ({
    title: `backlog ${index}`,
    type: "code_generation",
  }));
  const raised = await fetch(`${worker.baseUrl}/api/v1/workspaces/${workspace.id}`, {
    method: "PATCH",
    headers: { Authorization: `Bearer ${TEST_ADMIN_TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify({ limits: { max_running_tasks: 100 } }),
  });
  if (!raised.ok) throw new Error(`raising the cap answered ${raised.status}`);
  await new Promise((resolve) => setTimeout(resolve, 6_000)); // authentication caches a key's limits for a few seconds
  // Cancelling the blocker ends its consumer invocation (local queues run one batch at a time) and frees its slot.
  await fetch(`${worker.baseUrl}/api/v1/tasks/${blockerId}/cancel`, { method: "POST", headers: workspace.headers });
  await waitFor(
    "the blocker to stop",
    async () => {
      const response = await fetch(`${worker.baseUrl}/api/v1/tasks/${blockerId}`, { headers: workspace.headers });
      return ((await response.json()) as TaskRow).status === "cancelled" ? true : null;
    },
    60_000,
  );
  // Its slot went to the next in line under the old cap; this submission brings the new cap and releases the line.
  await profiler?.start();
  const releasedAtMs = Date.now();
  await submitOne(worker, workspace, { title: "releases the line", type: "code_generation" });
  await drained(worker, workspace);
  if (profiler && PROFILE_PATH) {
    const profile = await profiler.stop(PROFILE_PATH);
    console.log(`CPU profile of the backlog drain → ${PROFILE_PATH}\n${summarize(profile)}`);
  }
  const rows = (await listAll(worker, workspace)).filter((row) => row.id !== blockerId);
  return { count, ...figures(rows, releasedAtMs, failed) };
}

async function main(): Promise<void> {
  if (PROFILE_PATH) process.env.WRANGLER_INSPECTOR_PORT = String(await freePort());
  const worker = await startWorker({
    vars: { ADMIN_TOKEN: TEST_ADMIN_TOKEN, ENABLE_DEBUG_ROUTES: "true", LOG_LEVEL: "warn" },
  });
  const profiler = PROFILE_PATH ? await attachProfiler(Number(process.env.WRANGLER_INSPECTOR_PORT)) : undefined;
  try {
    await rounds(worker, profiler);
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
    profiler?.close();
    await worker.stop();
  }
}

async function rounds(worker: WorkerProcess, profiler?: Profiler): Promise<void> {
  // Warm-up: every path once, small.
  await measureNoop(worker, 200);
  await measureNoop(worker, 200, "r2_put");
  await measureEndToEnd(worker, 50);

  const drainRatios: number[] = [];
  const floorRatios: number[] = [];
  const endToEndRatios: number[] = [];
  console.log(
    `\nbench/tasks: ${TASKS} tasks (simulated provider, zero latency) vs ${NOOP_MESSAGES} no-op messages, wrangler dev`,
  );
  for (let round = 1; round <= ROUNDS; round++) {
    const noop = await measureNoop(worker, NOOP_MESSAGES);
    console.log(
      `(a) no-op queue #${round}     ${noop.perSecond.toFixed(0).padStart(6)} msg/s   (${noop.count} in ${noop.seconds.toFixed(2)} s)`,
    );
    const floor = await measureNoop(worker, NOOP_MESSAGES, "r2_put");
    console.log(
      `(a2) one R2 put each #${round} ${floor.perSecond.toFixed(0).padStart(6)} msg/s   (${floor.count} in ${floor.seconds.toFixed(2)} s; ${(floor.perSecond / noop.perSecond).toFixed(2)} of no-op)`,
    );
    floorRatios.push(floor.perSecond / noop.perSecond);
    const backlog = await measureBacklog(worker, TASKS, round === 1 ? profiler : undefined);
    console.log(
      `(b) task backlog #${round}    ${backlog.perSecond.toFixed(0).padStart(6)} tasks/s  (${backlog.completed}/${backlog.count} completed in ${backlog.seconds.toFixed(2)} s after release, ${backlog.failed} not)`,
    );
    const e2e = await measureEndToEnd(worker, TASKS);
    console.log(
      `(c) tasks end to end #${round} ${e2e.perSecond.toFixed(0).padStart(6)} tasks/s  (${e2e.completed}/${e2e.count} completed in ${e2e.seconds.toFixed(2)} s from first submit, ${e2e.failed} not)\n` +
        `                        HTTP submit ${e2e.submitPerSecond.toFixed(0)} tasks/s (32 at a time); execution ${e2e.executionPerSecond.toFixed(0)} tasks/s\n` +
        `                        submit→started p50 ${e2e.startP50} ms p95 ${e2e.startP95} ms; submit→completed p50 ${e2e.doneP50} ms p95 ${e2e.doneP95} ms`,
    );
    drainRatios.push(backlog.perSecond / noop.perSecond);
    endToEndRatios.push(e2e.perSecond / noop.perSecond);
  }
  console.log(
    `\nend to end (incl. HTTP submission) ÷ no-op = ${endToEndRatios.map((ratio) => ratio.toFixed(2)).join(", ")}`,
  );
  console.log(
    `task backlog ÷ no-op msg/s = ${drainRatios.map((ratio) => ratio.toFixed(2)).join(", ")} (worst ${Math.min(...drainRatios).toFixed(2)}; goal ≥ ${GOAL_RATIO})`,
  );
  console.log(
    `floor: one R2 put per message ÷ no-op = ${floorRatios.map((ratio) => ratio.toFixed(2)).join(", ")}; task backlog ÷ that floor = ${drainRatios.map((ratio, index) => (ratio / floorRatios[index]).toFixed(2)).join(", ")}`,
  );
}

await main();
