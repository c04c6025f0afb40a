import type { WorkspaceLimiter } from "../../durable-objects/workspace-limiter.ts";
import type { AcquireResult, BucketSnapshot, RateLimitRule } from "./types.ts";

export { rateLimitHeaders } from "./headers.ts";
export type { RateLimitRule } from "./types.ts";

/**
 * The isolate's side of rate limiting. Each (workspace, rule set) holds a
 * lease: a few tokens taken from the WorkspaceLimiter's buckets in one call
 * and spent locally, so most requests make no Durable Object call.
 *
 * Why it never over-admits: the object deducts leased tokens when it grants
 * them, a lease is spent only within `leaseTtlMs` of being asked for, and
 * unused tokens go back (the object caps them at burst). Over t seconds that
 * start with no lease outstanding, at most burst + rate·t requests pass,
 * across any number of isolates; over an arbitrary window a lease can shift
 * admissions by at most its TTL, so the bound there is burst + rate·(t + TTL).
 * (A request that asked the object spends a token of its grant even when the
 * answer took longer than the TTL, so there the shift is that call's latency.)
 */

export interface RateLimitDecision {
  allowed: boolean;
  /** The most constraining rule: `limit` is its burst, `windowSeconds` the time it takes to refill. */
  policy: { name: string; limit: number; windowSeconds: number };
  remaining: number;
  resetSeconds: number;
  /** 0 when allowed, at least 1 when refused. */
  retryAfterSeconds: number;
}

export interface RateLimiterOptions {
  /** How long leased tokens may be spent; unused ones then go back. */
  leaseTtlMs?: number;
  now?: () => number;
}

const DEFAULT_LEASE_TTL_MS = 1_000;
/** The largest lease is this much of the slowest rule's rate: big enough to skip most calls, small enough to share. */
const LEASE_WINDOW_MS = 250;
/** Past this many leases the idle ones are dropped, so a long-lived isolate's map stays small. */
const MAX_LEASES = 10_000;
const IDLE_LEASE_MS = 60_000;
/**
 * After a refusal, answer locally for at least this long rather than asking
 * again the moment one token has accrued: under a flood that keeps object calls
 * near one per hold per isolate. Capped at half the time a bucket takes to
 * fill, so what accrues meanwhile stays in the bucket for the next lease.
 */
const MIN_REFUSAL_HOLD_MS = 50;

/**
 * A lease call in flight. Waiters neither await the caller's promise nor get
 * woken by it: in Workers a promise belongs to the request that made it (its
 * continuations run there, and another request may not even resolve it), so
 * a waiter resuming on another request's promise would do its own I/O on
 * behalf of that request. Waiters poll with timers of their own instead.
 */
interface Refill {
  startedAtMs: number;
}

/** How often a waiting request looks whether the lease call came back (a local call takes about a millisecond). */
const REFILL_POLL_MS = 2;
/** A call out for longer than this is presumed lost with its request: the next waiter makes its own. */
const STALE_REFILL_MS = 2_000;

interface Lease {
  workspaceId: string;
  rules: RateLimitRule[];
  /** Unspent tokens, usable until `expiresAtMs`. */
  tokens: number;
  expiresAtMs: number;
  /** After a refusal, answer 429 locally until then instead of asking again. */
  refusedUntilMs: number;
  /** The object's view of the buckets at its last answer, for headers. */
  buckets: BucketSnapshot[];
  bucketsAtMs: number;
  /** The one call in flight for this lease; concurrent requests wait for it (see `#awaitRefill`). */
  refill: Refill | null;
  /** Requests waiting for `refill`, and tokens spent since the last one: local demand sizes the next lease. */
  waiting: number;
  spentSinceRefill: number;
  lastRefillAtMs: number;
  lastUsedMs: number;
}

export class RateLimiter {
  readonly #namespace: DurableObjectNamespace<WorkspaceLimiter>;
  readonly #leaseTtlMs: number;
  readonly #now: () => number;
  readonly #leases = new Map<string, Lease>();
  /** Rules arrays are read, never changed, so a key worked out for one holds while the array lives. */
  readonly #keys = new WeakMap<RateLimitRule[], { workspaceId: string; key: string }>();

  constructor(namespace: DurableObjectNamespace<WorkspaceLimiter>, options: RateLimiterOptions = {}) {
    this.#namespace = namespace;
    this.#leaseTtlMs = options.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
    this.#now = options.now ?? Date.now;
    if (!(this.#leaseTtlMs > 0)) throw new RangeError(`leaseTtlMs must be positive, got ${this.#leaseTtlMs}`);
  }

  /** Admits one request against every rule at once, or refuses it with the wait. */
  async check(workspaceId: string, rules: RateLimitRule[]): Promise<RateLimitDecision> {
    if (rules.length === 0) throw new RangeError("at least one rule is required");
    const lease = this.#leaseFor(workspaceId, rules);
    for (;;) {
      const nowMs = this.#now();
      lease.lastUsedMs = nowMs;
      if (nowMs < lease.refusedUntilMs) return refused(lease, nowMs);
      if (lease.tokens > 0 && nowMs < lease.expiresAtMs) {
        lease.tokens -= 1;
        lease.spentSinceRefill += 1;
        return allowed(lease, nowMs);
      }
      this.#returnExpired(lease, nowMs);
      // Counted before the refill starts, so the lease it asks for covers this request too.
      lease.waiting += 1;
      try {
        const running = lease.refill;
        if (running && nowMs - running.startedAtMs < STALE_REFILL_MS) await this.#awaitRefill(lease, running);
        else if ((await this.#runRefill(lease, nowMs)) > 0 && lease.tokens > 0) {
          // The caller spends a token of its own grant at once, even one that came back after the lease's time (a
          // limiter slower than leaseTtlMs): else each grant expired on arrival, went back and was asked for again,
          // and the request never ended. Admitted at most the call's latency after the object deducted the token.
          lease.tokens -= 1;
          lease.spentSinceRefill += 1;
          return allowed(lease, this.#now());
        }
      } finally {
        lease.waiting -= 1;
      }
    }
  }

  /** Answers the tokens granted. */
  async #runRefill(lease: Lease, nowMs: number): Promise<number> {
    const refill: Refill = { startedAtMs: nowMs };
    lease.refill = refill;
    try {
      return await this.#refill(lease);
    } finally {
      if (lease.refill === refill) lease.refill = null;
    }
  }

  /** Until the call comes back (or is presumed lost), on this request's own timer. */
  async #awaitRefill(lease: Lease, refill: Refill): Promise<void> {
    while (lease.refill === refill && this.#now() - refill.startedAtMs < STALE_REFILL_MS) {
      await new Promise((wake) => setTimeout(wake, REFILL_POLL_MS));
    }
  }

  async #refill(lease: Lease): Promise<number> {
    // The lease is timed from before the call: the object deducts the tokens somewhere inside it.
    const askedAtMs = this.#now();
    const wanted = this.#leaseSize(lease, askedAtMs);
    const result: AcquireResult = await this.#namespace
      .getByName(lease.workspaceId)
      .acquire({ rules: lease.rules, tokens: wanted });
    const answeredAtMs = this.#now();
    lease.buckets = result.buckets;
    lease.bucketsAtMs = answeredAtMs;
    lease.spentSinceRefill = 0;
    lease.lastRefillAtMs = askedAtMs;
    if (result.granted > 0) {
      lease.tokens += result.granted;
      lease.expiresAtMs = askedAtMs + this.#leaseTtlMs;
    } else {
      lease.refusedUntilMs = answeredAtMs + Math.max(1, result.retryAfterMs, refusalHoldMs(lease.rules));
    }
    return result.granted;
  }

  /**
   * Demand-sized: what this isolate spent per LEASE_WINDOW_MS since the last
   * lease, plus whoever is waiting now, between 1 and the rate-sized maximum.
   * An isolate seeing one request does not sit on tokens other isolates need.
   */
  #leaseSize(lease: Lease, nowMs: number): number {
    const slowestRate = Math.min(...lease.rules.map((rule) => rule.ratePerSecond));
    const smallestBurst = Math.min(...lease.rules.map((rule) => rule.burst));
    const largest = Math.max(1, Math.min(Math.floor(smallestBurst), Math.ceil((slowestRate * LEASE_WINDOW_MS) / 1000)));
    const elapsedMs = Math.max(1, nowMs - lease.lastRefillAtMs);
    const recent = elapsedMs > this.#leaseTtlMs ? 0 : Math.ceil((lease.spentSinceRefill * LEASE_WINDOW_MS) / elapsedMs);
    return Math.min(largest, Math.max(1, recent + lease.waiting));
  }

  /** Unused tokens of an expired lease go back; fire-and-forget, since losing them only under-admits. */
  #returnExpired(lease: Lease, nowMs: number): void {
    if (lease.tokens === 0 || nowMs < lease.expiresAtMs) return;
    const tokens = lease.tokens;
    lease.tokens = 0;
    this.#namespace
      .getByName(lease.workspaceId)
      .release({ rules: lease.rules, tokens })
      .catch(() => {});
  }

  /** The lease's key, worked out once per rules array: callers that keep theirs (the middleware does) skip the JSON. */
  #keyOf(workspaceId: string, rules: RateLimitRule[]): string {
    const known = this.#keys.get(rules);
    if (known?.workspaceId === workspaceId) return known.key;
    // Rule config is part of the key: a plan change starts a fresh lease under the new limits.
    const key = JSON.stringify([workspaceId, ...rules.map((rule) => [rule.name, rule.ratePerSecond, rule.burst])]);
    this.#keys.set(rules, { workspaceId, key });
    return key;
  }

  #leaseFor(workspaceId: string, rules: RateLimitRule[]): Lease {
    const key = this.#keyOf(workspaceId, rules);
    let lease = this.#leases.get(key);
    if (!lease) {
      if (this.#leases.size >= MAX_LEASES) this.#dropIdle(this.#now());
      lease = {
        workspaceId,
        rules: rules.map((rule) => ({ name: rule.name, ratePerSecond: rule.ratePerSecond, burst: rule.burst })),
        tokens: 0,
        expiresAtMs: 0,
        refusedUntilMs: 0,
        buckets: [],
        bucketsAtMs: 0,
        refill: null,
        waiting: 0,
        spentSinceRefill: 0,
        lastRefillAtMs: Number.NEGATIVE_INFINITY,
        lastUsedMs: 0,
      };
      this.#leases.set(key, lease);
    }
    return lease;
  }

  #dropIdle(nowMs: number): void {
    for (const [key, lease] of this.#leases) {
      if (lease.refill || nowMs - lease.lastUsedMs < IDLE_LEASE_MS) continue;
      this.#returnExpired(lease, Number.POSITIVE_INFINITY);
      this.#leases.delete(key);
    }
  }
}

function refusalHoldMs(rules: RateLimitRule[]): number {
  const halfFillMs = Math.min(...rules.map((rule) => (rule.burst * 500) / rule.ratePerSecond));
  return Math.min(MIN_REFUSAL_HOLD_MS, Math.floor(halfFillMs));
}

function allowed(lease: Lease, nowMs: number): RateLimitDecision {
  const tightest = tightestBucket(lease);
  return {
    allowed: true,
    policy: policyOf(lease, tightest),
    // The object's balance when it last answered, plus what this isolate still holds.
    remaining: (tightest?.remaining ?? 0) + lease.tokens,
    resetSeconds: resetSeconds(lease, tightest, nowMs),
    retryAfterSeconds: 0,
  };
}

function refused(lease: Lease, nowMs: number): RateLimitDecision {
  const tightest = tightestBucket(lease);
  return {
    allowed: false,
    policy: policyOf(lease, tightest),
    remaining: 0,
    resetSeconds: resetSeconds(lease, tightest, nowMs),
    retryAfterSeconds: Math.max(1, Math.ceil((lease.refusedUntilMs - nowMs) / 1000)),
  };
}

/** The bucket with the fewest tokens left; on a tie, the one furthest from full. */
function tightestBucket(lease: Lease): BucketSnapshot | undefined {
  let tightest: BucketSnapshot | undefined;
  for (const bucket of lease.buckets) {
    if (
      !tightest ||
      bucket.remaining < tightest.remaining ||
      (bucket.remaining === tightest.remaining && bucket.resetMs > tightest.resetMs)
    ) {
      tightest = bucket;
    }
  }
  return tightest;
}

function policyOf(lease: Lease, bucket: BucketSnapshot | undefined): RateLimitDecision["policy"] {
  const rule = lease.rules.find((candidate) => candidate.name === bucket?.name) ?? lease.rules[0];
  return {
    name: rule.name,
    limit: rule.burst,
    windowSeconds: Math.max(1, Math.ceil(rule.burst / rule.ratePerSecond)),
  };
}

function resetSeconds(lease: Lease, bucket: BucketSnapshot | undefined, nowMs: number): number {
  if (!bucket) return 0;
  return Math.max(0, Math.ceil((bucket.resetMs - (nowMs - lease.bucketsAtMs)) / 1000));
}
