import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import {
  type AdmissionPriority,
  AGING_STEP_MS,
  DISPATCH_LEASE_MS,
  MAX_LEASE_EXPIRIES,
  TaskAdmission,
} from "../../src/limits/admission.ts";
import { AdmissionStore } from "../../src/limits/admission-store.ts";

/** TaskAdmission over a real Durable Object's SQLite, with an injected clock. */

function inObject(name: string, body: (storage: DurableObjectStorage) => void): Promise<void> {
  const stub = env.WORKSPACE_LIMITER.getByName(`admission-test:${name}:${crypto.randomUUID()}`);
  return runInDurableObject(stub, (_instance, state) => body(state.storage));
}

const caps = { maxRunning: 1, maxPending: 10 };
const submit = (admission: TaskAdmission, taskId: string, priority: AdmissionPriority, nowMs: number, more = {}) =>
  admission.submit({ taskId, priority, message: { task_id: taskId }, ...caps, ...more, nowMs });

describe("task admission", () => {
  it("gives free slots at once and lines up the rest by priority, then age", () =>
    inObject("priority", (storage) => {
      const admission = new TaskAdmission(storage);
      expect(submit(admission, "t0", "low", 0)).toEqual({
        status: "queued",
        duplicate: false,
        dispatch: [{ taskId: "t0", message: { task_id: "t0" } }],
        depth: { pending: 0, leased: 1 },
      });
      expect(submit(admission, "low", "low", 1).status).toBe("pending");
      expect(submit(admission, "medium", "medium", 2).status).toBe("pending");
      expect(submit(admission, "critical", "critical", 3).status).toBe("pending");
      expect(submit(admission, "high", "high", 4).status).toBe("pending");
      expect(submit(admission, "critical2", "critical", 5).status).toBe("pending");
      expect(admission.snapshot().line).toEqual(["critical", "critical2", "high", "medium", "low"]);

      const order: string[] = [];
      let running = "t0";
      for (let step = 0; step < 5; step++) {
        const { dispatch } = admission.finish({ taskIds: [running], nowMs: 10 + step });
        expect(dispatch).toHaveLength(1);
        running = dispatch[0].taskId;
        order.push(running);
        expect(admission.snapshot().leased).toBe(1);
      }
      expect(order).toEqual(["critical", "critical2", "high", "medium", "low"]);
    }));

  it("keeps its pending and leased counts equal to the rows through submits, finishes, expiries and a rollback", () =>
    inObject("counts", (storage) => {
      const admission = new TaskAdmission(storage);
      const rows = () => {
        const counts = { pending: 0, leased: 0 };
        for (const row of storage.sql.exec<{ state: "pending" | "leased"; n: number }>(
          "SELECT state, count(*) AS n FROM limiter_tasks GROUP BY state",
        ))
          counts[row.state] = row.n;
        return counts;
      };
      const counted = () => {
        const { pending, leased } = admission.snapshot();
        return { pending, leased };
      };
      for (let index = 0; index < 8; index++) submit(admission, `t${index}`, "medium", index, { maxRunning: 3 });
      submit(admission, "t1", "medium", 9, { maxRunning: 3 }); // a duplicate changes nothing
      expect(counted()).toEqual({ pending: 5, leased: 3 });
      expect(counted()).toEqual(rows());
      admission.finish({ taskIds: ["t0", "t5", "unknown"], nowMs: 10 }); // one leased, one pending, one never seen
      expect(counted()).toEqual({ pending: 3, leased: 3 });
      expect(counted()).toEqual(rows());
      admission.expire({ nowMs: 10 + DISPATCH_LEASE_MS }); // lapsed leases stay leased (sent again)
      expect(counted()).toEqual(rows());
      expect(() => submit(admission, "bad", "urgent" as AdmissionPriority, 11)).toThrow(RangeError);
      expect(() => admission.renew({ taskIds: ["t1"], leaseMs: 0, nowMs: 12 })).toThrow(RangeError);
      expect(counted()).toEqual(rows());
      // A transaction that fails after a counted write rolls the row back; the counts follow.
      const store = new AdmissionStore(storage);
      expect(store.count("pending")).toBe(rows().pending);
      expect(() =>
        store.atomically(() => {
          store.insert({
            taskId: "rolled-back",
            state: "pending",
            priority: 2,
            submittedAtMs: 13,
            orderMs: 13,
            leaseExpiresAtMs: null,
            leaseExpiries: 0,
            message: "{}",
          });
          throw new Error("the write around it failed");
        }),
      ).toThrow("the write around it failed");
      expect(store.count("pending")).toBe(rows().pending);
    }));

  it("ages waiting tasks: a low task that waited long enough goes before a fresh critical one", () =>
    inObject("aging", (storage) => {
      const admission = new TaskAdmission(storage);
      submit(admission, "busy", "medium", 0);
      submit(admission, "old-low", "low", 0);
      submit(admission, "new-critical", "critical", 3 * AGING_STEP_MS + 1);
      expect(admission.snapshot().line).toEqual(["old-low", "new-critical"]);
    }));

  it("refuses over the pending cap with a Retry-After from the drain rate, and is idempotent", () =>
    inObject("cap", (storage) => {
      const admission = new TaskAdmission(storage);
      const small = { maxRunning: 2, maxPending: 2 };
      for (const id of ["a", "b", "c", "d"])
        expect(submit(admission, id, "medium", 0, small).status).not.toBe("refused");
      const refused = submit(admission, "e", "medium", 0, small);
      expect(refused).toMatchObject({ status: "refused", pending: 2, maxPending: 2 });
      // Nothing has drained yet: a default estimate.
      expect(refused.status === "refused" && refused.retryAfterMs).toBe(10_000);
      // The same task again is not a second place in line.
      expect(submit(admission, "c", "medium", 0, small)).toEqual({ status: "pending", duplicate: true, dispatch: [] });

      // Two finishes over the 2 s watched: one a second, so a place frees in about a second (at least 1 s).
      admission.finish({ taskIds: ["a"], nowMs: 0 });
      admission.finish({ taskIds: ["b"], nowMs: 1_000 });
      submit(admission, "f", "medium", 1_000, small);
      submit(admission, "g", "medium", 1_000, small);
      const later = submit(admission, "h", "medium", 2_000, small);
      expect(later.status).toBe("refused");
      expect(later.status === "refused" && later.retryAfterMs).toBe(1_000);
      expect(admission.snapshot()).toMatchObject({ pending: 2, leased: 2 });
    }));

  it("never leases more slots than the cap, however tasks arrive and leave", () =>
    inObject("cap-invariant", (storage) => {
      const admission = new TaskAdmission(storage);
      const leased = new Set<string>();
      const more = { maxRunning: 3, maxPending: 1_000 };
      let nowMs = 0;
      for (let i = 0; i < 200; i++) {
        nowMs += 7;
        const result = submit(admission, `t${i}`, (["low", "medium", "high", "critical"] as const)[i % 4], nowMs, more);
        if (result.status !== "refused") for (const item of result.dispatch) leased.add(item.taskId);
        if (i % 3 === 0 && leased.size > 0) {
          const done = [...leased][0];
          leased.delete(done);
          for (const item of admission.finish({ taskIds: [done], nowMs }).dispatch) leased.add(item.taskId);
        }
        expect(leased.size).toBeLessThanOrEqual(3);
        expect(admission.snapshot().leased).toBe(leased.size);
      }
    }));

  it("dispatches a lapsed lease again, then gives it up and frees the slot", () =>
    inObject("lease", (storage) => {
      const admission = new TaskAdmission(storage);
      submit(admission, "crashy", "medium", 0);
      submit(admission, "next", "medium", 1);
      expect(admission.nextExpiryMs()).toBe(DISPATCH_LEASE_MS);
      expect(admission.expire({ nowMs: DISPATCH_LEASE_MS - 1 }).redispatch).toEqual([]);

      // A consumer renews it while running; then it crashes and the renewed lease lapses.
      admission.renew({ taskIds: ["crashy"], leaseMs: 600_000, nowMs: 10 });
      expect(admission.expire({ nowMs: DISPATCH_LEASE_MS }).redispatch).toEqual([]);
      let nowMs = 600_010;
      for (let lapse = 1; lapse < MAX_LEASE_EXPIRIES; lapse++) {
        const result = admission.expire({ nowMs });
        expect(result.redispatch.map((item) => item.taskId)).toEqual(["crashy"]);
        nowMs += DISPATCH_LEASE_MS;
      }
      const last = admission.expire({ nowMs });
      expect(last.abandoned.map((item) => item.taskId)).toEqual(["crashy"]);
      expect(last.dispatch.map((item) => item.taskId)).toEqual(["next"]);
      expect(admission.snapshot()).toMatchObject({ pending: 0, leased: 1 });
    }));

  it("keeps its line across a restart (a new instance over the same storage)", () =>
    inObject("restart", (storage) => {
      submit(new TaskAdmission(storage), "x", "medium", 0);
      submit(new TaskAdmission(storage), "y", "high", 1);
      const after = new TaskAdmission(storage);
      expect(after.snapshot()).toMatchObject({ pending: 1, leased: 1, line: ["y"], maxRunning: 1 });
      expect(after.finish({ taskIds: ["x", "unknown"], nowMs: 2 })).toMatchObject({ released: 1 });
    }));
});

describe("WorkspaceLimiter admission RPC", () => {
  it("admits, lines up and releases through the object", async () => {
    const stub = env.WORKSPACE_LIMITER.getByName(`admission-rpc:${crypto.randomUUID()}`);
    const first = await stub.submitTask({
      taskId: "a",
      priority: "low",
      message: { n: 1 },
      maxRunning: 1,
      maxPending: 1,
    });
    expect(first.status).toBe("queued");
    expect(
      (await stub.submitTask({ taskId: "b", priority: "low", message: { n: 2 }, maxRunning: 1, maxPending: 1 })).status,
    ).toBe("pending");
    expect(
      (await stub.submitTask({ taskId: "c", priority: "low", message: {}, maxRunning: 1, maxPending: 1 })).status,
    ).toBe("refused");
    expect((await stub.renewTasks(["a", "b"], 60_000)).renewed).toEqual(["a"]);
    expect(((await stub.finishTasks(["a"])) as { dispatch: unknown }).dispatch).toEqual([
      { taskId: "b", message: { n: 2 } },
    ]);
    expect(await stub.admissionSnapshot()).toMatchObject({ pending: 0, leased: 1 });
  });
});
