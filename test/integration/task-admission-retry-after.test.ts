import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { type AdmissionPriority, TaskAdmission } from "../../src/limits/admission.ts";

/** The pending cap's Retry-After, estimated from the drain rate: TaskAdmission over a real object's SQLite. */

function inObject(name: string, body: (storage: DurableObjectStorage) => void): Promise<void> {
  const stub = env.WORKSPACE_LIMITER.getByName(`admission-retry-test:${name}:${crypto.randomUUID()}`);
  return runInDurableObject(stub, (_instance, state) => body(state.storage));
}

const caps = { maxRunning: 1, maxPending: 2 };
const submit = (admission: TaskAdmission, taskId: string, nowMs: number, priority: AdmissionPriority = "medium") =>
  admission.submit({ taskId, priority, message: { task_id: taskId }, ...caps, nowMs });
const retryAfterMs = (result: ReturnType<typeof submit>) => (result.status === "refused" ? result.retryAfterMs : null);

describe("task admission Retry-After", () => {
  it("counts the drain over the whole minute watched, not from the last finish: one task a minute is not one a second", () =>
    inObject("slow-drain", (storage) => {
      const admission = new TaskAdmission(storage);
      // One slot, tasks that take about a minute each: one place frees per minute.
      expect(submit(admission, "a", 0).status).toBe("queued");
      expect(submit(admission, "b", 0).status).toBe("pending");
      expect(submit(admission, "c", 0).status).toBe("pending");
      expect(admission.finish({ taskIds: ["a"], nowMs: 59_000 }).dispatch.map((item) => item.taskId)).toEqual(["b"]);
      expect(submit(admission, "d", 59_000).status).toBe("pending");

      // A second after that finish: the minute watched saw one finish, so about a minute, not 1 s.
      const refused = submit(admission, "e", 60_000);
      expect(refused.status).toBe("refused");
      expect(retryAfterMs(refused)).toBeGreaterThanOrEqual(30_000);
      expect(retryAfterMs(refused)).toBeLessThanOrEqual(60_000);
      // A client that waits a second (the old answer) finds nothing freed and is refused again.
      expect(submit(admission, "f", 61_000).status).toBe("refused");
    }));

  it("still answers a fast drain with a short wait, and a fresh object's first finishes from the time it watched", () =>
    inObject("fast-drain", (storage) => {
      const admission = new TaskAdmission(storage);
      expect(submit(admission, "a", 100_000).status).toBe("queued");
      submit(admission, "b", 100_000);
      submit(admission, "c", 100_000);
      // Three finishes in two seconds of watching: a place about every 0.7 s, answered as the 1 s floor.
      admission.finish({ taskIds: ["a"], nowMs: 101_000 });
      admission.finish({ taskIds: ["b"], nowMs: 101_500 });
      submit(admission, "d", 101_500);
      submit(admission, "e", 101_500);
      admission.finish({ taskIds: ["c"], nowMs: 102_000 });
      submit(admission, "f", 102_000);
      expect(retryAfterMs(submit(admission, "g", 102_000))).toBe(1_000);
    }));

  it("waits a sensible default, never 0, Infinity or NaN, before anything drained", () =>
    inObject("never-drained", (storage) => {
      const admission = new TaskAdmission(storage);
      for (const id of ["a", "b", "c"]) submit(admission, id, 5_000);
      const wait = retryAfterMs(submit(admission, "d", 500_000));
      expect(Number.isFinite(wait)).toBe(true);
      expect(wait).toBeGreaterThanOrEqual(1_000);
    }));
});
