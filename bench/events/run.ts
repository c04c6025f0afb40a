/**
 * bench/events: the EventHub against a bare hibernating broadcast, same run, same shape.
 *   100 `ws` subscribers on one hub, a burst of 1,000 events published over HTTP
 *   (8 in flight), alternating bare / hub, twice each. Then the time for a new
 *   client to replay 1,000 missed events, against the time the burst took live.
 * The hub persists (DO SQLite), validates (zod, on publish) and filters
 * (`types=agent.*`) every event; the bare DO only forwards (bench/events/bare).
 * Goals (issue 4): hub ≥ 0.80 × bare throughput; replay < 2 × live.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import WebSocket from "ws";
import { freePort, startWorker } from "../../test/e2e/harness.ts";
import { createTestWorkspace, TEST_ADMIN_TOKEN } from "../../test/support/workspaces.ts";

const SUBSCRIBERS = Number(process.env.BENCH_SUBSCRIBERS ?? 100);
const EVENTS = Number(process.env.BENCH_EVENTS ?? 1_000);
const PUBLISH_CONCURRENCY = 8;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
/** As the SDK does by default. */
const ACK_EVERY = 100;
const CASE_TIMEOUT_MS = 180_000;
const GOAL_THROUGHPUT_RATIO = 0.8;
const GOAL_REPLAY_RATIO = 2;
const ROOT = resolve(import.meta.dirname, "../..");

interface Target {
  name: string;
  socketUrl(round: string): string;
  headers: Record<string, string>;
  /** Publishes event `index`; returns its event id when the server assigns one. */
  publish(round: string, index: number): Promise<string | undefined>;
  acks: boolean;
}

interface CaseResult {
  name: string;
  deliveriesPerSecond: number;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  missing: number;
  liveMs: number;
}

function percentile(sorted: Float64Array, fraction: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))];
}

function messageOf(index: number): string {
  return `bench ${index}`;
}

function eventData(index: number) {
  return { task_id: "task_bench", agent_id: "agent_bench", role: "assistant", message: messageOf(index), tokens: 1 };
}

async function openSockets(url: string, headers: Record<string, string>, count: number): Promise<WebSocket[]> {
  const sockets = Array.from({ length: count }, () => new WebSocket(url, { headers, perMessageDeflate: false }));
  await Promise.all(
    sockets.map(
      (socket) =>
        new Promise<void>((opened, failed) => {
          socket.once("open", () => opened());
          socket.once("error", failed);
          socket.once("unexpected-response", (_request, response) =>
            failed(new Error(`upgrade answered ${response.statusCode}`)),
          );
        }),
    ),
  );
  return sockets;
}

async function runCase(target: Target, round: string): Promise<CaseResult> {
  const sockets = await openSockets(target.socketUrl(round), target.headers, SUBSCRIBERS);
  const sentAtMs = new Float64Array(EVENTS);
  const latenciesMs = new Float64Array(SUBSCRIBERS * EVENTS);
  let deliveries = 0;
  let lastDeliveryAtMs = 0;
  let finish: () => void = () => {};
  const allDelivered = new Promise<void>((done) => (finish = done));
  for (const socket of sockets) {
    let received = 0;
    socket.on("message", (data) => {
      const nowMs = performance.now();
      const frame = JSON.parse(data.toString());
      if (frame.type !== "event") return;
      const index = Number((frame.event.data.message as string).slice(6));
      latenciesMs[deliveries++] = nowMs - sentAtMs[index];
      lastDeliveryAtMs = nowMs;
      received++;
      if (target.acks && received % ACK_EVERY === 0)
        socket.send(JSON.stringify({ type: "ping", last_seq: frame.event.seq }));
      if (deliveries === SUBSCRIBERS * EVENTS) finish();
    });
  }

  const startedAtMs = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: PUBLISH_CONCURRENCY }, async () => {
      while (next < EVENTS) {
        const index = next++;
        sentAtMs[index] = performance.now();
        await target.publish(round, index);
      }
    }),
  );
  await Promise.race([allDelivered, new Promise((settle) => setTimeout(settle, CASE_TIMEOUT_MS))]);
  const elapsedMs = (deliveries === SUBSCRIBERS * EVENTS ? lastDeliveryAtMs : performance.now()) - startedAtMs;
  for (const socket of sockets) socket.close(1000);
  const sorted = latenciesMs.slice(0, deliveries).sort();
  return {
    name: target.name,
    deliveriesPerSecond: deliveries / (elapsedMs / 1000),
    p50Ms: percentile(sorted, 0.5),
    p95Ms: percentile(sorted, 0.95),
    p99Ms: percentile(sorted, 0.99),
    missing: SUBSCRIBERS * EVENTS - deliveries,
    liveMs: elapsedMs,
  };
}

/** A new client resuming from just before the burst: how long until it holds all of it. */
async function replay(url: string, headers: Record<string, string>): Promise<{ ms: number; count: number }> {
  const startedAtMs = performance.now();
  const socket = new WebSocket(url, { headers, perMessageDeflate: false });
  let count = 0;
  let replayCount = -1;
  await new Promise<void>((done, failed) => {
    socket.on("message", (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.type === "replay") replayCount = frame.count;
      if (frame.type === "event" && ++count === EVENTS) done();
    });
    socket.once("error", failed);
    setTimeout(() => failed(new Error(`replay timed out after ${count} events`)), 60_000);
  });
  const ms = performance.now() - startedAtMs;
  socket.close(1000);
  return { ms, count: replayCount };
}

async function startBare(): Promise<{ baseUrl: string; stop(): Promise<void> }> {
  const persistDir = await mkdtemp(join(tmpdir(), "mgx-bench-bare-"));
  const port = await freePort();
  const child: ChildProcess = spawn(
    process.execPath,
    [
      join(ROOT, "node_modules/wrangler/bin/wrangler.js"),
      "dev",
      "-c",
      join(ROOT, "bench/events/bare/wrangler.toml"),
      "--ip",
      "127.0.0.1",
      "--port",
      String(port),
      "--inspector-port",
      "0",
      "--persist-to",
      persistDir,
      "--show-interactive-dev-session=false",
    ],
    { cwd: ROOT, stdio: "ignore", detached: true, env: { ...process.env, WRANGLER_SEND_METRICS: "false" } },
  );
  const baseUrl = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.pid !== undefined && child.exitCode === null) {
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {
        // Gone already.
      }
      await new Promise((settle) => setTimeout(settle, 1_000));
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // Gone already.
      }
    }
    await rm(persistDir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(`${baseUrl}/health`)).ok) return { baseUrl, stop };
    } catch {
      // Not up yet.
    }
    await new Promise((wake) => setTimeout(wake, 250));
  }
  await stop();
  throw new Error("the bare broadcast worker did not start");
}

function format(result: CaseResult, baseline?: CaseResult): string {
  const ratio = baseline ? `  ×${(result.deliveriesPerSecond / baseline.deliveriesPerSecond).toFixed(2)} of bare` : "";
  return (
    `${result.name.padEnd(10)} ${result.deliveriesPerSecond.toFixed(0).padStart(7)} deliveries/s  ` +
    `publish→receive p50 ${result.p50Ms.toFixed(0)} ms  p95 ${result.p95Ms.toFixed(0)} ms  p99 ${result.p99Ms.toFixed(0)} ms  ` +
    `burst ${result.liveMs.toFixed(0)} ms  missing ${result.missing}${ratio}`
  );
}

async function main(): Promise<void> {
  console.log(`bench/events: ${SUBSCRIBERS} subscribers, ${EVENTS} events, ${PUBLISH_CONCURRENCY} publishes in flight`);
  const [worker, bare] = await Promise.all([
    startWorker({ vars: { ADMIN_TOKEN: TEST_ADMIN_TOKEN, ENABLE_DEBUG_ROUTES: "true", LOG_LEVEL: "warn" } }),
    startBare(),
  ]);
  try {
    const workspaces = new Map<string, { id: string; headers: Record<string, string> }>();
    const workspaceFor = async (round: string) => {
      let workspace = workspaces.get(round);
      if (!workspace) {
        workspace = await createTestWorkspace(fetch, worker.baseUrl, {
          scopes: ["events:read"],
          limits: { requests_per_second: 100_000, burst: 100_000 },
        });
        workspaces.set(round, workspace);
      }
      return workspace;
    };
    const hub: Target = {
      name: "hub",
      acks: true,
      headers: {},
      socketUrl: () => "",
      async publish(round, index) {
        const workspace = await workspaceFor(round);
        const response = await fetch(`${worker.baseUrl}/__debug/events/publish`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({
            workspace_id: workspace.id,
            event_type: "agent.message",
            task_id: "task_bench",
            agent_id: "agent_bench",
            data: eventData(index),
          }),
        });
        if (response.status !== 200) throw new Error(`publish answered ${response.status}: ${await response.text()}`);
        const body = (await response.json()) as { published: { event_id: string }[] };
        return body.published[0].event_id;
      },
    };
    const bareTarget: Target = {
      name: "bare",
      acks: false,
      headers: {},
      socketUrl: (round) => `${bare.baseUrl.replace("http", "ws")}/ws?hub=${round}`,
      async publish(round, index) {
        // The same envelope the hub would send, so frames are the same size.
        const frame = JSON.stringify({
          type: "event",
          event: {
            event_id: `evt_01JBENCH${String(index).padStart(17, "0")}`,
            event_type: "agent.message",
            timestamp: new Date().toISOString(),
            correlation_id: "0af7651916cd43dd8448eb211c80319c",
            workspace_id: "ws_01JBENCHBENCHBENCHBENCHBENC",
            agent_id: "agent_bench",
            task_id: "task_bench",
            data: eventData(index),
            version: "1.0",
            seq: index + 1,
          },
        });
        const response = await fetch(`${bare.baseUrl}/publish?hub=${round}`, { method: "POST", body: frame });
        if (response.status !== 204) throw new Error(`bare publish answered ${response.status}`);
        return undefined;
      },
    };

    const prepareHubRound = async (round: string) => {
      const workspace = await workspaceFor(round);
      hub.headers = workspace.headers;
      hub.socketUrl = () => `${worker.baseUrl.replace("http", "ws")}/api/v1/events/ws?types=agent.*`;
      // A marker before the burst: the replay client resumes from it.
      return hub.publish(round, 0);
    };

    // Warm-up: both paths once, small.
    await prepareHubRound("warm");
    for (const target of [bareTarget, hub]) {
      const sockets = await openSockets(
        target === hub ? hub.socketUrl("warm") : target.socketUrl("warm"),
        target.headers,
        10,
      );
      for (let index = 0; index < 50; index++) await target.publish("warm", index);
      for (const socket of sockets) socket.close(1000);
    }

    const lines: string[] = [];
    const throughputRatios: number[] = [];
    const replayRatios: number[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      const bareResult = await runCase(bareTarget, `bare${round}`);
      const marker = await prepareHubRound(`hub${round}`);
      const hubResult = await runCase(hub, `hub${round}`);
      const workspace = await workspaceFor(`hub${round}`);
      const replayed = await replay(
        `${worker.baseUrl.replace("http", "ws")}/api/v1/events/ws?types=agent.*&last_event_id=${marker}`,
        workspace.headers,
      );
      throughputRatios.push(hubResult.deliveriesPerSecond / bareResult.deliveriesPerSecond);
      replayRatios.push(replayed.ms / hubResult.liveMs);
      lines.push(`round ${round}`);
      lines.push(`  ${format(bareResult)}`);
      lines.push(`  ${format(hubResult, bareResult)}`);
      lines.push(
        `  replay    ${replayed.count} missed events in ${replayed.ms.toFixed(0)} ms ` +
          `(live burst ${hubResult.liveMs.toFixed(0)} ms) → ×${(replayed.ms / hubResult.liveMs).toFixed(2)} of live`,
      );
      console.log(lines.slice(-4).join("\n"));
    }
    const worst = (values: number[], pick: (a: number, b: number) => number) => values.reduce((a, b) => pick(a, b));
    console.log(
      `hub / bare throughput = ${throughputRatios.map((ratio) => ratio.toFixed(2)).join(", ")} ` +
        `(goal ≥ ${GOAL_THROUGHPUT_RATIO}) → ${worst(throughputRatios, Math.min) >= GOAL_THROUGHPUT_RATIO ? "met" : "NOT met"}`,
    );
    console.log(
      `replay 1,000 / live 1,000 = ${replayRatios.map((ratio) => ratio.toFixed(2)).join(", ")} ` +
        `(goal < ${GOAL_REPLAY_RATIO}) → ${worst(replayRatios, Math.max) < GOAL_REPLAY_RATIO ? "met" : "NOT met"}`,
    );
  } finally {
    await Promise.all([worker.stop(), bare.stop()]);
  }
}

await main();
