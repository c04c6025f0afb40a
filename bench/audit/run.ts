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
 * 1M/10k; for a full export of one workspace (1,000 vs 100,000 rows): rows/s
 * and the growth of workerd's anonymous RSS while it streams.
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
  const worker = await startWorker({ vars: { ADMIN_TOKEN: TEST_ADMIN_TOKEN, LOG_LEVEL: "warn" } });
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

async function measureExport(target: Target, format: "json" | "csv") {
  const pids = await workerdPids(target.worker.port);
  const before = await rssAnonBytes(pids);
  const expectedRows = target.rowsPerWorkspace;
  let rows = 0;
  // RSS once the first tenth of the rows has streamed (buffers, caches and allocator warm), and the peak after it.
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
  const response = await fetch(`${target.worker.baseUrl}/api/v1/audit-logs/export?format=${format}`, {
    headers: target.workspaces[0].headers,
    signal: AbortSignal.timeout(EXPORT_TIMEOUT_MS),
  });
  let bytes = 0;
  let lines = 0;
  // Counted as it arrives, never held: the client must not be what grows.
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    bytes += chunk.byteLength;
    for (const byte of chunk) if (byte === 10) lines += 1;
    rows = lines;
  }
  const seconds = (performance.now() - startedAt) / 1000;
  clearInterval(sampler);
  const mb = (value: number) => value / 2 ** 20;
  return {
    status: response.status,
    rows: format === "csv" ? lines - 1 : lines,
    bytes,
    seconds,
    rssBeforeMb: mb(before),
    rssGrowthMb: mb(peak - before),
    // Null when the export was too quick for a sample after its first tenth.
    rssGrowthAfterTenthMb: atTenth === null ? null : mb(Math.max(0, peakAfterTenth - atTenth)),
  };
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

    console.log(
      "\nfull export of one workspace (streamed; workerd anonymous RSS sampled every 20 ms; each format run twice)",
    );
    const growth: Record<string, number> = {};
    for (const format of ["json", "csv"] as const) {
      for (let run = 1; run <= 2; run++) {
        for (const target of targets) {
          const result = await measureExport(target, format);
          growth[`${format} ${target.label}`] = result.rssGrowthMb;
          const afterTenth =
            result.rssGrowthAfterTenthMb === null ? "n/a" : `+${result.rssGrowthAfterTenthMb.toFixed(1)} MB`;
          console.log(
            `${format.padEnd(4)} ${target.label.padEnd(4)} run ${run}  status ${result.status}  ${String(result.rows).padStart(7)} rows  ${(result.bytes / 2 ** 20).toFixed(1).padStart(6)} MB  ${(result.rows / result.seconds).toFixed(0).padStart(6)} rows/s  workerd anon RSS ${result.rssBeforeMb.toFixed(0)} MB, peak +${result.rssGrowthMb.toFixed(1)} MB, after first tenth ${afterTenth}`,
          );
        }
      }
    }

    const worst = Math.max(...Object.values(ratios));
    console.log(
      `\nlist p50 1M/10k = ${Object.values(ratios)
        .map((r) => r.toFixed(2))
        .join(
          ", ",
        )} (worst ${worst.toFixed(2)}, goal ≤ 2.00); export RSS growth 100k rows vs 1k rows: json +${growth["json 1M"].toFixed(1)} vs +${growth["json 10k"].toFixed(1)} MB, csv +${growth["csv 1M"].toFixed(1)} vs +${growth["csv 10k"].toFixed(1)} MB (goal: flat)`,
    );
  } finally {
    for (const target of targets) await target.worker.stop();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
