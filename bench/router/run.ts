/**
 * bench/router: what the LLM router costs per call, next to the Portkey gateway.
 * All in one run, against one zero-latency fake OpenAI upstream on loopback:
 *   (a) straight to the upstream
 *   (b) POST /api/v1/llm/chat/completions under `wrangler dev` (auth, rate limit,
 *       budgets, routing, breaker, metering: a usage row per call), for a
 *       workspace with daily token and monthly cost budgets
 *       (reservations against the isolate's budget lease, charges batched)
 *   (c) the Portkey gateway (`npx @portkey-ai/gateway --headless`), custom host = the upstream
 *   (d) a bare Hono route under the same `wrangler dev`, sent the same request as
 *       (b), which answers its body back (POST /__debug/bare)
 * and, to tell the parts of (b) apart: (b1) the same route for a workspace
 * without budgets (its calls only counted), (d1) the bare GET /health, (d3) the bare
 * upstream hop (/__debug/upstream-hop: one plain fetch to the same upstream, its
 * JSON answered back), and (e) authentication + rate limit alone (GET /api/v1/whoami).
 *
 * Why (d) is a POST of the same body: Portkey's added latency is (c) over (a), two
 * identical requests, so the cost of carrying the request's body into a server is
 * on both sides and cancels. wrangler dev relays a body through two workerd
 * processes (its proxy, then the Worker's): (d) − (d1) was 0.13–0.51 ms
 * sequentially over ten runs on this VM, 0.36 on average. Over a GET floor that
 * runtime cost would count as the router's. The verdict against (d1) is printed too.
 * Each case: 3 s at 20 connections (autocannon), eight rounds, each compared pair
 * back to back (see roundOrder); then a sequential pass (one request at a time,
 * in 15 short blocks ordered the same way).
 * Prints req/s, p50/p97.5/p99 and the CPU each request cost each process (from
 * /proc: wrangler dev's workerd, wrangler, Portkey, and this process, which runs
 * autocannon and the upstream), the latency Portkey adds over (a), and the
 * latency our route adds over (d), as means and round by round (block by block
 * for the sequential pass, whose blocks hold 40 requests per case); then (b) over
 * (d3), the router's own cost beyond the hop, and (d3) over (d), what the
 * runtime's outbound fetch costs by itself: a floor under any router here,
 * printed against Portkey's figure (and block by block, sequentially). Under
 * wrangler dev that includes miniflare's outbound interceptor, a Worker of its
 * own that every outbound fetch passes through (it sets CF-Worker): about
 * 0.35 ms of the sequential (d3)−(d), measured by bypassing it (see docs/llm-router.md);
 * production has no such step.
 * Goal: our router adds no more p50 latency than Portkey adds. The last line
 * prints it as a ratio, ours over Portkey's, at 20 connections and sequentially.
 *
 * wrangler dev runs with its local trace explorer off (X_LOCAL_OBSERVABILITY=false,
 * see the harness): it records every span of every invocation inside the
 * Worker's own process, so it charged (b), which makes a subrequest and Durable
 * Object calls, more than (d). BENCH_LOCAL_OBSERVABILITY=true measures with it on.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { join, resolve } from "node:path";
import autocannon from "autocannon";
import { freePort, type WorkerProcess } from "../../test/e2e/harness.ts";
import { type FakeOpenAi, startFakeOpenAi } from "../../test/fakes/openai.ts";
import { cpuSpent, groupCpu, ownCpuMs } from "../lib/process-cpu.ts";
import { type Case, CHAT_BODY, checkCases, send, startRouterWorker, workerCases } from "./setup.ts";

const CONNECTIONS = 20;
// Many short rounds, alternating the cases, rather than a few long ones: this VM's speed drifts by tens
// of percent within minutes, and the shorter the time between the two sides of a difference, the less
// of that drift it carries. The standard error of the mean paired difference averaged 2.3 ms over five
// runs of eight 3 s rounds (1.1–3.7), 2.9 ms over three runs of four 5 s rounds (2.1–3.5): a modest gain.
const DURATION_SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 8);
const SEQUENTIAL_REQUESTS = Number(process.env.BENCH_SEQUENTIAL ?? 600);
/**
 * The sequential pass runs in blocks, interleaved like the rounds, so drift falls on every case alike;
 * short blocks keep the two sides of each difference seconds apart rather than a minute.
 */
const SEQUENTIAL_BLOCKS = 15;
const PORTKEY_VERSION = process.env.PORTKEY_VERSION ?? "1.15.2";
const PROJECT_ROOT = resolve(import.meta.dirname, "../..");
const LOCAL_OBSERVABILITY = process.env.BENCH_LOCAL_OBSERVABILITY === "true";

interface Figures {
  name: string;
  requestsPerSecond: number;
  p50Ms: number;
  p97Ms: number;
  p99Ms: number;
  errors: number;
  non2xx: number;
  cpu?: CpuPerRequest;
}

/** CPU per request (ms) by who spent it. */
interface CpuPerRequest {
  /** wrangler dev's workerd processes: the dev proxy and the Worker itself. */
  workerd: number;
  /** wrangler's own Node process (it logs each request the dev proxy serves). */
  wrangler: number;
  portkey: number;
  /** This process: autocannon and the fake upstream. */
  bench: number;
}

/** Process groups whose CPU each case reads: wrangler dev's and Portkey's (set once they run). */
const watched = { wrangler: -1, portkey: -1 };

async function measuringCpu(run: () => Promise<number>): Promise<CpuPerRequest> {
  const groups = [watched.wrangler, watched.portkey];
  const before = groupCpu(groups);
  const benchBefore = ownCpuMs();
  const requests = Math.max(1, await run());
  const benchMs = ownCpuMs() - benchBefore;
  const spent = [...cpuSpent(before, groupCpu(groups)).values()];
  const perRequest = (keep: (process: (typeof spent)[number]) => boolean) =>
    spent.filter(keep).reduce((sum, process) => sum + process.cpuMs, 0) / requests;
  return {
    workerd: perRequest((process) => process.group === watched.wrangler && process.command.startsWith("workerd")),
    wrangler: perRequest((process) => process.group === watched.wrangler && !process.command.startsWith("workerd")),
    portkey: perRequest((process) => process.group === watched.portkey),
    bench: benchMs / requests,
  };
}

async function load(testCase: Case, connections: number, seconds: number): Promise<Figures> {
  let result!: autocannon.Result;
  const cpu = await measuringCpu(async () => {
    result = await autocannon({
      url: testCase.url,
      method: testCase.method,
      headers: testCase.headers,
      body: testCase.body,
      connections,
      duration: seconds,
    });
    return result.requests.total;
  });
  return {
    cpu,
    name: testCase.name,
    requestsPerSecond: result.requests.average,
    p50Ms: result.latency.p50,
    p97Ms: result.latency.p97_5,
    p99Ms: result.latency.p99,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
  };
}

function percentile(sorted: number[], share: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(share * sorted.length))];
}

/** A case's sequential requests so far: their times, each block's p50, failures and the time they took together. */
interface Samples {
  times: number[];
  blockP50sMs: number[];
  errors: number;
  elapsedMs: number;
}

async function sequential(testCase: Case, count: number, into: Samples): Promise<void> {
  const startedMs = performance.now();
  const blockStart = into.times.length;
  for (let index = 0; index < count; index++) {
    const t0 = performance.now();
    try {
      const response = await send(testCase);
      await response.arrayBuffer();
      if (!response.ok) into.errors++;
    } catch {
      into.errors++;
    }
    into.times.push(performance.now() - t0);
  }
  into.elapsedMs += performance.now() - startedMs;
  const block = into.times.slice(blockStart).sort((a, b) => a - b);
  into.blockP50sMs.push(percentile(block, 0.5));
}

/**
 * Paired differences, (ours − theirs) for each round or block: two pairs that ran back to back saw the
 * same machine, so their difference carries less of its drift than the difference of two means.
 */
function pairedDifference(theirs: number[], ours: number[]) {
  const differences = ours.map((value, index) => value - theirs[index]);
  const mean = differences.reduce((sum, value) => sum + value, 0) / differences.length;
  const variance =
    differences.reduce((sum, value) => sum + (value - mean) ** 2, 0) / Math.max(1, differences.length - 1);
  return {
    met: differences.filter((difference) => difference <= 0).length,
    count: differences.length,
    meanMs: mean,
    standardErrorMs: Math.sqrt(variance / differences.length),
  };
}

/** Each round's (or block's) p50 of `name` less that of `over` in the same round. */
function addedOver(p50s: (name: string) => number[]) {
  return (over: string, name: string) => p50s(name).map((p50, index) => p50 - p50s(over)[index]);
}

function sequentialFigures(name: string, samples: Samples): Figures {
  const times = [...samples.times].sort((a, b) => a - b);
  return {
    name,
    requestsPerSecond: times.length / (samples.elapsedMs / 1000),
    p50Ms: percentile(times, 0.5),
    p97Ms: percentile(times, 0.975),
    p99Ms: percentile(times, 0.99),
    errors: samples.errors,
    non2xx: samples.errors,
  };
}

function format(figures: Figures): string {
  const ms = (value: number) => value.toFixed(1).padStart(6);
  const cpu = figures.cpu
    ? `  CPU/req ms: workerd ${figures.cpu.workerd.toFixed(2)}, wrangler ${figures.cpu.wrangler.toFixed(2)}, portkey ${figures.cpu.portkey.toFixed(2)}, bench ${figures.cpu.bench.toFixed(2)}`
    : "";
  return `${figures.name.padEnd(34)} ${figures.requestsPerSecond.toFixed(0).padStart(6)} req/s  p50 ${ms(figures.p50Ms)} ms  p97.5 ${ms(figures.p97Ms)} ms  p99 ${ms(figures.p99Ms)} ms  errors ${figures.errors}  non-2xx ${figures.non2xx}${cpu}`;
}

async function startPortkey(
  upstreamUrl: string,
): Promise<{ url: string; headers: Record<string, string>; processGroup: number; stop: () => void }> {
  const port = await freePort();
  // npx from PATH (npm's own client), run under the project's Node 22 first in PATH.
  const npx = "npx";
  const child: ChildProcess = spawn(
    npx,
    ["-y", `@portkey-ai/gateway@${PORTKEY_VERSION}`, `--port=${port}`, "--headless"],
    {
      cwd: PROJECT_ROOT,
      env: { ...process.env, PATH: `${join(PROJECT_ROOT, "node_modules/.bin")}:${process.env.PATH}` },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    },
  );
  let output = "";
  child.on("error", (error) => (output += `spawn failed: ${error.message}`));
  child.stdout?.on("data", (chunk) => (output += chunk));
  child.stderr?.on("data", (chunk) => (output += chunk));
  const stop = () => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, "SIGTERM");
    } catch {
      // Already gone.
    }
  };
  process.once("exit", stop);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 180_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) break;
    try {
      if ((await fetch(`${url}/`)).ok) {
        return {
          url: `${url}/v1/chat/completions`,
          headers: {
            "Content-Type": "application/json",
            Authorization: "Bearer sk-fake",
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": `${upstreamUrl}/v1`,
          },
          processGroup: child.pid ?? -1,
          stop,
        };
      }
    } catch {
      // Not up yet.
    }
    await new Promise((wake) => setTimeout(wake, 500));
  }
  stop();
  throw new Error(`Portkey gateway did not start:\n${output.slice(-2_000)}`);
}

/**
 * Each compared pair runs back to back, (a) with (c), (d) with (b) and (b)
 * with (b1), so a change in the machine's speed during the run falls on both
 * sides of a difference; every other round reverses each group, so neither
 * side always runs first. The other parts of (b) follow.
 */
function roundOrder<T extends { name: string }>(cases: T[], round: number): T[] {
  const byPrefix = (prefix: string) => cases.filter((testCase) => testCase.name.startsWith(prefix));
  const pairs = [
    [...byPrefix("(a)"), ...byPrefix("(c)")],
    [...byPrefix("(d)"), ...byPrefix("(b)"), ...byPrefix("(b1)")],
  ].map((pair) => (round % 2 === 0 ? pair.reverse() : pair));
  const paired = new Set(pairs.flat());
  return [...pairs.flat(), ...cases.filter((testCase) => !paired.has(testCase))];
}

async function main(): Promise<void> {
  // Not keeping each request: hundreds of thousands of them grew this process's heap, and its GC stalled the upstream.
  const upstream: FakeOpenAi = await startFakeOpenAi({ keepRequests: false });
  let worker: WorkerProcess | undefined;
  let portkey: Awaited<ReturnType<typeof startPortkey>> | undefined;
  try {
    console.log(
      `wrangler dev's local trace explorer: ${LOCAL_OBSERVABILITY ? "on" : "off"} (BENCH_LOCAL_OBSERVABILITY)`,
    );
    worker = await startRouterWorker(upstream.url, { localObservability: LOCAL_OBSERVABILITY });
    watched.wrangler = worker.processGroup;
    try {
      portkey = await startPortkey(upstream.url);
      watched.portkey = portkey.processGroup;
    } catch (error) {
      console.log(`(c) Portkey unavailable: ${(error as Error).message.split("\n")[0]}`);
    }
    const [budgeted, unbudgeted, ...bare] = await workerCases(worker.baseUrl);
    const cases: Case[] = [
      {
        name: "(a) upstream direct",
        url: `${upstream.url}/v1/chat/completions`,
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer sk-fake" },
        body: CHAT_BODY,
      },
      budgeted,
      unbudgeted,
      ...(portkey
        ? [
            {
              name: "(c) Portkey gateway",
              url: portkey.url,
              method: "POST" as const,
              headers: portkey.headers,
              body: CHAT_BODY,
            },
          ]
        : []),
      ...bare,
    ];
    await checkCases(cases);
    for (const testCase of cases) await load(testCase, 10, 2);

    const byCase = new Map<string, Figures[]>();
    for (let round = 1; round <= ROUNDS; round++) {
      for (const testCase of roundOrder(cases, round)) {
        const figures = await load(testCase, CONNECTIONS, DURATION_SECONDS);
        figures.name = `${testCase.name} #${round}`;
        console.log(format(figures));
        byCase.set(testCase.name, [...(byCase.get(testCase.name) ?? []), figures]);
      }
    }
    console.log(
      `sequential pass (${SEQUENTIAL_REQUESTS} requests each, one at a time, in ${SEQUENTIAL_BLOCKS} blocks ordered like the rounds):`,
    );
    const passes = cases.map((testCase) => {
      const samples: Samples = { times: [], blockP50sMs: [], errors: 0, elapsedMs: 0 };
      return { name: testCase.name, testCase, samples };
    });
    for (let block = 1; block <= SEQUENTIAL_BLOCKS; block++) {
      for (const pass of roundOrder(passes, block)) {
        await sequential(pass.testCase, Math.ceil(SEQUENTIAL_REQUESTS / SEQUENTIAL_BLOCKS), pass.samples);
      }
    }
    const seq = new Map<string, Figures>();
    for (const pass of passes) {
      const figures = sequentialFigures(`${pass.name} seq`, pass.samples);
      console.log(format(figures));
      seq.set(pass.name, figures);
    }

    const meanOf = (name: string, value: (figures: Figures) => number) => {
      const runs = byCase.get(name) ?? [];
      return runs.reduce((sum, run) => sum + value(run), 0) / Math.max(1, runs.length);
    };
    const meanP50 = (name: string) => meanOf(name, (figures) => figures.p50Ms);
    const [b1, d1, d3, e] = [
      "(b1) our router, no budgets",
      "(d1) bare GET /health",
      "(d3) bare upstream hop",
      "(e) auth+limit /whoami",
    ];
    const [a, b, c, d] = [
      "(a) upstream direct",
      "(b) our router /llm/chat/completions",
      "(c) Portkey gateway",
      "(d) bare Hono route POST /__debug/bare",
    ];
    const failures = [...[...byCase.values()].flat(), ...seq.values()]
      .filter((figures) => figures.errors > 0 || figures.non2xx > 0)
      .map((figures) => figures.name);
    // Sequential p50s are fractions of a millisecond apart: shown to 0.01 ms, so a verdict never contradicts its figures.
    const report = (label: string, p50: (name: string) => number, digits = 1) => {
      const ms = (value: number) => value.toFixed(digits);
      const ours = p50(b) - p50(d);
      // Our route's added latency less the upstream's own (a): what routing adds beyond serving the call.
      const ownOnly = ours - p50(a);
      console.log(
        `${label}: parts: the runtime carrying the body (d)−(d1) ${ms(p50(d) - p50(d1))} ms; auth+limit (e)−(d1) ${ms(p50(e) - p50(d1))} ms; the runtime's outbound hop (d3)−(d) ${ms(p50(d3) - p50(d))} ms; the router's own cost (b)−(d3) ${ms(p50(b) - p50(d3))} ms, of which budgets (b)−(b1) ${ms(p50(b) - p50(b1))} ms`,
      );
      if (!portkey) {
        console.log(
          `${label}: our route adds ${ms(ours)} ms p50 over (d) (${ms(ownOnly)} ms beyond the upstream's own p50); Portkey not measured`,
        );
        return;
      }
      const theirs = p50(c) - p50(a);
      // A case that failed has no latency worth comparing (a dead server answers fast).
      const verdict = (added: number) =>
        failures.length > 0
          ? `no verdict: errors in ${failures.join(", ")}`
          : added <= theirs
            ? "goal met"
            : "goal NOT met";
      console.log(
        `${label}: Portkey adds ${ms(theirs)} ms p50 over (a); our route adds ${ms(ours)} ms p50 over (d) (${ms(ownOnly)} ms beyond the upstream's own p50) → ${verdict(ours)} (ours ≤ Portkey's)`,
      );
      const overGet = p50(b) - p50(d1);
      console.log(
        `${label}: over the GET floor (d1) instead, which leaves the body's carriage on our side: our route adds ${ms(overGet)} ms → ${verdict(overGet)}`,
      );
      // Any router here makes that one fetch, so the runtime's hop is a floor no router code can go under.
      const hop = p50(d3) - p50(d);
      console.log(
        `${label}: the floor for any router under this runtime, its outbound hop (d3)−(d), is ${ms(hop)} ms; Portkey's ${ms(theirs)} ms leaves ${ms(theirs - hop)} ms for all a router does beyond that fetch (ours: (b)−(d3) ${ms(p50(b) - p50(d3))} ms)`,
      );
    };
    /** Each round's or block's added latencies, Portkey's and ours (over (d), and over (d1)), paired. */
    const pairedLine = (unit: string, p50s: (name: string) => number[], digits: number) => {
      const added = addedOver(p50s);
      const theirs = added(a, c);
      const [overBare, overGet] = [pairedDifference(theirs, added(d, b)), pairedDifference(theirs, added(d1, b))];
      const ms = (value: number) => value.toFixed(digits);
      return `ours ≤ Portkey's in ${overBare.met} of ${overBare.count} ${unit}; ours − Portkey's: mean ${ms(overBare.meanMs)} ms, standard error ${ms(overBare.standardErrorMs)} ms (over (d1): mean ${ms(overGet.meanMs)}, standard error ${ms(overGet.standardErrorMs)})`;
    };
    report(`20 connections (mean of ${ROUNDS} rounds)`, meanP50);
    if (portkey) {
      // The pairs ran back to back (roundOrder), so each round's two differences saw the same machine.
      const p50s = (name: string) => (byCase.get(name) ?? []).map((figures) => figures.p50Ms);
      const added = addedOver(p50s);
      const list = (values: number[]) => values.map((value) => value.toFixed(1)).join(", ");
      // How sure the mean verdict is: the paired differences' mean and its standard error (this VM's rounds swing by ms).
      console.log(
        `20 connections, round by round: Portkey adds ${list(added(a, c))} ms; our route adds ${list(added(d, b))} ms; ${pairedLine("rounds", p50s, 1)}`,
      );
    }
    // Budgets' own cost, paired like the rest: (b) and (b1) run back to back in every round and block.
    const budgetsLine = (unit: string, p50s: (name: string) => number[], digits: number) => {
      const paired = pairedDifference(p50s(b1), p50s(b));
      return `budgets (b)−(b1), ${unit} paired: mean ${paired.meanMs.toFixed(digits)} ms, standard error ${paired.standardErrorMs.toFixed(digits)} ms`;
    };
    console.log(
      `20 connections: ${budgetsLine("rounds", (name) => (byCase.get(name) ?? []).map((figures) => figures.p50Ms), 1)}`,
    );
    const workerdMs = (name: string) => meanOf(name, (figures) => figures.cpu?.workerd ?? 0);
    console.log(
      `CPU per request at 20 connections (mean of ${ROUNDS} rounds): wrangler dev's workerd processes (the dev proxy and the Worker) spend ${workerdMs(d1).toFixed(2)} ms on (d1), ${workerdMs(d).toFixed(2)} on (d), ${workerdMs(d3).toFixed(2)} on (d3), ${workerdMs(b).toFixed(2)} on (b): (b) over (d) ${(workerdMs(b) - workerdMs(d)).toFixed(2)} ms, of which the hop (d3)−(d) ${(workerdMs(d3) - workerdMs(d)).toFixed(2)} and the router (b)−(d3) ${(workerdMs(b) - workerdMs(d3)).toFixed(2)}` +
        (portkey
          ? `; Portkey's process spends ${meanOf(c, (figures) => figures.cpu?.portkey ?? 0).toFixed(2)} ms on (c)`
          : ""),
    );
    report("sequential", (name) => seq.get(name)?.p50Ms ?? Number.NaN, 2);
    if (portkey) {
      // The whole pass's p50s above pool blocks minutes apart; these pair each block's, as for the rounds.
      const blockP50s = (name: string) => passes.find((pass) => pass.name === name)?.samples.blockP50sMs ?? [];
      console.log(`sequential, block by block: ${pairedLine("blocks", blockP50s, 2)}`);
      const hopAlone = pairedDifference(addedOver(blockP50s)(a, c), addedOver(blockP50s)(d, d3));
      console.log(
        `sequential, block by block: the hop alone (d3)−(d) ≤ Portkey's in ${hopAlone.met} of ${hopAlone.count} blocks; hop − Portkey's: mean ${hopAlone.meanMs.toFixed(2)} ms, standard error ${hopAlone.standardErrorMs.toFixed(2)} ms`,
      );
    }
    console.log(
      `sequential: ${budgetsLine("blocks", (name) => passes.find((pass) => pass.name === name)?.samples.blockP50sMs ?? [], 2)}`,
    );
    console.log(`upstream saw ${upstream.received} requests`);
    if (portkey) {
      // The headline, last as BENCHMARKS.md asks: the goal as a ratio, at 20 connections and sequentially.
      const ratio = (label: string, p50: (name: string) => number, digits: number) => {
        const [ours, theirs] = [p50(b) - p50(d), p50(c) - p50(a)];
        const verdict = failures.length > 0 ? "no verdict" : ours <= theirs ? "met" : "NOT met";
        return `${label} ${ours.toFixed(digits)} / ${theirs.toFixed(digits)} ms = ${(ours / theirs).toFixed(2)} → ${verdict}`;
      };
      const seqP50 = (name: string) => seq.get(name)?.p50Ms ?? Number.NaN;
      const ratios = [...(ROUNDS > 0 ? [ratio("20 connections", meanP50, 1)] : []), ratio("sequential", seqP50, 2)];
      console.log(
        `p50 added, ours (b)−(d) / Portkey's (c)−(a): ${ratios.join("; ")} (goal ≤ 1.00)` +
          (failures.length > 0 ? `; errors in ${failures.join(", ")}` : ""),
      );
    }
  } finally {
    portkey?.stop();
    await worker?.stop();
    await upstream.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
