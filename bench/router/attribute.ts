/**
 * bench/router/attribute.ts: where the router's sequential latency goes, by
 * JavaScript function. One request at a time through `wrangler dev` is bound
 * by CPU: the dev proxy's workerd and the Worker's workerd work in turn, and
 * their CPU per request adds up to about the request's latency. So what (b)
 * adds over (d3), the same upstream fetch from a bare route, is CPU, and this
 * says whose.
 *
 * It samples both workerd processes with Linux `perf` (cpu-clock, call
 * graphs) while each case runs sequentially, with V8 writing its perf map
 * (MINIFLARE_WORKERD_V8_FLAGS="--perf-basic-prof …", which miniflare passes
 * to workerd), so JIT frames are named `JS:<tier>function file:line`. Each
 * sample is charged to the innermost JavaScript frame on its stack (the
 * function itself plus the runtime calls it makes: fetch, Headers, crypto);
 * samples with none are the runtime's own (event loop, promise reactions,
 * I/O, GC). Prints each process's CPU per request and the functions whose
 * share differs most between (b) and (d3).
 *
 * Read the figures as shares, not as what a request costs unprofiled:
 * sampling call graphs 4,000 times a second costs the sampled processes CPU of
 * its own, which /proc counts too (each case's line gives both, and they
 * agree). On 2026-11-28 the Worker's (b) − (d3) read 0.94–1.10 ms here, and
 * 0.54 ms from /proc in a run without perf, where the dev proxy cost (b) and
 * (d3) the same (2.05 ms per request); here the proxy read 0.17–0.61 ms
 * dearer for (b), perf's own cost growing with the time (b) holds it.
 *
 * Needs `perf` (Debian: linux-perf) and root or perf_event_paranoid ≤ 1.
 * Not part of CI. Line numbers refer to the bundle wrangler dev built,
 * copied to ATTRIBUTE_BUNDLE (default /tmp/mgx-attribute-bundle.js).
 *   node bench/router/attribute.ts        (ATTRIBUTE_REQUESTS, default 4000, in
 *                                          ATTRIBUTE_STRETCHES alternating stretches, default 4)
 */

import { execFileSync, spawn } from "node:child_process";
import { copyFileSync, readdirSync, statSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { startFakeOpenAi } from "../../test/fakes/openai.ts";
import { cpuSpent, groupCpu } from "../lib/process-cpu.ts";
import { type Case, checkCases, send, startRouterWorker, workerCases } from "./setup.ts";

const REQUESTS = Number(process.env.ATTRIBUTE_REQUESTS ?? 4_000);
/**
 * Each case's requests run in this many stretches, the two cases alternating (b, d3, d3, b, b, …), and their
 * figures are averaged: this VM's speed drifts by tens of percent within minutes, and with one stretch per case
 * all of that drift fell between the two.
 */
const STRETCHES = Number(process.env.ATTRIBUTE_STRETCHES ?? 4);
const WARMUP_REQUESTS = 1_500;
const SAMPLES_PER_SECOND = 4_000;
const SAMPLE_MS = 1_000 / SAMPLES_PER_SECOND;
const TOP_FUNCTIONS = Number(process.env.ATTRIBUTE_TOP ?? 30);
const BUNDLE_COPY = process.env.ATTRIBUTE_BUNDLE ?? "/tmp/mgx-attribute-bundle.js";
const PROJECT_ROOT = resolve(import.meta.dirname, "../..");
const RUNTIME_OWN = "(runtime: event loop, promises, I/O, GC)";

/** CPU ms per request, by process and, within each, by innermost JavaScript function. */
type Attribution = Map<number, Map<string, number>>;

async function sequentialP50(testCase: Case, count: number): Promise<number> {
  const times: number[] = [];
  for (let index = 0; index < count; index++) {
    const startedMs = performance.now();
    const response = await send(testCase);
    await response.arrayBuffer();
    if (!response.ok) throw new Error(`${testCase.name} answered ${response.status}`);
    times.push(performance.now() - startedMs);
  }
  return times.sort((x, y) => x - y)[Math.floor(count / 2)];
}

/** "JS:*chat index.js:50805:13" → "chat index.js:50805:13": V8's tier marks (~ ^ + * ') differ run to run. */
function jsFrame(frame: string): string | undefined {
  const at = frame.indexOf("JS:");
  return at < 0 ? undefined : frame.slice(at + 3).replace(/^[~^+*']+/, "");
}

/**
 * Reads `perf script -F pid,tid,ip,sym` as it streams (hundreds of MB for a run): a "pid/tid" line,
 * then one frame per line, leaf first, then a blank line.
 */
async function attribute(perfData: string, requests: number): Promise<Attribution> {
  const byProcess: Attribution = new Map();
  const script = spawn("perf", ["script", "-i", perfData, "-F", "pid,tid,ip,sym"], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  let pid: number | undefined;
  let owner: string | undefined;
  const charge = () => {
    if (pid === undefined) return;
    const functions = byProcess.get(pid) ?? new Map<string, number>();
    const name = owner ?? RUNTIME_OWN;
    functions.set(name, (functions.get(name) ?? 0) + SAMPLE_MS / requests);
    byProcess.set(pid, functions);
    pid = owner = undefined;
  };
  for await (const line of createInterface({ input: script.stdout })) {
    if (line.trim() === "") charge();
    else if (/^\s*\d+\/\d+/.test(line)) pid = Number(line.trim().split("/")[0]);
    else owner ??= jsFrame(line);
  }
  charge();
  return byProcess;
}

/** A stretch's figures: perf's, by function, and the kernel's own account of each process's CPU (/proc). */
interface Profiled {
  p50Ms: number;
  cpu: Attribution;
  kernelMsPerRequest: Map<number, number>;
}

async function profile(
  testCase: Case,
  pids: number[],
  processGroup: number,
  directory: string,
  requests: number,
): Promise<Profiled> {
  const output = join(directory, "perf.data");
  const recorder = spawn(
    "perf",
    ["record", "-e", "cpu-clock", "-F", String(SAMPLES_PER_SECOND), "-g", "-p", pids.join(","), "-o", output],
    { stdio: "ignore" },
  );
  const exited = new Promise((done) => recorder.once("exit", done));
  let stoppedEarly = false;
  void exited.then(() => (stoppedEarly = true));
  await new Promise((wake) => setTimeout(wake, 500));
  const before = groupCpu([processGroup]);
  const p50Ms = await sequentialP50(testCase, requests);
  const kernelMsPerRequest = new Map(
    [...cpuSpent(before, groupCpu([processGroup]))].map(([pid, spent]) => [pid, spent.cpuMs / requests]),
  );
  // perf record ends at once when a process it is given is gone (wrangler dev restarts the Worker's workerd
  // when a source file changes): waiting for an exit that had already happened hung the run.
  if (stoppedEarly) {
    throw new Error("perf record ended before the requests did: did wrangler dev restart the Worker (a file changed)?");
  }
  recorder.kill("SIGINT");
  await exited;
  return { p50Ms, cpu: await attribute(output, requests), kernelMsPerRequest };
}

/** The mean of equal stretches: each function's CPU per request, each process's, and the p50. */
function averaged(runs: Profiled[]): Profiled {
  const cpu: Attribution = new Map();
  const kernelMsPerRequest = new Map<number, number>();
  for (const run of runs) {
    for (const [pid, functions] of run.cpu) {
      const sums = cpu.get(pid) ?? new Map<string, number>();
      for (const [name, ms] of functions) sums.set(name, (sums.get(name) ?? 0) + ms / runs.length);
      cpu.set(pid, sums);
    }
    for (const [pid, ms] of run.kernelMsPerRequest) {
      kernelMsPerRequest.set(pid, (kernelMsPerRequest.get(pid) ?? 0) + ms / runs.length);
    }
  }
  return { p50Ms: runs.reduce((sum, run) => sum + run.p50Ms, 0) / runs.length, cpu, kernelMsPerRequest };
}

const total = (functions: Map<string, number> | undefined) =>
  [...(functions ?? new Map()).values()].reduce((sum, value) => sum + value, 0);

/** The process running our bundle (index.js) is the Worker's; the other one is wrangler dev's proxy. */
function workerProcess(cpu: Attribution): number {
  const ours = (functions: Map<string, number>) =>
    [...functions].filter(([name]) => name.includes(" index.js:")).reduce((sum, [, ms]) => sum + ms, 0);
  return [...cpu].sort(([, x], [, y]) => ours(y) - ours(x))[0][0];
}

function newestBundle(): string {
  const tmp = join(PROJECT_ROOT, ".wrangler/tmp");
  const builds = readdirSync(tmp)
    .filter((name) => name.startsWith("dev-"))
    .map((name) => join(tmp, name, "index.js"))
    .sort((x, y) => statSync(y).mtimeMs - statSync(x).mtimeMs);
  return builds[0];
}

const perfMaps = () => readdirSync("/tmp").filter((name) => /^perf-\d+\.map$/.test(name));

async function main(): Promise<void> {
  const mapsBefore = new Set(perfMaps());
  // V8 writes its log (unused here) beside the perf map: to /dev/null, not an isolate-*.log per isolate in the project.
  process.env.MINIFLARE_WORKERD_V8_FLAGS =
    "--perf-basic-prof --interpreted-frames-native-stack --no-logfile-per-isolate --logfile=/dev/null";
  const upstream = await startFakeOpenAi({ keepRequests: false });
  const worker = await startRouterWorker(upstream.url, { localObservability: false });
  const directory = await mkdtemp(join(tmpdir(), "mgx-attribute-"));
  try {
    const cases = await workerCases(worker.baseUrl);
    const [routed, hop] = [cases[0], cases.find((testCase) => testCase.name.startsWith("(d3)"))!];
    await checkCases([routed, hop]);
    copyFileSync(newestBundle(), BUNDLE_COPY);
    const pids = execFileSync("pgrep", ["-g", String(worker.processGroup), "workerd"])
      .toString()
      .trim()
      .split("\n")
      .map(Number);
    for (const testCase of [routed, hop]) await sequentialP50(testCase, WARMUP_REQUESTS);
    const stretches = new Map<Case, Profiled[]>([
      [routed, []],
      [hop, []],
    ]);
    for (let stretch = 0; stretch < STRETCHES; stretch++) {
      for (const testCase of stretch % 2 === 0 ? [routed, hop] : [hop, routed]) {
        const requests = Math.ceil(REQUESTS / STRETCHES);
        stretches.get(testCase)?.push(await profile(testCase, pids, worker.processGroup, directory, requests));
      }
    }
    const [ours, theirs] = [averaged(stretches.get(routed) ?? []), averaged(stretches.get(hop) ?? [])];
    const workerPid = workerProcess(ours.cpu);
    const proxyPid = pids.find((pid) => pid !== workerPid && ours.cpu.has(pid));
    console.log(
      `${REQUESTS} sequential requests each, in ${STRETCHES} alternating stretches; bundle copied to ${BUNDLE_COPY}`,
    );
    for (const [label, run] of [
      [routed.name, ours],
      [hop.name, theirs],
    ] as const) {
      const kernel = (pid: number | undefined) => (pid === undefined ? 0 : (run.kernelMsPerRequest.get(pid) ?? 0));
      console.log(
        `${label}: p50 ${run.p50Ms.toFixed(2)} ms; CPU per request: the Worker's workerd ${total(run.cpu.get(workerPid)).toFixed(3)} ms, the dev proxy's ${total(proxyPid === undefined ? undefined : run.cpu.get(proxyPid)).toFixed(3)} ms (by /proc: ${kernel(workerPid).toFixed(3)} and ${kernel(proxyPid).toFixed(3)} ms)`,
      );
    }
    // The dev proxy too: it relays every request and answer, so what (b) sends through it costs there as well.
    for (const [whose, pid, top] of [
      ["the Worker's", workerPid, TOP_FUNCTIONS],
      ["the dev proxy's", proxyPid, Math.ceil(TOP_FUNCTIONS / 3)],
    ] as const) {
      if (pid === undefined) continue;
      const [mine, bare] = [ours.cpu.get(pid) ?? new Map(), theirs.cpu.get(pid) ?? new Map()];
      const rows = [...new Set([...mine.keys(), ...bare.keys()])]
        .map((name) => ({ name, ours: mine.get(name) ?? 0, theirs: bare.get(name) ?? 0 }))
        .sort((x, y) => y.ours - y.theirs - (x.ours - x.theirs));
      console.log(
        `${whose} CPU per request, (b) − (d3) = ${(total(mine) - total(bare)).toFixed(3)} ms; by innermost JavaScript function, the ${top} largest differences (ms):`,
      );
      for (const row of rows.slice(0, top)) {
        console.log(
          `  ${(row.ours - row.theirs >= 0 ? "+" : "") + (row.ours - row.theirs).toFixed(3)}  (b) ${row.ours.toFixed(3)}  (d3) ${row.theirs.toFixed(3)}  ${row.name}`,
        );
      }
      const dearer = rows.filter((row) => row.name !== RUNTIME_OWN && row.ours > row.theirs);
      const dearerMs = dearer.reduce((sum, row) => sum + row.ours - row.theirs, 0);
      console.log(
        `${whose}: ${dearer.length} JavaScript functions cost (b) more than (d3), ${dearerMs.toFixed(3)} ms together; the runtime's own share grew ${((mine.get(RUNTIME_OWN) ?? 0) - (bare.get(RUNTIME_OWN) ?? 0)).toFixed(3)} ms`,
      );
    }
  } finally {
    await worker.stop();
    await upstream.close();
    await rm(directory, { recursive: true, force: true });
    // V8 writes a perf map per process into /tmp, megabytes each: the runtime's, and those of the
    // workerd that applied the migrations.
    for (const name of perfMaps()) if (!mapsBefore.has(name)) await rm(join("/tmp", name), { force: true });
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
