/**
 * `npm run dev`: migrate the local D1, seed a demo workspace and API key
 * (idempotently), start `wrangler dev` on 127.0.0.1:8787, print where
 * everything is once /health answers, and fire wrangler.toml's cron triggers
 * on their schedule (wrangler dev does not; scripts/lib/local-cron.ts).
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { displayPrefix, generateApiKey, hashApiKey, isApiKeyFormat } from "../src/lib/api-key-format.ts";
import { cronTriggers, LOCAL_SCHEDULED_PATH, startLocalCron } from "./lib/local-cron.ts";
import { portInUse } from "./lib/port.ts";

const ROOT = resolve(import.meta.dirname, "..");
const WRANGLER = join(ROOT, "node_modules/wrangler/bin/wrangler.js");
const HOST = process.env.HOST ?? "127.0.0.1";
const PORT = Number(process.env.PORT ?? 8787);
const DEMO_WORKSPACE_ID = "ws_demo";
const DEMO_KEY_ID = "key_demo";
const DEMO_KEY_FILE = join(ROOT, ".wrangler", "demo-api-key");
const HEALTH_TIMEOUT_MS = 90_000;
const DEMO_LIMITS = { requests_per_second: 50, burst: 100, max_running_tasks: 4, max_pending_tasks: 1000 };
const DEMO_SCOPES = ["tasks:read", "tasks:write", "events:read", "audit:read", "admin"];

function wrangler(args: string[]): void {
  const result = spawnSync(process.execPath, [WRANGLER, ...args], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    encoding: "utf8",
  });
  if (result.status !== 0) {
    process.stderr.write(result.stdout + result.stderr);
    throw new Error(`wrangler ${args.slice(0, 3).join(" ")} failed (exit ${result.status})`);
  }
}

function sqlString(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

/** The demo key survives restarts in .wrangler/ (git-ignored); the row is upserted to match it. */
async function seedDemo(persist: string[]): Promise<string> {
  mkdirSync(join(ROOT, ".wrangler"), { recursive: true });
  let key = existsSync(DEMO_KEY_FILE) ? readFileSync(DEMO_KEY_FILE, "utf8").trim() : "";
  if (!isApiKeyFormat(key)) {
    key = generateApiKey();
    writeFileSync(DEMO_KEY_FILE, `${key}\n`, { mode: 0o600 });
  }
  const sql = [
    `INSERT INTO workspaces (id, name, plan, limits) VALUES (${sqlString(DEMO_WORKSPACE_ID)}, 'Demo workspace', 'team', ${sqlString(JSON.stringify(DEMO_LIMITS))}) ON CONFLICT(id) DO NOTHING;`,
    `INSERT INTO api_keys (id, workspace_id, name, key_hash, display_prefix, scopes, created_by) VALUES (${sqlString(DEMO_KEY_ID)}, ${sqlString(DEMO_WORKSPACE_ID)}, 'Demo key', ${sqlString(await hashApiKey(key))}, ${sqlString(displayPrefix(key))}, ${sqlString(JSON.stringify(DEMO_SCOPES))}, 'npm run dev') ON CONFLICT(id) DO UPDATE SET key_hash = excluded.key_hash, display_prefix = excluded.display_prefix, revoked_at = NULL;`,
  ].join(" ");
  wrangler(["d1", "execute", "DB", "--local", ...persist, "--command", sql]);
  return key;
}

/** What /health said: up, the Worker's environment refused (every request a 500 BAD_ENVIRONMENT), or nothing in time. */
type Health = { state: "up" } | { state: "misconfigured"; problems: string[] } | { state: "silent" };

async function waitForHealth(baseUrl: string): Promise<Health> {
  const deadline = Date.now() + HEALTH_TIMEOUT_MS;
  while (Date.now() < deadline) {
    try {
      const response = await fetch(`${baseUrl}/health`);
      if (response.ok) return { state: "up" };
      const body = (await response.json().catch(() => null)) as {
        code?: string;
        errors?: { path: string; message: string }[];
      } | null;
      // No restart mends it: wrangler dev reads .dev.vars and wrangler.toml's vars only as it starts.
      if (body?.code === "BAD_ENVIRONMENT") {
        return { state: "misconfigured", problems: (body.errors ?? []).map((e) => `${e.path}: ${e.message}`) };
      }
    } catch {
      // Not up yet.
    }
    await new Promise((wake) => setTimeout(wake, 300));
  }
  return { state: "silent" };
}

/** `--persist-to <dir>` (or `=dir`) for wrangler dev is where the migrations and the demo seed go too. */
function persistArgs(args: string[]): string[] {
  for (const [index, arg] of args.entries()) {
    if (arg === "--persist-to" && args[index + 1]) return ["--persist-to", args[index + 1] as string];
    if (arg.startsWith("--persist-to=")) return ["--persist-to", arg.slice("--persist-to=".length)];
  }
  return [];
}

async function main(): Promise<void> {
  if (await portInUse(HOST, PORT)) {
    console.error(
      `${HOST}:${PORT} is already taken (another npm run dev?). Stop that server, or serve on another port: PORT=${PORT + 1} npm run dev`,
    );
    process.exit(1);
  }
  console.log("Applying local D1 migrations…");
  const persist = persistArgs(process.argv.slice(2));
  wrangler(["d1", "migrations", "apply", "DB", "--local", ...persist]);
  console.log("Seeding the demo workspace…");
  const key = await seedDemo(persist);
  const triggers = cronTriggers(readFileSync(join(ROOT, "wrangler.toml"), "utf8"));

  const child = spawn(
    process.execPath,
    [WRANGLER, "dev", "--ip", HOST, "--port", String(PORT), "--test-scheduled", ...process.argv.slice(2)],
    {
      cwd: ROOT,
      stdio: "inherit",
    },
  );
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => child.kill(signal));
  let exitCode = 0;
  child.on("exit", (code) => process.exit(exitCode || (code ?? 0)));

  const baseUrl = `http://${HOST}:${PORT}`;
  const health = await waitForHealth(baseUrl);
  if (health.state === "misconfigured") {
    console.error(
      [
        "",
        `The Worker's environment is misconfigured: ${baseUrl} answers every request 500 BAD_ENVIRONMENT.`,
        ...health.problems.map((problem) => `  ${problem}`),
        "Fix it in .dev.vars (or wrangler.toml's [vars]) and run npm run dev again.",
        "",
      ].join("\n"),
    );
    exitCode = 1;
    child.kill("SIGTERM");
  } else if (health.state === "up") {
    startLocalCron({ baseUrl, triggers, log: (line) => console.error(line) });
    console.log(
      [
        "",
        "MGX-AI Edge is running.",
        `  API        ${baseUrl}/api/v1`,
        `  Health     ${baseUrl}/health`,
        `  Docs       ${baseUrl}/docs  (OpenAPI: ${baseUrl}/openapi.json)`,
        `  Workspace  ${DEMO_WORKSPACE_ID}`,
        `  API key    ${key}`,
        `  Try        curl -H "Authorization: Bearer ${key}" ${baseUrl}/api/v1/workspace`,
        `  Crons      ${triggers.map((cron) => `"${cron}"`).join(", ")}, fired here on their schedule (UTC);`,
        `             run one now: curl "${baseUrl}${LOCAL_SCHEDULED_PATH}?cron=${encodeURIComponent(triggers[0] ?? "")}"`,
        "",
      ].join("\n"),
    );
  } else {
    console.error(`wrangler dev did not answer ${baseUrl}/health within ${HEALTH_TIMEOUT_MS / 1000} s`);
  }
}

main().catch((error) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
