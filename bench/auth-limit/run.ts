/**
 * bench/auth-limit: what authentication + rate limiting cost per request.
 * One `wrangler dev`; alternating cases, each twice, 50 connections for 10 s:
 *   (a) GET /health — the bare route (full middleware, no auth, no limiter)
 *   (b) GET /api/v1/whoami with an API key — authenticated and rate limited
 * Then an over-admission check: a flood against a small bucket must admit at
 * most burst + rate·t. Prints the ratio (b)/(a) against the goal (≥ 0.60).
 */

import { startWorker } from "../../test/e2e/harness.ts";
import { createTestWorkspace, TEST_ADMIN_TOKEN } from "../../test/support/workspaces.ts";
import { formatResult, type LoadResult, runLoad } from "../lib/load.ts";

const CONNECTIONS = 50;
const DURATION_SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const ROUNDS = 2;
const GOAL_RATIO = 0.6;

async function overAdmissionCheck(baseUrl: string): Promise<string> {
  const burst = 20;
  const ratePerSecond = 10;
  const workspace = await createTestWorkspace(fetch, baseUrl, {
    limits: { requests_per_second: ratePerSecond, burst },
  });
  const startedAtMs = Date.now();
  let admitted = 0;
  let refused = 0;
  await Promise.all(
    Array.from({ length: 50 }, async () => {
      for (let index = 0; index < 20; index++) {
        const response = await fetch(`${baseUrl}/api/v1/whoami`, { headers: workspace.headers });
        await response.arrayBuffer();
        if (response.status === 200) admitted++;
        else if (response.status === 429) refused++;
      }
    }),
  );
  const elapsedSeconds = (Date.now() - startedAtMs) / 1000;
  const bound = burst + ratePerSecond * elapsedSeconds;
  const verdict = admitted <= Math.ceil(bound) ? "ok" : "OVER-ADMITTED";
  return `over-admission check: ${admitted} admitted, ${refused} refused in ${elapsedSeconds.toFixed(2)} s; bound burst + rate·t = ${bound.toFixed(1)} → ${verdict}`;
}

async function main(): Promise<void> {
  const worker = await startWorker({ vars: { ADMIN_TOKEN: TEST_ADMIN_TOKEN, LOG_LEVEL: "warn" } });
  try {
    const workspace = await createTestWorkspace(fetch, worker.baseUrl, {
      limits: { requests_per_second: 100_000, burst: 100_000 },
    });
    const bare = `${worker.baseUrl}/health`;
    const authed = `${worker.baseUrl}/api/v1/whoami`;
    // Warm-up: both paths, so neither pays first-request costs in the measurement.
    await runLoad("warm-up bare", bare, { connections: 10, durationSeconds: 2 });
    await runLoad("warm-up auth+limit", authed, { connections: 10, durationSeconds: 2, headers: workspace.headers });

    const results: { bare: LoadResult; authed: LoadResult }[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      const bareResult = await runLoad(`(a) bare /health #${round}`, bare, {
        connections: CONNECTIONS,
        durationSeconds: DURATION_SECONDS,
      });
      const authedResult = await runLoad(`(b) auth+limit /whoami #${round}`, authed, {
        connections: CONNECTIONS,
        durationSeconds: DURATION_SECONDS,
        headers: workspace.headers,
      });
      console.log(formatResult(bareResult));
      console.log(formatResult(authedResult));
      console.log(
        `    round ${round}: (b)/(a) = ${(authedResult.requestsPerSecond / bareResult.requestsPerSecond).toFixed(2)}`,
      );
      results.push({ bare: bareResult, authed: authedResult });
    }

    console.log(await overAdmissionCheck(worker.baseUrl));
    const bareTotal = results.reduce((sum, round) => sum + round.bare.requestsPerSecond, 0);
    const authedTotal = results.reduce((sum, round) => sum + round.authed.requestsPerSecond, 0);
    const ratio = authedTotal / bareTotal;
    console.log(`auth+limit / bare = ${ratio.toFixed(2)} (goal ≥ ${GOAL_RATIO.toFixed(2)})`);
  } finally {
    await worker.stop();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
