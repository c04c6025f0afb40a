import { spawnSync } from "node:child_process";
import { createServer, type Server } from "node:net";
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { portInUse } from "../../scripts/lib/port.ts";

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
