import { describe, expect, it } from "vitest";
import type { WorkspaceBudgets } from "../../../src/db/schema.ts";
import { type LeaseBatchItem, LeaseBook, LeaseHold } from "../../../src/llm/budget-leases.ts";
import { Coalescer } from "../../../src/llm/coalesce.ts";

/** The isolate's budget leases without a limiter: what calls take and give back, and when a lease is closed. */

const BUDGETS: WorkspaceBudgets = {
  daily_tokens: 100_000,
  monthly_tokens: null,
  daily_cost_usd: 5,
  monthly_cost_usd: null,
};
const WORKSPACE = "ws_lease";

function setup() {
  let nowMs = 1_000_000;
  const writes: { lease: string; items: LeaseBatchItem[] }[] = [];
  const kept: Promise<unknown>[] = [];
  // Timers on the test's clock: they fire when `advance` passes their time.
  const timers: { dueMs: number; fire: () => void }[] = [];
  // A signal, where one is given, cancels the timer.
  const sleep = (ms: number, signal?: AbortSignal) =>
    new Promise<void>((fire, cancel) => {
      timers.push({ dueMs: nowMs + ms, fire });
      signal?.addEventListener("abort", () => cancel(signal.reason), { once: true });
    });
  const book = new LeaseBook({ now: () => nowMs, sleep });
  const write = async (lease: { key: string }, items: LeaseBatchItem[]) => {
    writes.push({ lease: lease.key, items: [...items] });
  };
  const keep = (work: Promise<unknown>) => kept.push(work);
  const grant = (key: string, tokens: number | null, costUsd: number | null, budgets = BUDGETS) =>
    book.install({ key, tokens, costUsd }, WORKSPACE, budgets, write, keep);
  const take = (tokens: number, costUsd = 0, budgets = BUDGETS) =>
    book.take(WORKSPACE, budgets, { tokens, costUsd }, keep);
  const macrotask = () => new Promise((wake) => setTimeout(wake, 0));
  const flushed = async () => {
    await macrotask();
    Coalescer.flushAll();
    // A timer not yet due keeps its promise pending: not waited for.
    await Promise.all(kept.map((work) => Promise.race([work, macrotask()])));
    await macrotask();
  };
  const advance = (ms: number) => {
    nowMs += ms;
    for (const timer of timers.filter((timer) => timer.dueMs <= nowMs)) timer.fire();
  };
  return { book, writes, grant, take, flushed, advance };
}

const context = (chargeKey: string) => ({ workspaceId: WORKSPACE, chargeKey });
/** A test as one unit of work, so that `flushed` may send the batches it opened (Coalescer.flushAll). */
const inUnit = (test: () => Promise<void>) => () => Coalescer.withinUnit(test);

describe("budget leases in the isolate", () => {
  it(
    "covers calls while it has room, and what a call did not use is spendable again at once",
    inUnit(async () => {
      const { writes, grant, take, flushed } = setup();
      expect(take(100)).toBeNull();
      grant("lease:1", 1_000, 1);
      const first = take(600, 0.4);
      expect(first).toBeInstanceOf(LeaseHold);
      expect(first?.lease).toMatchObject({ tokens: 400, costUsd: 0.6 });
      // 600 more tokens do not fit in the 400 left: that call reserves at the limiter.
      expect(take(600)).toBeNull();
      const settling = first!.lease.settle(first!, { chargeKey: "a", tokens: 150, costUsd: 0.1 }, context("a"));
      expect(first?.lease).toMatchObject({ tokens: 850, costUsd: 0.9 });
      expect(take(600)).toBeInstanceOf(LeaseHold);
      await flushed();
      await settling;
      expect(writes).toEqual([
        {
          lease: "lease:1",
          items: [{ charge: { chargeKey: "a", tokens: 150, costUsd: 0.1 }, context: context("a"), limits: BUDGETS }],
        },
      ]);
    }),
  );

  it("a kind without a budget is not limited by the lease", () => {
    const { grant, take } = setup();
    grant("lease:1", null, 0.5);
    expect(take(10_000_000, 0.2)).toBeInstanceOf(LeaseHold);
    expect(take(1, 0.4)).toBeNull();
  });

  it(
    "is retired when its time is up, its budgets change or a newer one replaces it, and closed once its last call settles",
    inUnit(async () => {
      const { writes, grant, take, flushed, advance } = setup();
      grant("lease:1", 1_000, null);
      const running = take(100)!;
      advance(5_000);
      // Time is up, though no call came to notice: no new calls on it, but it stays open for the call still
      // running, and the limiter is told to keep holding what that call took (past the minute it gives a lease).
      await flushed();
      expect(take(100)).toBeNull();
      expect(writes).toEqual([{ lease: "lease:1", items: [{ keep: { tokens: 100, costUsd: 0 } }] }]);
      writes.length = 0;
      running.lease.settle(running, { chargeKey: "late", tokens: 80, costUsd: 0 }, context("late"));
      await flushed();
      expect(writes).toEqual([
        {
          lease: "lease:1",
          items: [
            { charge: { chargeKey: "late", tokens: 80, costUsd: 0 }, context: context("late"), limits: BUDGETS },
            { close: true },
          ],
        },
      ]);

      writes.length = 0;
      grant("lease:2", 1_000, null);
      // Budgets changed: the lease was measured against the old ones, so it is closed (no call was running).
      expect(take(100, 0, { ...BUDGETS, daily_tokens: 50_000 })).toBeNull();
      grant("lease:3", 1_000, null);
      grant("lease:4", 1_000, null);
      await flushed();
      expect(writes).toEqual([
        { lease: "lease:2", items: [{ close: true }] },
        { lease: "lease:3", items: [{ close: true }] },
      ]);
      expect(take(100)?.lease.key).toBe("lease:4");
    }),
  );

  it(
    "whose calls all settled before its time was up is closed when its time is up, with no call to notice",
    inUnit(async () => {
      const { writes, grant, take, flushed, advance } = setup();
      grant("lease:1", 1_000, null);
      const hold = take(100)!;
      hold.lease.settle(hold, { chargeKey: "done", tokens: 40, costUsd: 0 }, context("done"));
      await flushed();
      writes.length = 0;
      // No call comes after it: what it still holds (960 tokens) goes back when its time is up, not when the
      // limiter presumes its isolate gone a minute after lending it (room refused to every other isolate).
      advance(5_000);
      await flushed();
      expect(writes).toEqual([{ lease: "lease:1", items: [{ close: true }] }]);
      expect(take(100)).toBeNull();
    }),
  );

  it("asks for the next lease once time or room runs low, one request at a time", () => {
    const { book, grant, take, advance } = setup();
    // No lease: the call that reserves asks for one; concurrent ones reserve without asking.
    expect(book.startAsking(WORKSPACE, "reserve")).toBe(true);
    expect(book.startAsking(WORKSPACE, "reserve")).toBe(false);
    book.doneAsking(WORKSPACE);
    grant("lease:1", 1_000, null);
    take(600);
    expect(book.startAsking(WORKSPACE, "renew")).toBe(false);
    // Less than 30 % of the room left.
    take(150);
    expect(book.startAsking(WORKSPACE, "renew")).toBe(true);
    expect(book.startAsking(WORKSPACE, "renew")).toBe(false);
    // A request out for 2 s is presumed lost.
    advance(2_000);
    expect(book.startAsking(WORKSPACE, "renew")).toBe(true);
    book.doneAsking(WORKSPACE);
    grant("lease:2", 1_000, null);
    expect(book.startAsking(WORKSPACE, "renew")).toBe(false);
    // 60 % of its 5 s spent.
    advance(3_000);
    expect(book.startAsking(WORKSPACE, "renew")).toBe(true);
  });

  it("sizes the next lease to the pace of the calls on this one, doubled, and no less than 10 calls", () => {
    const { book, grant, take, advance } = setup();
    expect(book.leaseCallsFor(WORKSPACE)).toBe(10);
    grant("lease:1", 1_000_000, null);
    // 200 calls in its first second: 200 a second over a 5 s lease, doubled.
    for (let call = 0; call < 200; call++) take(10);
    advance(1_000);
    expect(book.leaseCallsFor(WORKSPACE)).toBe(2_000);
    // Ended (its time is up), it still tells the next one's size: 200 calls over 5 s, doubled.
    advance(4_000);
    expect(take(10)).toBeNull();
    expect(book.leaseCallsFor(WORKSPACE)).toBe(400);
  });

  it(
    "that no call took from is closed when its time is up",
    inUnit(async () => {
      const { writes, grant, take, flushed, advance } = setup();
      // Lent with a call's own reservation, or renewed in the background, as the burst of calls that asked ended:
      // no call comes to take from it, and what it holds must go back when its time is up, not a minute after.
      grant("lease:1", 1_000, null);
      advance(5_000);
      await flushed();
      expect(writes).toEqual([{ lease: "lease:1", items: [{ close: true }] }]);
      expect(take(100)).toBeNull();
    }),
  );

  it(
    "a released call (zeros) gives back its whole estimate and sends no charge",
    inUnit(async () => {
      const { writes, grant, take, flushed } = setup();
      grant("lease:1", 1_000, null);
      const hold = take(700)!;
      hold.lease.settle(hold, { chargeKey: "failed", tokens: 0, costUsd: 0 }, context("failed"));
      expect(hold.lease.tokens).toBe(1_000);
      await flushed();
      expect(writes).toEqual([]);
    }),
  );
});
