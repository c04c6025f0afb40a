import { writeFile } from "node:fs/promises";
import WebSocket from "ws";

/**
 * A CPU profile of the Worker under `wrangler dev`, through its inspector
 * (Chrome DevTools Protocol): start the harness with
 * `WRANGLER_INSPECTOR_PORT` set, `attachProfiler(port)`, then `start()` and
 * `stop()` around the part to look at. The profile covers the Worker's
 * isolate (routes, queue consumer and Durable Objects run there locally) and
 * opens in Chrome DevTools or speedscope; `summarize` prints where the time went.
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  startTime: number;
  endTime: number;
}

export interface Profiler {
  start(): Promise<void>;
  /** Stops, writes the profile to `path` (`.cpuprofile`), and returns it. */
  stop(path: string): Promise<CpuProfile>;
  close(): void;
}

export async function attachProfiler(inspectorPort: number, samplingIntervalUs = 200): Promise<Profiler> {
  const targets = (await (await fetch(`http://127.0.0.1:${inspectorPort}/json`)).json()) as {
    webSocketDebuggerUrl: string;
  }[];
  if (targets.length === 0) throw new Error("the inspector lists no Worker to profile");
  const socket = new WebSocket(targets[0].webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    socket.once("open", resolve);
    socket.once("error", reject);
  });
  let nextId = 0;
  const waiting = new Map<number, (result: unknown) => void>();
  socket.on("message", (data) => {
    const message = JSON.parse(String(data)) as { id?: number; result?: unknown };
    if (message.id === undefined) return;
    waiting.get(message.id)?.(message.result);
    waiting.delete(message.id);
  });
  const call = <T>(method: string, params: object = {}) =>
    new Promise<T>((resolve) => {
      const id = ++nextId;
      waiting.set(id, resolve as (result: unknown) => void);
      socket.send(JSON.stringify({ id, method, params }));
    });
  await call("Profiler.enable");
  await call("Profiler.setSamplingInterval", { interval: samplingIntervalUs });
  return {
    start: async () => {
      await call("Profiler.start");
    },
    stop: async (path) => {
      const { profile } = await call<{ profile: CpuProfile }>("Profiler.stop");
      await writeFile(path, JSON.stringify(profile));
      return profile;
    },
    close: () => socket.close(),
  };
}

/** The functions with the most samples, by self time and including callees, as printable lines. */
export function summarize(profile: CpuProfile, top = 25): string {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parentOf = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);
  const hits = new Map<number, number>();
  for (const sample of profile.samples) hits.set(sample, (hits.get(sample) ?? 0) + 1);
  const label = (node: ProfileNode) => {
    const file = node.callFrame.url.split("/").at(-1) || "(native)";
    return `${node.callFrame.functionName || "(anonymous)"} ${file}:${node.callFrame.lineNumber + 1}`;
  };
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  for (const [id, count] of hits) {
    const node = byId.get(id);
    if (!node) continue;
    self.set(label(node), (self.get(label(node)) ?? 0) + count);
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parentOf.get(at)) {
      const ancestor = byId.get(at);
      if (!ancestor) break;
      const name = label(ancestor);
      if (seen.has(name)) continue;
      seen.add(name);
      total.set(name, (total.get(name) ?? 0) + count);
    }
  }
  const samples = profile.samples.length;
  const msPerSample = (profile.endTime - profile.startTime) / 1000 / samples;
  const lines = (counts: Map<string, number>) =>
    [...counts]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(
        ([name, count]) =>
          `  ${(count * msPerSample).toFixed(0).padStart(6)} ms ${((100 * count) / samples).toFixed(1).padStart(5)} %  ${name}`,
      )
      .join("\n");
  return `self time:\n${lines(self)}\nincluding callees:\n${lines(total)}`;
}
