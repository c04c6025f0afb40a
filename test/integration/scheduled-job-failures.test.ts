import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { handleScheduled } from "../../src/scheduled.ts";

/**
 * What an operator reads when a cron job fails: the failed job by name (a
 * cron runs several), and the other jobs of the cron still run. A cron with
 * no jobs (wrangler.toml's triggers edited without the job table) says so.
 */

function logLines(spy: ReturnType<typeof vi.spyOn>): Record<string, unknown>[] {
  return spy.mock.calls.flatMap(([line]: unknown[]) => {
    try {
      return [JSON.parse(String(line)) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

function controller(cron: string): ScheduledController {
  return { cron, scheduledTime: Date.now(), noRetry() {} } as ScheduledController;
}

const ctx = { waitUntil() {}, passThroughOnException() {} } as unknown as ExecutionContext;

afterEach(() => vi.restoreAllMocks());

describe("a scheduled job that fails", () => {
  it("is logged by name with its error, and the cron's other job still runs", async () => {
    // D1 batches fail (the purge's deletes); reads work (the anchoring's).
    const db = new Proxy(env.DB, {
      get(target, property) {
        if (property === "batch") return () => Promise.reject(new Error("D1_ERROR: database is locked"));
        const value = Reflect.get(target, property);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const failingEnv = Object.assign({}, env, { DB: db });
    const spy = vi.spyOn(console, "log").mockImplementation(() => {});

    await handleScheduled(controller("*/5 * * * *"), failingEnv, ctx);

    const failures = logLines(spy).filter((line) => line.msg === "scheduled job failed");
    expect(failures).toEqual([
      expect.objectContaining({
        level: "error",
        cron: "*/5 * * * *",
        job: "purge-expired-responses",
        error: expect.objectContaining({ message: "D1_ERROR: database is locked" }),
      }),
    ]);
    expect(logLines(spy)).toContainEqual(
      expect.objectContaining({ msg: "scheduled job finished", job: "anchor-audit-chains" }),
    );
  });

  it("a cron with no jobs registered is a warning naming the cron", async () => {
    const spy = vi.spyOn(console, "log").mockImplementation(() => {});

    await handleScheduled(controller("17 4 * * *"), env, ctx);

    expect(logLines(spy)).toContainEqual(
      expect.objectContaining({ level: "warn", msg: "no scheduled jobs for this cron", cron: "17 4 * * *" }),
    );
  });
});
