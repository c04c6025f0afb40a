import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

/**
 * Starts the Worker the way a developer does (`wrangler dev` on loopback, with
 * its own local D1/DO/Queue/R2 state in a temp dir, migrations applied), waits
 * for /health, and tears the whole process group down even when a test fails.
 */

const PROJECT_ROOT = resolve(import.meta.dirname, "../..");
const WRANGLER = join(PROJECT_ROOT, "node_modules/wrangler/bin/wrangler.js");
const READY_TIMEOUT_MS = 90_000;

export interface WorkerProcess {
  baseUrl: string;
  port: number;
  /** Its `--persist-to` directory: local D1, Durable Object and R2 state (removed by stop). */
  persistDir: string;
  /** wrangler's process group: it and its workerd processes (benchmarks read their CPU). */
  processGroup: number;
  /** Every line wrangler dev printed so far (stdout and stderr). */
  output(): string[];
  /** Application log lines: the JSON objects among the output lines. */
  jsonLogs(): Record<string, unknown>[];
  /** Waits until a JSON log line matches, or fails after timeoutMs. */
  waitForLog(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Extra vars, passed as `--var NAME:VALUE`. */
  vars?: Record<string, string>;
  /**
   * wrangler dev's local trace explorer (on unless `X_LOCAL_OBSERVABILITY=false`):
   * a streaming tail worker in the Worker's own workerd process that stores
   * every invocation's spans (each request, subrequest and Durable Object call)
   * in SQLite. Benchmarks turn it off: it cost about 40 % of the Worker's CPU
   * per request, more the more calls a route makes, and production Workers do
   * not pay for their traces in their own thread.
   */
  localObservability?: boolean;
  /** `--test-scheduled`: GET /cdn-cgi/local/scheduled?cron=… runs that cron trigger's handler. */
  testScheduled?: boolean;
}

const running = new Set<ChildProcess>();
function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // Already gone.
  }
}
process.once("exit", () => {
  for (const child of running) killGroup(child, "SIGKILL");
});

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() =>
        typeof address === "object" && address ? resolvePort(address.port) : reject(new Error("no port")),
      );
    });
  });
}

function run(args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, [WRANGLER, ...args], {
      cwd: PROJECT_ROOT,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk) => (output += chunk));
    child.stderr.on("data", (chunk) => (output += chunk));
    child.on("error", reject);
    child.on("exit", (code) =>
      code === 0 ? resolveRun(output) : reject(new Error(`wrangler ${args.join(" ")} exited ${code}:\n${output}`)),
    );
  });
}

function parseJsonLine(line: string): Record<string, unknown> | null {
  const trimmed = line.trim();
  if (!trimmed.startsWith("{")) return null;
  try {
    const value = JSON.parse(trimmed);
    return value && typeof value === "object" ? value : null;
  } catch {
    return null;
  }
}

export async function startWorker(options: StartOptions = {}): Promise<WorkerProcess> {
  const persistDir = await mkdtemp(join(tmpdir(), "mgx-e2e-"));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    WRANGLER_SEND_METRICS: "false",
    NO_COLOR: "1",
    FORCE_COLOR: "0",
    ...(options.localObservability === false ? { X_LOCAL_OBSERVABILITY: "false" } : {}),
  };
  await run(["d1", "migrations", "apply", "DB", "--local", "--persist-to", persistDir], env);

  // An empty env file in place of the developer's `.dev.vars` (wrangler reads it only when none is given):
  // the Worker under test has wrangler.toml's vars and the test's own, never real provider keys.
  const noLocalSecrets = join(persistDir, "no-local-secrets.env");
  await writeFile(noLocalSecrets, "");
  const port = await freePort();
  const varArgs = Object.entries(options.vars ?? {}).flatMap(([name, value]) => ["--var", `${name}:${value}`]);
  const child = spawn(
    process.execPath,
    [
      WRANGLER,
      "dev",
      "--ip",
      "127.0.0.1",
      "--port",
      String(port),
      "--inspector-port",
      // A fixed port lets a profiler attach (Chrome DevTools or a CDP script); tests use any free one.
      process.env.WRANGLER_INSPECTOR_PORT ?? "0",
      "--persist-to",
      persistDir,
      "--show-interactive-dev-session=false",
      "--env-file",
      noLocalSecrets,
      ...(options.testScheduled ? ["--test-scheduled"] : []),
      ...varArgs,
    ],
    { cwd: PROJECT_ROOT, env, stdio: ["ignore", "pipe", "pipe"], detached: true },
  );
  running.add(child);
  const lines: string[] = [];
  let partial = "";
  const collect = (chunk: Buffer) => {
    const text = partial + chunk.toString("utf8");
    const parts = text.split("\n");
    partial = parts.pop() ?? "";
    lines.push(...parts);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);

  const baseUrl = `http://127.0.0.1:${port}`;
  const worker: WorkerProcess = {
    baseUrl,
    port,
    persistDir,
    processGroup: child.pid ?? -1,
    output: () => [...lines],
    jsonLogs: () => lines.map(parseJsonLine).filter((line): line is Record<string, unknown> => line !== null),
    async waitForLog(match, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const found = worker.jsonLogs().find(match);
        if (found) return found;
        await new Promise((wake) => setTimeout(wake, 50));
      }
      throw new Error(`no matching log line within ${timeoutMs} ms; last lines:\n${lines.slice(-20).join("\n")}`);
    },
    async stop() {
      killGroup(child, "SIGTERM");
      const exited = new Promise((done) => child.once("exit", done));
      const timeout = new Promise((done) => setTimeout(done, 5_000));
      if (child.exitCode === null) await Promise.race([exited, timeout]);
      killGroup(child, "SIGKILL");
      running.delete(child);
      await rm(persistDir, { recursive: true, force: true });
    },
  };

  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) break;
    try {
      const response = await fetch(`${baseUrl}/health`);
      if (response.ok) return worker;
    } catch {
      // Not listening yet.
    }
    await new Promise((wake) => setTimeout(wake, 250));
  }
  const tail = lines.slice(-40).join("\n");
  await worker.stop();
  throw new Error(`wrangler dev did not become healthy on ${baseUrl}:\n${tail}`);
}
