import { spawn } from "node:child_process";
import { mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { startWorker, type WorkerProcess } from "../../test/e2e/harness.ts";
import { rssAnonBytes, workerdPids } from "../../test/support/workerd-memory.ts";
import { createTestWorkspace, TEST_ADMIN_TOKEN, type TestWorkspace } from "../../test/support/workspaces.ts";

/**
 * bench/audit (issue 7): is audit-log listing independent of the log's size,
 * and is export memory flat in the row count?
 *
 * Two `wrangler dev` servers run side by side: the baseline with 10,000 audit
 * entries in its local D1 and the subject with 1,000,000, both across 10
 * workspaces, seeded by `wrangler d1 execute --local --file` (a recursive CTE
 * per workspace). Requests alternate between the two, sequentially, so a busy
 * machine slows both alike. Printed per case: p50/p95/p99 and the ratio
 * 1M/10k.
 *
 * Export memory (growth of workerd's anonymous RSS, sampled while the body is
 * consumed chunk by chunk) in three parts, because miniflare's local D1 runs
 * in the same workerd process as the Worker and its read path grows on its own:
 * 1. the export stream alone: synthetic rows through the export's encoder and
 *    response (debug route, no D1) at 10k, 100k and 1M rows after a warm-up;
 *    the slope in bytes per row is the goal's figure ("flat");
 * 2. the real export of one workspace (1,000 vs 100,000 rows, json and csv)
 *    against the same D1 page reads done in the Worker with the rows discarded
 *    (debug route), alternating, twice;
 * 3. every workspace of the 1M server exported in turn: does the process settle?
 *
 * Env: AUDIT_BENCH_ROWS (entries in the large D1, default 1,000,000; seeding
 * 1M takes ≈ 1 min), AUDIT_BENCH_SAMPLES (requests per list case and size,
 * default 150), AUDIT_BENCH_SYNTHETIC_ROWS (largest synthetic export, default
 * 1,000,000).
 *
 * Seeded rows carry placeholder hashes: verify is not measured here.
 */

const PROJECT_ROOT = resolve(import.meta.dirname, "../..");
const WRANGLER = join(PROJECT_ROOT, "node_modules/wrangler/bin/wrangler.js");
const WORKSPACES = 10;
const SMALL_TOTAL = 10_000;
const LARGE_TOTAL = Number(process.env.AUDIT_BENCH_ROWS ?? 1_000_000);
const SAMPLES_PER_CASE = Number(process.env.AUDIT_BENCH_SAMPLES ?? 150);
const WARMUP_PER_CASE = 20;
const REQUEST_TIMEOUT_MS = 30_000;
const EXPORT_TIMEOUT_MS = 180_000;
const SEED_SPAN_MS = 30 * 24 * 3_600_000;
const RSS_SAMPLE_MS = 20;
/** The largest synthetic (no-D1) export; its growth after warm-up against 10,000 rows' gives the slope. */
const SYNTHETIC_ROWS = Number(process.env.AUDIT_BENCH_SYNTHETIC_ROWS ?? 1_000_000);
/** "Flat": RSS growth per exported row after warm-up (an encoded row is ≈ 560 bytes of NDJSON). */
const SLOPE_GOAL_BYTES_PER_ROW = 10;

interface Target {
  label: string;
  worker: WorkerProcess;
  persistDir: string;
  workspaces: TestWorkspace[];
  rowsPerWorkspace: number;
}

function runWrangler(args: string[]): Promise<string> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [WRANGLER, ...args], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, WRANGLER_SEND_METRICS: "false", NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk) => (output += chunk));
    child.stderr.on("data", (chunk) => (output += chunk));
    child.on("exit", (code) =>
      code === 0 ? done(output) : fail(new Error(`wrangler ${args[0]} exited ${code}\n${output}`)),
    );
  });
}

/** One INSERT … SELECT per workspace: `rows` entries over the last 30 days, seq 1..rows, time rising with seq. */
function seedSql(workspaceIds: string[], rows: number, nowMs: number): string {
  const startSeconds = (nowMs - SEED_SPAN_MS - 60_000) / 1000;
  const stepSeconds = SEED_SPAN_MS / 1000 / rows;
  return workspaceIds
    .map(
      (id, index) => `DELETE FROM audit_logs WHERE workspace_id = '${id}';
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${rows - 1})
INSERT INTO audit_logs (id, workspace_id, seq, actor_type, actor_id, actor_display, action, resource_type, resource_id,
  request_id, trace_id, ip, user_agent, changes, metadata, created_at, prev_hash, hash)
SELECT printf('aud_bench%02d%012d', ${index}, i), '${id}', i + 1,
  CASE WHEN i % 50 = 0 THEN 'operator' ELSE 'api_key' END,
  CASE WHEN i % 50 = 0 THEN 'operator' ELSE 'key_bench_' || (i % 7) END,
  'bench key',
  CASE i % 10 WHEN 0 THEN 'task.cancel' WHEN 1 THEN 'api_key.create' WHEN 2 THEN 'workspace.update' ELSE 'task.create' END,
  'task', 'task_bench_' || (i / 2), 'req_bench_' || i, NULL, '127.0.0.1', 'bench/1.0',
  CASE WHEN i % 10 = 2 THEN '{"after":{"plan":"team"},"before":{"plan":"free"}}' END,
  '{"i":' || i || ',"source":"bench"}',
  strftime('%Y-%m-%dT%H:%M:%fZ', ${startSeconds} + i * ${stepSeconds}, 'unixepoch'),
  printf('%064d', i), printf('%064d', i + 1)
FROM n;`,
    )
    .join("\n");
}

async function newPersistDirs(root: string, known: Set<string>): Promise<string> {
  const fresh = (await readdir(root)).filter((name) => name.startsWith("mgx-e2e-") && !known.has(name));
  if (fresh.length !== 1) throw new Error(`expected one new persist dir in ${root}, found ${fresh.join(", ")}`);
  known.add(fresh[0]);
  return join(root, fresh[0]);
}

async function startTarget(label: string, total: number, root: string, known: Set<string>): Promise<Target> {
  const worker = await startWorker({
    // Debug routes: the export's halves apart (src/routes/debug-audit.ts), for the memory baseline.
    vars: { ADMIN_TOKEN: TEST_ADMIN_TOKEN, LOG_LEVEL: "warn", ENABLE_DEBUG_ROUTES: "true" },
  });
  const persistDir = await newPersistDirs(root, known);
  const workspaces: TestWorkspace[] = [];
  for (let i = 0; i < WORKSPACES; i++) {
    workspaces.push(
      await createTestWorkspace(fetch, worker.baseUrl, {
        name: `bench ${i}`,
        limits: { requests_per_second: 100_000, burst: 1_000_000, max_running_tasks: 10, max_pending_tasks: 100 },
      }),
    );
  }
  const rowsPerWorkspace = total / WORKSPACES;
  const sqlFile = join(root, `seed-${label}.sql`);
  await writeFile(
    sqlFile,
    seedSql(
      workspaces.map((ws) => ws.id),
      rowsPerWorkspace,
      Date.now(),
    ),
  );
  const startedMs = Date.now();
  await runWrangler(["d1", "execute", "DB", "--local", "--persist-to", persistDir, "--file", sqlFile, "--yes"]);
  console.log(
    `seeded ${label}: ${total.toLocaleString("en")} entries in ${((Date.now() - startedMs) / 1000).toFixed(1)} s`,
  );
  return { label, worker, persistDir, workspaces, rowsPerWorkspace };
}

function cursorFor(seq: number): string {
  // The API's cursor format (src/audit/filters.ts): opaque to clients, known to this benchmark.
  return Buffer.from(JSON.stringify({ s: seq })).toString("base64url");
}

type CaseUrl = (target: Target, ws: TestWorkspace) => string;

const CASES: { name: string; url: CaseUrl }[] = [
  { name: "filtered first page", url: () => "/api/v1/audit-logs?action=task.cancel&limit=20" },
  {
    name: "filtered deep page",
    url: (target) =>
      `/api/v1/audit-logs?action=task.cancel&limit=20&cursor=${cursorFor(Math.ceil(target.rowsPerWorkspace * 0.05))}`,
  },
  {
    name: "unfiltered deep page",
    url: (target) => `/api/v1/audit-logs?limit=20&cursor=${cursorFor(Math.ceil(target.rowsPerWorkspace * 0.05))}`,
  },
  {
    name: "actor + time range page",
    url: () => {
      const middle = Date.now() - SEED_SPAN_MS / 2;
      const from = new Date(middle - 86_400_000).toISOString();
      const to = new Date(middle).toISOString();
      return `/api/v1/audit-logs?actor=key_bench_3&from=${from}&to=${to}&limit=20`;
    },
  },
];

async function timeGet(target: Target, ws: TestWorkspace, path: string): Promise<{ ms: number; ok: boolean }> {
  const startedAt = performance.now();
  try {
    const response = await fetch(`${target.worker.baseUrl}${path}`, {
      headers: ws.headers,
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const body = (await response.json()) as { data?: unknown[] };
    return { ms: performance.now() - startedAt, ok: response.status === 200 && (body.data?.length ?? 0) > 0 };
  } catch {
    return { ms: performance.now() - startedAt, ok: false };
  }
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

interface ExportRun {
  status: number;
  rows: number;
  bytes: number;
  seconds: number;
  rssBeforeMb: number;
  /** Peak anonymous RSS during the request minus the RSS before it. */
  rssGrowthMb: number;
  /** Peak after the first tenth of the rows minus the RSS at that tenth; null when too quick to sample. */
  rssGrowthAfterTenthMb: number | null;
  /** The workerd processes changed meanwhile (wrangler reloaded on a source edit): the figures are void. */
  restarted: boolean;
}

/**
 * One request whose body is streamed and counted as it arrives, never held
 * (the client must not be what grows), while workerd's anonymous RSS is
 * sampled every RSS_SAMPLE_MS. `expectedRows` places the "first tenth" mark.
 */
async function measureRequest(
  target: Target,
  path: string,
  headers: Record<string, string>,
  expectedRows: number,
  csv = false,
): Promise<ExportRun> {
  const pids = await workerdPids(target.worker.port);
  const before = await rssAnonBytes(pids);
  let rows = 0;
  let atTenth: number | null = null;
  let peak = before;
  let peakAfterTenth = 0;
  const sampler = setInterval(async () => {
    const rss = await rssAnonBytes(pids);
    peak = Math.max(peak, rss);
    if (atTenth === null && rows >= expectedRows / 10) atTenth = rss;
    if (atTenth !== null) peakAfterTenth = Math.max(peakAfterTenth, rss);
  }, RSS_SAMPLE_MS);
  const startedAt = performance.now();
  let status = 0;
  let bytes = 0;
  let lines = 0;
  try {
    const response = await fetch(`${target.worker.baseUrl}${path}`, {
      headers,
      signal: AbortSignal.timeout(EXPORT_TIMEOUT_MS),
    });
    status = response.status;
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      bytes += chunk.byteLength;
      for (const byte of chunk) if (byte === 10) lines += 1;
      rows = lines;
    }
  } finally {
    clearInterval(sampler);
  }
  const seconds = (performance.now() - startedAt) / 1000;
  const after = await rssAnonBytes(pids);
  peak = Math.max(peak, after);
  const pidsAfter = await workerdPids(target.worker.port);
  const mb = (value: number) => value / 2 ** 20;
  return {
    status,
    rows: csv ? lines - 1 : lines,
    bytes,
    seconds,
    rssBeforeMb: mb(before),
    rssGrowthMb: mb(peak - before),
    rssGrowthAfterTenthMb: atTenth === null ? null : mb(Math.max(0, peakAfterTenth - atTenth)),
    restarted: pidsAfter.join() !== pids.join(),
  };
}

/** The D1 half alone: the export's page queries run in the Worker, rows discarded (a debug route). */
async function measureD1Reads(target: Target, ws: TestWorkspace): Promise<ExportRun> {
  const pids = await workerdPids(target.worker.port);
  const before = await rssAnonBytes(pids);
  let peak = before;
  const sampler = setInterval(async () => {
    peak = Math.max(peak, await rssAnonBytes(pids));
  }, RSS_SAMPLE_MS);
  const startedAt = performance.now();
  let status = 0;
  let rows = 0;
  try {
    const response = await fetch(`${target.worker.baseUrl}/__debug/audit/read`, {
      headers: ws.headers,
      signal: AbortSignal.timeout(EXPORT_TIMEOUT_MS),
    });
    status = response.status;
    rows = ((await response.json()) as { rows?: number }).rows ?? 0;
  } finally {
    clearInterval(sampler);
  }
  const seconds = (performance.now() - startedAt) / 1000;
  peak = Math.max(peak, await rssAnonBytes(pids));
  const pidsAfter = await workerdPids(target.worker.port);
  const mb = (value: number) => value / 2 ** 20;
  return {
    status,
    rows,
    bytes: 0,
    seconds,
    rssBeforeMb: mb(before),
    rssGrowthMb: mb(peak - before),
    rssGrowthAfterTenthMb: null,
    restarted: pidsAfter.join() !== pids.join(),
  };
}

function describe(label: string, result: ExportRun): string {
  const afterTenth = result.rssGrowthAfterTenthMb === null ? "n/a" : `+${result.rssGrowthAfterTenthMb.toFixed(1)} MB`;
  const size = result.bytes > 0 ? `${(result.bytes / 2 ** 20).toFixed(1).padStart(6)} MB` : "".padStart(9);
  return `${label.padEnd(34)} status ${result.status}  ${String(result.rows).padStart(8)} rows ${size}  ${(result.rows / result.seconds).toFixed(0).padStart(7)} rows/s  anon RSS ${result.rssBeforeMb.toFixed(0).padStart(4)} MB, peak +${result.rssGrowthMb.toFixed(1).padStart(5)} MB, after first tenth ${afterTenth}${result.restarted ? "  [workerd restarted: void]" : ""}`;
}

const fmt = (value: number, digits = 1) => value.toFixed(digits).padStart(7);

async function main(): Promise<void> {
  const deadlineMs = Date.now() + 15 * 60_000;
  const root = await mkdtemp(join(tmpdir(), "mgx-bench-audit-"));
  // The harness makes its persist dir under tmpdir(); pointing that here lets the seeder find it.
  process.env.TMPDIR = root;
  const known = new Set<string>();
  const targets: Target[] = [];
  try {
    targets.push(await startTarget("10k", SMALL_TOTAL, root, known));
    targets.push(await startTarget("1M", LARGE_TOTAL, root, known));
    for (const target of targets) {
      const files = await readdir(join(target.persistDir, "v3/d1/miniflare-D1DatabaseObject"));
      const sizes = await Promise.all(
        files.map((f) => stat(join(target.persistDir, "v3/d1/miniflare-D1DatabaseObject", f))),
      );
      const dbMb = sizes.reduce((sum, s) => sum + s.size, 0) / 2 ** 20;
      console.log(`${target.label}: ${target.worker.baseUrl}, local D1 ${dbMb.toFixed(0)} MB`);
    }
    const [small, large] = targets;

    console.log(`\nlist latency, ${SAMPLES_PER_CASE} sequential requests per case and size, alternating 10k/1M`);
    console.log(`${"case".padEnd(26)} ${"size".padEnd(4)}    p50 ms   p95 ms   p99 ms  errors`);
    const ratios: Record<string, number> = {};
    for (const testCase of CASES) {
      const samples = new Map<Target, number[]>([
        [small, []],
        [large, []],
      ]);
      const errors = new Map<Target, number>([
        [small, 0],
        [large, 0],
      ]);
      for (let i = 0; i < WARMUP_PER_CASE + SAMPLES_PER_CASE && Date.now() < deadlineMs; i++) {
        for (const target of i % 2 ? [large, small] : [small, large]) {
          const ws = target.workspaces[i % WORKSPACES];
          const result = await timeGet(target, ws, testCase.url(target, ws));
          if (i < WARMUP_PER_CASE) continue;
          samples.get(target)?.push(result.ms);
          if (!result.ok) errors.set(target, (errors.get(target) ?? 0) + 1);
        }
      }
      const p50s: number[] = [];
      for (const target of targets) {
        const sorted = (samples.get(target) ?? []).sort((a, b) => a - b);
        p50s.push(percentile(sorted, 50));
        console.log(
          `${testCase.name.padEnd(26)} ${target.label.padEnd(4)} ${fmt(percentile(sorted, 50))}  ${fmt(percentile(sorted, 95))}  ${fmt(percentile(sorted, 99))}  ${String(errors.get(target)).padStart(6)}`,
        );
      }
      ratios[testCase.name] = p50s[1] / p50s[0];
      console.log(`${"".padEnd(26)} 1M/10k p50 ratio ${ratios[testCase.name].toFixed(2)}`);
    }

    const median = (values: number[]) => {
      if (values.length === 0) return Number.NaN;
      const sorted = [...values].sort((a, b) => a - b);
      return sorted[Math.floor(sorted.length / 2)];
    };
    const signed = (value: number, digits = 1) => `${value >= 0 ? "+" : ""}${value.toFixed(digits)}`;
    const anonMb = async (target: Target) => (await rssAnonBytes(await workerdPids(target.worker.port))) / 2 ** 20;

    // 1. Our half alone: generated rows through the export's encoder, stream and response, no D1, on the
    // 10k server. Warm up (V8 heap spaces and allocator high-water marks) until two largest exports in a
    // row add < 2 MB each, then three runs per size; the median per size gives the slope.
    console.log(
      `\nexport memory 1/3: the export stream alone (synthetic rows through encodeExport and the response, no D1), ${small.label} server`,
    );
    const syntheticSizes = [10_000, 100_000, SYNTHETIC_ROWS];
    const synthetic = (rows: number) => `/__debug/audit/synthetic-export?rows=${rows}&format=json`;
    const syntheticStartMb = await anonMb(small);
    let warmRuns = 0;
    for (let warm = 1, quiet = 0; warm <= 8 && quiet < 2; warm++) {
      warmRuns = warm;
      const result = await measureRequest(
        small,
        synthetic(SYNTHETIC_ROWS),
        small.workspaces[0].headers,
        SYNTHETIC_ROWS,
      );
      console.log(describe(`warm-up ${warm}`, result));
      quiet = !result.restarted && result.rssGrowthMb < 2 ? quiet + 1 : 0;
    }
    const measuredStartMb = await anonMb(small);
    const syntheticGrowth = new Map<number, number[]>(syntheticSizes.map((rows) => [rows, []]));
    for (let run = 1; run <= 3; run++) {
      for (const rows of run % 2 ? syntheticSizes : [...syntheticSizes].reverse()) {
        const result = await measureRequest(small, synthetic(rows), small.workspaces[0].headers, rows);
        console.log(describe(`synthetic ${rows.toLocaleString("en")} run ${run}`, result));
        if (!result.restarted) syntheticGrowth.get(rows)?.push(result.rssGrowthMb);
      }
    }
    const measuredEndMb = await anonMb(small);
    const syntheticMedian = syntheticSizes.map((rows) => median(syntheticGrowth.get(rows) ?? []));
    const slope = Math.max(
      0,
      ((syntheticMedian[syntheticMedian.length - 1] - syntheticMedian[0]) * 2 ** 20) /
        (SYNTHETIC_ROWS - syntheticSizes[0]),
    );
    console.log(
      `stream alone, median of 3: ${syntheticSizes.map((rows, i) => `${signed(syntheticMedian[i])} MB at ${rows.toLocaleString("en")}`).join(", ")} rows; slope ${slope.toFixed(1)} B/row; RSS ${syntheticStartMb.toFixed(0)} MB before warm-up, ${measuredStartMb.toFixed(0)} MB after, ${measuredEndMb.toFixed(0)} MB after the measured runs`,
    );

    // 2. The real export (D1 + our stream) against the D1 page reads alone, same server and workspace,
    // alternating which goes first; 1,000 rows per workspace on the 10k server, 100,000 on the 1M one.
    console.log(
      "\nexport memory 2/3: full export of one workspace through local D1 vs the same D1 page reads alone (debug route, rows discarded)",
    );
    for (let run = 1; run <= 2; run++) {
      for (const target of targets) {
        const ws = target.workspaces[0];
        const steps: (() => Promise<void>)[] = [
          async () => {
            for (const format of ["json", "csv"] as const) {
              const result = await measureRequest(
                target,
                `/api/v1/audit-logs/export?format=${format}`,
                ws.headers,
                target.rowsPerWorkspace,
                format === "csv",
              );
              console.log(describe(`${target.label} export ${format} run ${run}`, result));
            }
          },
          async () =>
            console.log(describe(`${target.label} D1 reads alone run ${run}`, await measureD1Reads(target, ws))),
        ];
        for (const step of run === 1 ? steps : steps.reverse()) await step();
      }
    }

    // 3. At scale: every workspace of the 1M server in turn, alternating the export and the D1 reads alone.
    console.log(
      `\nexport memory 3/3: every workspace of the ${large.label} server in turn, alternating export (json) and D1 reads alone; RSS after each`,
    );
    const sequenceStartMb = await anonMb(large);
    const trajectory: number[] = [];
    const perRow: Record<"export" | "reads", number[]> = { export: [], reads: [] };
    for (const [index, ws] of large.workspaces.entries()) {
      const kind = index % 2 ? "reads" : "export";
      const before = trajectory.at(-1) ?? sequenceStartMb;
      const result =
        kind === "export"
          ? await measureRequest(large, "/api/v1/audit-logs/export?format=json", ws.headers, large.rowsPerWorkspace)
          : await measureD1Reads(large, ws);
      const after = await anonMb(large);
      trajectory.push(after);
      console.log(describe(`${large.label} workspace ${index + 1} ${kind}`, result));
      // The first two steps warm the process; later ones show whether it settles.
      if (index >= 2 && !result.restarted) perRow[kind].push(((after - before) * 2 ** 20) / large.rowsPerWorkspace);
    }
    const exportPerRow = median(perRow.export);
    const readsPerRow = median(perRow.reads);
    console.log(
      `RSS ${sequenceStartMb.toFixed(0)} MB → ${trajectory.map((value) => value.toFixed(0)).join(" → ")} MB; after the first two steps, median growth per row: export ${signed(exportPerRow, 0)} B, D1 reads alone ${signed(readsPerRow, 0)} B`,
    );

    const worst = Math.max(...Object.values(ratios));
    const d1Verdict =
      exportPerRow <= readsPerRow + SLOPE_GOAL_BYTES_PER_ROW
        ? "the export adds nothing measurable to the local D1 reads' own growth"
        : `the export adds ${(exportPerRow - readsPerRow).toFixed(0)} B/row to the D1 reads' growth`;
    console.log("\nsummary");
    console.log(
      `list p50 1M/10k = ${Object.values(ratios)
        .map((r) => r.toFixed(2))
        .join(", ")} (worst ${worst.toFixed(2)}, goal ≤ 2.00): ${worst <= 2 ? "met" : "NOT met"}`,
    );
    console.log(
      `through local D1 (${large.workspaces.length} × ${large.rowsPerWorkspace.toLocaleString("en")} rows in turn): workerd RSS ${sequenceStartMb.toFixed(0)} → ${(trajectory.at(-1) ?? 0).toFixed(0)} MB, ${Math.max(exportPerRow, readsPerRow) <= SLOPE_GOAL_BYTES_PER_ROW ? "settled" : "still growing"}; per row export ${signed(exportPerRow, 0)} B vs D1 reads alone ${signed(readsPerRow, 0)} B: ${d1Verdict}`,
    );
    console.log(
      `export memory (our stream, no D1; warm-up of ${warmRuns} × ${SYNTHETIC_ROWS.toLocaleString("en")} rows raised RSS ${signed(measuredStartMb - syntheticStartMb, 0)} MB, kept): ${signed(syntheticMedian[0])} MB at ${syntheticSizes[0].toLocaleString("en")} rows vs ${signed(syntheticMedian[syntheticMedian.length - 1])} MB at ${SYNTHETIC_ROWS.toLocaleString("en")}, slope ${slope.toFixed(1)} B/row (goal: flat, ≤ ${SLOPE_GOAL_BYTES_PER_ROW} B/row): ${slope <= SLOPE_GOAL_BYTES_PER_ROW ? "met" : "NOT met"}`,
    );
  } finally {
    for (const target of targets) await target.worker.stop();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
