import { type AdmissionRow, AdmissionStore } from "./admission-store.ts";
import type { LimiterStorage } from "./limiter-store.ts";

/**
 * Task admission for one workspace: running slots and the pending line.
 *
 * A task either takes a slot at once (it goes to the queue), waits here in
 * the pending line, or is refused when the line is full. Slots cover queued
 * and running tasks, and each is a lease: a consumer renews it when it starts
 * a task or schedules a retry and gives it back when the task ends. A lease
 * that runs out (a consumer crashed, a send was lost) is dispatched again, up
 * to MAX_LEASE_EXPIRIES times, then abandoned to the dead-letter queue, so a
 * slot never leaks. The pending line is ordered by priority then age, with
 * aging: a waiting task gains one priority level per AGING_STEP_MS, so low
 * priority cannot starve behind a steady stream of higher ones.
 *
 * Synchronous, like LimiterCore: nothing interleaves inside one call.
 */

export const PRIORITY_RANK = { low: 0, medium: 1, high: 2, critical: 3 } as const;
export type AdmissionPriority = keyof typeof PRIORITY_RANK;

/** A waiting task gains one priority level per this much waiting. */
export const AGING_STEP_MS = 60_000;
/** A slot handed to the queue must be renewed by a consumer within this, or it is dispatched again. */
export const DISPATCH_LEASE_MS = 120_000;
/** After this many lapsed leases the task is given up to the dead-letter queue and its slot freed. */
export const MAX_LEASE_EXPIRIES = 3;
/** Finishes within this window estimate the drain rate behind `Retry-After`. */
const DRAIN_WINDOW_MS = 60_000;
const MAX_DRAIN_SAMPLES = 500;
/** With no drain observed yet, a refused caller is told to come back after this. */
const DEFAULT_RETRY_AFTER_MS = 10_000;
const MAX_RETRY_AFTER_MS = 3_600_000;

export interface Dispatch {
  taskId: string;
  /** The queue message body, as given at submission. */
  message: unknown;
}

export interface SubmitInput {
  taskId: string;
  priority: AdmissionPriority;
  message: unknown;
  maxRunning: number;
  maxPending: number;
}

/** The line after a call: tasks waiting and slots held (queued or running), for queue-depth metrics. */
export interface Depth {
  pending: number;
  leased: number;
}

export type SubmitResult =
  | { status: "queued" | "pending"; duplicate: boolean; dispatch: Dispatch[]; depth?: Depth }
  | { status: "refused"; retryAfterMs: number; pending: number; maxPending: number };

export interface AdmissionSnapshot {
  pending: number;
  leased: number;
  maxRunning: number | null;
  maxPending: number | null;
  /** Pending task ids in the order they would be released now. */
  line: string[];
}

export interface ExpiryResult {
  /** Lapsed leases renewed and to be sent again. */
  redispatch: Dispatch[];
  /** Lapsed too often: slot freed, to be dead-lettered. */
  abandoned: Dispatch[];
  /** Pending tasks released into the freed slots. */
  dispatch: Dispatch[];
}

type Clock = { nowMs: number };

export class TaskAdmission {
  readonly #store: AdmissionStore;
  /** Finish times (ms), newest last: in memory only, an eviction merely resets the estimate. */
  readonly #finishesMs: number[] = [];
  /** When this instance first saw the clock: finishes before it went unseen, so the drain is counted from then. */
  #watchingSinceMs: number | null = null;

  constructor(storage: LimiterStorage) {
    this.#store = new AdmissionStore(storage);
  }

  submit(input: SubmitInput & Clock): SubmitResult {
    assertCaps(input.maxRunning, input.maxPending);
    if (!(input.priority in PRIORITY_RANK)) throw new RangeError(`unknown priority ${input.priority}`);
    const { nowMs } = input;
    this.#watch(nowMs);
    return this.#store.atomically(() => {
      this.#store.saveSetting("max_running", input.maxRunning);
      this.#store.saveSetting("max_pending", input.maxPending);
      const known = this.#store.get(input.taskId);
      if (known) return { status: known.state === "leased" ? "queued" : "pending", duplicate: true, dispatch: [] };

      const leased = this.#store.count("leased");
      const pending = this.#store.count("pending");
      if (leased >= input.maxRunning && pending >= input.maxPending) {
        return { status: "refused", retryAfterMs: this.#retryAfterMs(nowMs), pending, maxPending: input.maxPending };
      }
      const rank = PRIORITY_RANK[input.priority];
      this.#store.insert({
        taskId: input.taskId,
        state: "pending",
        priority: rank,
        submittedAtMs: nowMs,
        orderMs: nowMs - rank * AGING_STEP_MS,
        leaseExpiresAtMs: null,
        leaseExpiries: 0,
        message: JSON.stringify(input.message),
      });
      const dispatch = this.#fill(nowMs);
      const mine = dispatch.some((item) => item.taskId === input.taskId);
      return { status: mine ? "queued" : "pending", duplicate: false, dispatch, depth: this.#depth() };
    });
  }

  /**
   * The workspace's caps changed (an operator's PATCH): saved now, and the pending tasks a raised max_running
   * makes room for are released. Saved only at the next submission, a raised cap freed no slot until then, even as
   * running tasks ended (each end refilled up to the old cap).
   */
  setCaps(input: { maxRunning: number; maxPending: number } & Clock): { dispatch: Dispatch[]; depth: Depth } {
    assertCaps(input.maxRunning, input.maxPending);
    this.#watch(input.nowMs);
    return this.#store.atomically(() => {
      this.#store.saveSetting("max_running", input.maxRunning);
      this.#store.saveSetting("max_pending", input.maxPending);
      return { dispatch: this.#fill(input.nowMs), depth: this.#depth() };
    });
  }

  /** Tasks that ended (or were cancelled or never existed): their slots or places are freed. */
  finish(input: { taskIds: string[] } & Clock): { dispatch: Dispatch[]; released: number; depth: Depth } {
    this.#watch(input.nowMs);
    return this.#store.atomically(() => {
      const released = this.#store.deleteMany(input.taskIds);
      for (let index = 0; index < released; index++) this.#noteFinish(input.nowMs);
      const dispatch = this.#fill(input.nowMs);
      return { dispatch, released, depth: this.#depth() };
    });
  }

  /** A consumer holds these slots until `nowMs + leaseMs` (a task started, or a retry is scheduled). */
  renew(input: { taskIds: string[]; leaseMs: number } & Clock): { renewed: string[] } {
    if (!(input.leaseMs > 0)) throw new RangeError("leaseMs must be positive");
    return this.#store.atomically(() => {
      // Only a held slot is renewed: a pending task has no slot to extend, a finished one none to revive.
      const held = this.#store.renewLeases(input.taskIds, input.nowMs + input.leaseMs);
      return { renewed: input.taskIds.filter((taskId) => held.has(taskId)) };
    });
  }

  /** Lapsed leases: dispatched again, or abandoned after MAX_LEASE_EXPIRIES. */
  expire(input: Clock): ExpiryResult {
    return this.#store.atomically(() => {
      const redispatch: Dispatch[] = [];
      const abandoned: Dispatch[] = [];
      for (const row of this.#store.expiredLeases(input.nowMs)) {
        if (row.leaseExpiries + 1 >= MAX_LEASE_EXPIRIES) {
          abandoned.push(toDispatch(row));
        } else {
          this.#store.redispatch(row.taskId, input.nowMs + DISPATCH_LEASE_MS, row.leaseExpiries + 1);
          redispatch.push(toDispatch(row));
        }
      }
      this.#store.deleteMany(abandoned.map((item) => item.taskId));
      return { redispatch, abandoned, dispatch: abandoned.length > 0 ? this.#fill(input.nowMs) : [] };
    });
  }

  /** When the next lease lapses (epoch ms), for the object's alarm. */
  nextExpiryMs(): number | null {
    return this.#store.earliestLeaseExpiry();
  }

  snapshot(): AdmissionSnapshot {
    return {
      pending: this.#store.count("pending"),
      leased: this.#store.count("leased"),
      maxRunning: this.#store.setting("max_running"),
      maxPending: this.#store.setting("max_pending"),
      line: this.#store.nextPending(1_000).map((row) => row.taskId),
    };
  }

  #depth(): Depth {
    return { pending: this.#store.count("pending"), leased: this.#store.count("leased") };
  }

  /** Leases the best pending tasks while slots are free. */
  #fill(nowMs: number): Dispatch[] {
    const maxRunning = this.#store.setting("max_running") ?? 1;
    const free = maxRunning - this.#store.count("leased");
    if (free <= 0) return [];
    const next = this.#store.nextPending(free);
    this.#store.leasePending(
      next.map((row) => row.taskId),
      nowMs + DISPATCH_LEASE_MS,
    );
    return next.map(toDispatch);
  }

  #watch(nowMs: number): void {
    this.#watchingSinceMs ??= nowMs;
  }

  #noteFinish(nowMs: number): void {
    this.#finishesMs.push(nowMs);
    if (this.#finishesMs.length > MAX_DRAIN_SAMPLES) this.#finishesMs.shift();
  }

  /**
   * Time until one pending place frees, from the recent finish rate: the finishes over the time watched (the
   * window, or this instance's life if shorter). Measured from the oldest finish instead, one finish a second ago
   * read as one a second, and a workspace draining one task a minute told its clients to come back in 1 s.
   */
  #retryAfterMs(nowMs: number): number {
    const recent = this.#finishesMs.filter((atMs) => nowMs - atMs <= DRAIN_WINDOW_MS);
    if (recent.length === 0) return DEFAULT_RETRY_AFTER_MS;
    const watchedMs = Math.min(DRAIN_WINDOW_MS, nowMs - (this.#watchingSinceMs ?? recent[0]));
    const spanMs = Math.max(1_000, watchedMs, nowMs - recent[0]);
    const perMs = recent.length / spanMs;
    return Math.min(MAX_RETRY_AFTER_MS, Math.max(1_000, Math.ceil(1 / perMs)));
  }
}

function toDispatch(row: AdmissionRow): Dispatch {
  return { taskId: row.taskId, message: JSON.parse(row.message) };
}

function assertCaps(maxRunning: number, maxPending: number): void {
  if (!Number.isInteger(maxRunning) || maxRunning < 1) throw new RangeError("maxRunning must be a positive integer");
  if (!Number.isInteger(maxPending) || maxPending < 0)
    throw new RangeError("maxPending must be a non-negative integer");
}
