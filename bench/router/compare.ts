/**
 * Two versions of the router, side by side: whether a change made the
 * sequential path slower or faster, beyond the drift of a shared machine.
 * One sequential run of bench:router moves by tenths of a millisecond from
 * hour to hour on this VM, more than most changes; here both versions run
 * under `wrangler dev` at once and are measured in alternating blocks, so
 * the drift falls on both alike.
 *
 *   COMPARE_ROOTS=/path/to/old-checkout,/path/to/new-checkout npm run bench:router:compare
 *
 * Each root is a checkout of this project with its node_modules installed
 * (e.g. `git worktree add --detach /tmp/old <commit> && (cd /tmp/old && npm ci)`).
 * It prints, per version, the mean of the blocks' sequential p50 for (b) the
 * router, (b1) the router without budgets, (d3) the bare upstream hop and
 * (d) the bare route, the Worker's CPU per request for (b), and the paired
 * difference of (b)−(d) between the second version and the first.
 */

import { startFakeOpenAi } from "../../test/fakes/openai.ts";
import { groupCpu } from "../lib/process-cpu.ts";
import type { Case } from "./setup.ts";

const ROOTS = (process.env.COMPARE_ROOTS ?? "").split(",").filter(Boolean);
const BLOCK_REQUESTS = Number(process.env.COMPARE_BLOCK ?? 300);
const ROUNDS = Number(process.env.COMPARE_ROUNDS ?? 6);
const CASES = ["(b) ", "(b1)", "(d3)", "(d) "] as const;

if (ROOTS.length !== 2) {
  console.error("COMPARE_ROOTS must name two checkouts: the old version, then the new one");
  process.exit(2);
}

type Setup = typeof import("./setup.ts");

async function startVersion(root: string, upstreamUrl: string) {
  const setup: Setup = await import(`${root}/bench/router/setup.ts`);
  const worker = await setup.startRouterWorker(upstreamUrl, { localObservability: false });
  const all = await setup.workerCases(worker.baseUrl);
  const cases = CASES.map((prefix) => all.find((testCase) => testCase.name.startsWith(prefix.trim()))!);
  await setup.checkCases(cases);
  // The Worker's own workerd (the one with an inspector), not the dev proxy's.
  const workerPid = groupCpu([worker.processGroup]).find((process) =>
    process.command.includes("--inspector-addr"),
  )?.pid;
  const workerCpuMs = () => groupCpu([worker.processGroup]).find((process) => process.pid === workerPid)?.cpuMs ?? 0;
  /** The block's p50 in ms, and the Worker's CPU per request in it. */
  async function block(testCase: Case, requests: number): Promise<{ p50Ms: number; cpuMs: number }> {
    const cpuBefore = workerCpuMs();
    const times: number[] = [];
    for (let index = 0; index < requests; index++) {
      const startedMs = performance.now();
      const response = await setup.send(testCase);
      await response.arrayBuffer();
      times.push(performance.now() - startedMs);
      if (!response.ok) throw new Error(`${root}: ${testCase.name} answered ${response.status}`);
    }
    times.sort((a, b) => a - b);
    return { p50Ms: times[Math.floor(times.length / 2)], cpuMs: (workerCpuMs() - cpuBefore) / requests };
  }
  const p50s = CASES.map(() => [] as number[]);
  const routerCpuMs: number[] = [];
  return { root, worker, cases, block, p50s, routerCpuMs };
}

const mean = (values: number[]) => values.reduce((sum, value) => sum + value, 0) / values.length;
const standardError = (values: number[]) =>
  Math.sqrt(values.reduce((sum, value) => sum + (value - mean(values)) ** 2, 0) / (values.length - 1) / values.length);

type Version = Awaited<ReturnType<typeof startVersion>>;

const upstream = await startFakeOpenAi({ keepRequests: false });
const versions: Version[] = [];
try {
  for (const root of ROOTS) versions.push(await startVersion(root, upstream.url));
  for (const version of versions) for (const testCase of version.cases) await version.block(testCase, 200);
  for (let round = 0; round < ROUNDS; round++) {
    for (const version of round % 2 === 0 ? versions : [...versions].reverse()) {
      for (const [index, testCase] of version.cases.entries()) {
        const measured = await version.block(testCase, BLOCK_REQUESTS);
        version.p50s[index].push(measured.p50Ms);
        if (index === 0) version.routerCpuMs.push(measured.cpuMs);
      }
    }
  }
  for (const version of versions) {
    const figures = CASES.map((name, index) => `${name.trim()} ${mean(version.p50s[index]).toFixed(2)}`).join(", ");
    console.log(
      `${version.root}: sequential p50 (ms): ${figures}; (b)−(d) ${(mean(version.p50s[0]) - mean(version.p50s[3])).toFixed(2)}; Worker CPU per (b) request ${mean(version.routerCpuMs).toFixed(3)} ms`,
    );
  }
  const [before, after] = versions;
  const added = (version: Version) => version.p50s[0].map((b, index) => b - version.p50s[3][index]);
  const difference = added(after).map((value, index) => value - added(before)[index]);
  console.log(
    `(b)−(d), second − first, blocks paired: ${mean(difference).toFixed(2)} ms, standard error ${standardError(difference).toFixed(2)} ms over ${ROUNDS} rounds of ${BLOCK_REQUESTS} requests a case`,
  );
} finally {
  for (const version of versions) await version.worker.stop();
  await upstream.close();
}
process.exit(0);
