import type { WorkspaceBudgets } from "../db/schema.ts";
import { sleepMs } from "../lib/sleep.ts";
import type { BudgetLease, LeasedCharge } from "../limits/budget-types.ts";
import { Coalescer } from "./coalesce.ts";
import type { CallContext } from "./types.ts";

/**
 * The isolate's side of budget leases (BudgetLease in src/limits/budgets.ts).
 * While a workspace's lease lasts and has room, its calls reserve against it
 * here, with no Durable Object call, and their charges go to the limiter in
 * batches. The limiter grants a lease only with ample room left, so near a
 * limit every call reserves by itself and refusals stay exact.
 *
 * A lease is spent for LEASE_SPEND_MS at most, well inside the time the
 * limiter holds it, then retired (also when a newer one replaces it or the
 * budgets change); once its last call has settled it is closed, and what it
 * still holds goes back to the workspace. Before it runs out of time or
 * room, the call that notices asks for the next one in the background, so
 * under steady load no call waits for the limiter. One request for a lease
 * is out per workspace at a time: concurrent calls that find no lease
 * reserve by themselves, rather than each take a lease that the next replaces.
 */

const LEASE_SPEND_MS = 5_000;
/** Renewal starts once this share of the spending time has passed, or less than this share of the room is left. */
const RENEW_AFTER_TIME_SHARE = 0.6;
const RENEW_BELOW_ROOM_SHARE = 0.3;
/**
 * A lease is sized to this isolate's pace: the calls its last lease took per
 * millisecond, over a whole spending time, doubled so demand can grow (the
 * limiter caps it by the room). A busy isolate then renews about once per
 * spending time rather than every hundred calls, and a quiet one holds little.
 */
const MIN_LEASE_CALLS = 10;
const LEASE_DEMAND_HEADROOM = 2;
/** Below this a lease's age says little about its pace. */
const MIN_PACE_WINDOW_MS = 250;
/** A lease request out this long is presumed lost with its request: another may start. */
const STALE_LEASE_REQUEST_MS = 2_000;
/** Charges against a lease written within this long share one limiter call, as unbudgeted ones do. */
const LEASE_FLUSH_DELAY_MS = 250;
const LEASE_MAX_CHARGES_PER_CALL = 100;
/** Past this many workspaces the map is dropped: the limiter gives back leases nobody closes (LEASE_HOLD_MS). */
const MAX_LEASED_WORKSPACES = 5_000;

/**
 * A call's charge, with the budgets its thresholds are judged against (BudgetAmounts.limitsNow); what the lease's
 * calls in flight still hold once it lends no more (LeasedSettleInput.keep); or the lease's close.
 */
export type LeaseBatchItem =
  | { charge: LeasedCharge; context: CallContext; limits: WorkspaceBudgets | null }
  | { keep: { tokens: number; costUsd: number } }
  | { close: true };
export type LeaseBatchWriter = (lease: Lease, items: LeaseBatchItem[], batchKey: string) => Promise<void>;
/** Keeps a write alive past the request that started it (the request's waitUntil). */
export type Keep = (work: Promise<unknown>) => void;

/** A call reserved against a lease: what it took, to give back what it did not use. */
export class LeaseHold {
  readonly lease: Lease;
  readonly tokens: number;
  readonly costUsd: number;

  constructor(lease: Lease, tokens: number, costUsd: number) {
    this.lease = lease;
    this.tokens = tokens;
    this.costUsd = costUsd;
  }
}

export class Lease {
  readonly key: string;
  readonly workspaceId: string;
  readonly budgets: WorkspaceBudgets;
  /** Left to spend here; null where the workspace has no budget of that kind. */
  tokens: number | null;
  costUsd: number | null;
  readonly granted: { tokens: number | null; costUsd: number | null };
  readonly grantedAtMs: number;
  readonly renewFromMs: number;
  readonly spendUntilMs: number;
  readonly #batches: Coalescer<LeaseBatchItem>;
  #taken = 0;
  #inFlight = 0;
  /** What the calls in flight took from the lease: what it must still hold once it lends no more. */
  readonly #heldInFlight = { tokens: 0, costUsd: 0 };
  #retired = false;
  #closed = false;

  constructor(
    grant: BudgetLease,
    workspaceId: string,
    budgets: WorkspaceBudgets,
    nowMs: number,
    write: LeaseBatchWriter,
  ) {
    this.key = grant.key;
    this.workspaceId = workspaceId;
    this.budgets = budgets;
    this.tokens = grant.tokens;
    this.costUsd = grant.costUsd;
    this.granted = { tokens: grant.tokens, costUsd: grant.costUsd };
    this.grantedAtMs = nowMs;
    this.renewFromMs = nowMs + LEASE_SPEND_MS * RENEW_AFTER_TIME_SHARE;
    this.spendUntilMs = nowMs + LEASE_SPEND_MS;
    this.#batches = new Coalescer((items, batchKey) => write(this, items, batchKey), {
      delayMs: LEASE_FLUSH_DELAY_MS,
      maxItems: LEASE_MAX_CHARGES_PER_CALL,
    });
  }

  /** Takes what a call may spend, or null when the lease cannot cover it. */
  take(tokens: number, costUsd: number, nowMs: number): LeaseHold | null {
    if (this.#retired || nowMs >= this.spendUntilMs) return null;
    if ((this.tokens !== null && tokens > this.tokens) || (this.costUsd !== null && costUsd > this.costUsd)) {
      return null;
    }
    if (this.tokens !== null) this.tokens -= tokens;
    if (this.costUsd !== null) this.costUsd -= costUsd;
    this.#taken++;
    this.#inFlight++;
    this.#heldInFlight.tokens += tokens;
    this.#heldInFlight.costUsd += costUsd;
    return new LeaseHold(this, tokens, costUsd);
  }

  /**
   * A call's actual amounts (zeros release it): what it did not use is
   * spendable again at once; the charge joins the next batch. Answers the
   * batch's write for the call that opened it (see Coalescer).
   */
  settle(
    hold: LeaseHold,
    charge: LeasedCharge,
    context: CallContext,
    limits: WorkspaceBudgets | null = this.budgets,
  ): Promise<unknown> {
    if (this.tokens !== null) this.tokens += hold.tokens - charge.tokens;
    if (this.costUsd !== null) this.costUsd += hold.costUsd - charge.costUsd;
    this.#inFlight--;
    this.#heldInFlight.tokens -= hold.tokens;
    this.#heldInFlight.costUsd -= hold.costUsd;
    const charged =
      charge.tokens > 0 || charge.costUsd > 0 ? this.#batches.add({ charge, context, limits }) : undefined;
    return Promise.all([charged, this.#closeWhenDone()]);
  }

  /** How many calls the next lease should cover, from this one's pace (see MIN_LEASE_CALLS). */
  nextLeaseCalls(nowMs: number): number {
    const elapsedMs = Math.max(MIN_PACE_WINDOW_MS, nowMs - this.grantedAtMs);
    const calls = Math.ceil((this.#taken / elapsedMs) * LEASE_SPEND_MS * LEASE_DEMAND_HEADROOM);
    return Math.max(MIN_LEASE_CALLS, calls);
  }

  /** Time or room is running low: the next lease should be asked for now. */
  dueForRenewal(nowMs: number): boolean {
    const low = (left: number | null, granted: number | null) =>
      left !== null && granted !== null && left < granted * RENEW_BELOW_ROOM_SHARE;
    return (
      nowMs >= this.renewFromMs || low(this.tokens, this.granted.tokens) || low(this.costUsd, this.granted.costUsd)
    );
  }

  /**
   * No new calls; closed once the last one settles. Until then the limiter keeps holding only what the calls in
   * flight took (a lease unclosed is given back a minute after it was lent, as its isolate is presumed gone: a
   * stream or a slow model's call running past that lost its hold, and others could reserve the room it spends).
   */
  retire(): Promise<unknown> {
    if (this.#retired) return Promise.resolve();
    this.#retired = true;
    if (this.#inFlight === 0) return this.#closeWhenDone();
    const { tokens, costUsd } = this.#heldInFlight;
    // Sums and differences of dollar amounts drift by a hair: rounded as the limiter rounds them.
    return this.#batches.add({ keep: { tokens, costUsd: Math.max(0, Math.round(costUsd * 1e8) / 1e8) } });
  }

  #closeWhenDone(): Promise<unknown> {
    if (!this.#retired || this.#inFlight > 0 || this.#closed) return Promise.resolve();
    this.#closed = true;
    return this.#batches.add({ close: true });
  }
}

/** The isolate's current lease per workspace. */
export class LeaseBook {
  readonly #active = new Map<string, Lease>();
  /** When each workspace's request for a lease went out, while it is out. */
  readonly #asking = new Map<string, number>();
  /** The size a workspace's next lease should have, from the last one that ended (see MIN_LEASE_CALLS). */
  readonly #nextCalls = new Map<string, number>();
  readonly #now: () => number;
  readonly #sleep: (ms: number) => Promise<void>;

  constructor(options: { now?: () => number; sleep?: (ms: number) => Promise<void> } = {}) {
    this.#now = options.now ?? Date.now;
    this.#sleep = options.sleep ?? sleepMs;
  }

  /** A hold on the workspace's lease for this call, or null: then the call reserves at the limiter. */
  take(
    workspaceId: string,
    budgets: WorkspaceBudgets,
    amounts: { tokens: number; costUsd: number },
    keep: Keep,
  ): LeaseHold | null {
    const lease = this.#active.get(workspaceId);
    if (!lease) return null;
    const nowMs = this.#now();
    if (nowMs >= lease.spendUntilMs || !sameBudgets(lease.budgets, budgets)) {
      keep(this.#retire(workspaceId, lease));
      return null;
    }
    return lease.take(amounts.tokens, amounts.costUsd, nowMs);
  }

  /** The lease lends no more: no longer the workspace's current one, if it still was. */
  #retire(workspaceId: string, lease: Lease): Promise<unknown> {
    if (this.#active.get(workspaceId) === lease) {
      this.#active.delete(workspaceId);
      if (this.#nextCalls.size >= MAX_LEASED_WORKSPACES) this.#nextCalls.clear();
      this.#nextCalls.set(workspaceId, lease.nextLeaseCalls(this.#now()));
    }
    return lease.retire();
  }

  /** How many calls like the one at hand the workspace's next lease should cover. */
  leaseCallsFor(workspaceId: string): number {
    const lease = this.#active.get(workspaceId);
    return lease ? lease.nextLeaseCalls(this.#now()) : (this.#nextCalls.get(workspaceId) ?? MIN_LEASE_CALLS);
  }

  /**
   * Whether this call should ask for a lease (with its reservation, or in the
   * background when the current one is due for renewal); if so, the request
   * counts as out until `doneAsking`.
   */
  startAsking(workspaceId: string, reason: "reserve" | "renew"): boolean {
    const nowMs = this.#now();
    if (reason === "renew") {
      const lease = this.#active.get(workspaceId);
      if (!lease?.dueForRenewal(nowMs)) return false;
    }
    const askedAtMs = this.#asking.get(workspaceId);
    if (askedAtMs !== undefined && nowMs - askedAtMs < STALE_LEASE_REQUEST_MS) return false;
    if (this.#asking.size >= MAX_LEASED_WORKSPACES) this.#asking.clear();
    this.#asking.set(workspaceId, nowMs);
    return true;
  }

  doneAsking(workspaceId: string): void {
    this.#asking.delete(workspaceId);
  }

  /** A lease the limiter granted: it replaces the workspace's current one, which is retired. */
  install(
    grant: BudgetLease,
    workspaceId: string,
    budgets: WorkspaceBudgets,
    write: LeaseBatchWriter,
    keep: Keep,
  ): void {
    const previous = this.#active.get(workspaceId);
    if (previous) keep(previous.retire());
    else if (this.#active.size >= MAX_LEASED_WORKSPACES) this.#active.clear();
    const nowMs = this.#now();
    const lease = new Lease(grant, workspaceId, budgets, nowMs, write);
    this.#active.set(workspaceId, lease);
    // Retired when its time is up even if no call comes to notice: its calls still running then must have their
    // holds kept at the limiter before it presumes the isolate gone, and with none running, what it still holds
    // goes back then. Scheduled as it is lent, not at its first call: one lent as a burst of calls ended (renewed
    // in the background, or lent with a call's own reservation) had no call, so no retirement, and the limiter
    // held its room until a minute after lending it. Kept alive by the request that asked for it (5 s at most).
    keep(this.#sleep(lease.spendUntilMs - nowMs).then(() => this.#retire(workspaceId, lease)));
  }
}

function sameBudgets(a: WorkspaceBudgets, b: WorkspaceBudgets): boolean {
  return (
    a.daily_tokens === b.daily_tokens &&
    a.monthly_tokens === b.monthly_tokens &&
    a.daily_cost_usd === b.daily_cost_usd &&
    a.monthly_cost_usd === b.monthly_cost_usd
  );
}
