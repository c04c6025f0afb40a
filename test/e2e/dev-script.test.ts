import { spawn, spawnSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { portInUse } from "../../scripts/lib/port.ts";
import { freePort } from "./harness.ts";

/**
 * `npm run dev` on a port something else holds (another checkout's `npm run dev`):
 * it used to print that server's URLs as its own, with a demo key the other
 * server's D1 does not know, and only then did wrangler fail on the port.
 */

const ROOT = resolve(import.meta.dirname, "../..");
let taken: Server;
let port: number;

beforeAll(async () => {
  taken = createServer();
  await new Promise<void>((ready) => taken.listen({ host: "127.0.0.1", port: 0 }, ready));
  port = (taken.address() as { port: number }).port;
});

afterAll(async () => {
  await new Promise((closed) => taken.close(closed));
});

describe("npm run dev on a taken port", () => {
  it("tells a port in use from a free one", async () => {
    expect(await portInUse("127.0.0.1", port)).toBe(true);
    const free = createServer();
    await new Promise<void>((ready) => free.listen({ host: "127.0.0.1", port: 0 }, ready));
    const freePort = (free.address() as { port: number }).port;
    await new Promise((closed) => free.close(closed));
    expect(await portInUse("127.0.0.1", freePort)).toBe(false);
  });

  it("stops at once, naming the port and how to pick another, before it migrates or starts wrangler", () => {
    const run = spawnSync(process.execPath, ["scripts/dev.ts"], {
      cwd: ROOT,
      env: { ...process.env, HOST: "127.0.0.1", PORT: String(port) },
      encoding: "utf8",
      timeout: 30_000,
    });
    expect(run.status).toBe(1);
    expect(run.stderr).toContain(`127.0.0.1:${port} is already taken`);
    expect(run.stderr).toContain(`PORT=${port + 1} npm run dev`);
    expect(run.stdout).not.toContain("Applying local D1 migrations");
    expect(run.stdout).not.toContain("is running");
  });
});

describe("npm run dev with a misconfigured environment", () => {
  /**
   * A typo in `.dev.vars` (here an LLM_DEFAULT_CHAIN entry naming no provider) makes every request a 500
   * BAD_ENVIRONMENT. The launcher took that for a server not up yet: it asked /health for 90 s (the Worker
   * logging an error each time), then said wrangler "did not answer", and kept running without naming the
   * setting.
   */
  it("stops at once, naming the setting and what is wrong with it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "mgx-dev-script-"));
    const envFile = join(dir, "empty.env");
    await writeFile(envFile, "");
    const port = await freePort();
    const child = spawn(
      process.execPath,
      [
        "scripts/dev.ts",
        "--persist-to",
        dir,
        "--env-file",
        envFile,
        "--show-interactive-dev-session=false",
        "--var",
        "LLM_DEFAULT_CHAIN:opneai:gpt-4o",
      ],
      {
        cwd: ROOT,
        env: { ...process.env, HOST: "127.0.0.1", PORT: String(port), WRANGLER_SEND_METRICS: "false", NO_COLOR: "1" },
        stdio: ["ignore", "pipe", "pipe"],
        detached: true,
      },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString("utf8");
    });
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8");
    });
    const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)));
    try {
      const code = await Promise.race([exited, new Promise<"running">((done) => setTimeout(done, 50_000, "running"))]);
      expect(code).toBe(1);
      expect(stderr).toContain("LLM_DEFAULT_CHAIN: entry 1: unknown provider");
      expect(stderr).toContain(".dev.vars");
      expect(stdout + stderr).not.toContain("did not answer");
      expect(stdout).not.toContain("is running");
    } finally {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
      } catch {
        // Already gone.
      }
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
