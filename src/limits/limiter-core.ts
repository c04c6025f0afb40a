import { type LimiterStorage, LimiterStore, type StoredBucket, type StoredStrikes } from "./limiter-store.ts";
import { activeBlock, assertStrikePolicy, NO_STRIKES, type StrikeState, strike, strikeExpiryMs } from "./strikes.ts";
import {
  assertBucketConfig,
  type BucketState,
  fullBucket,
  give,
  msUntilFull,
  msUntilTokens,
  refill,
  take,
  wholeTokens,
} from "./token-bucket.ts";
import type {
  AcquireInput,
  AcquireResult,
  BucketSnapshot,
  Clocked,
  RateLimitRule,
  ReleaseInput,
  StrikeInput,
  StrikeResult,
} from "./types.ts";

/** Prune at most this often, so a hot object does not run DELETEs on every call. */
const PRUNE_INTERVAL_MS = 60_000;
/**
 * A bucket is forgotten this long after it became full at its last-seen rate;
 * the margin covers a plan that lowered the rate meanwhile.
 */
const BUCKET_FORGET_AFTER_FULL_MS = 10 * 60_000;
/** The in-memory copies are caches over SQLite; past this many entries they start over. */
const MAX_CACHED_ENTRIES = 10_000;

/**
 * A workspace's counters: token buckets and client strikes. SQLite holds the
 * truth so the counters survive eviction and restarts; the maps are a copy so
 * a hot object does not re-read rows on every call. Everything is synchronous:
 * in a Durable Object no other call can interleave between reading a bucket
 * and writing it back, and each call's writes commit in one transaction.
 */
export class LimiterCore {
  readonly #store: LimiterStore;
  /** `null` caches "no row", which for a bucket means full. */
  readonly #buckets = new Map<string, StoredBucket | null>();
  readonly #strikes = new Map<string, StoredStrikes | null>();
  #lastPruneMs = Number.NEGATIVE_INFINITY;

  constructor(storage: LimiterStorage) {
    this.#store = new LimiterStore(storage);
  }

  get schemaVersion(): number {
    return this.#store.schemaVersion();
  }

  /**
   * Takes the same number of tokens, up to `tokens`, from every rule's bucket
   * at once: the grant is the smallest whole balance among them.
   */
  acquire(input: Clocked<AcquireInput>): AcquireResult {
    assertRules(input.rules);
    assertTokenCount(input.tokens);
    const { nowMs } = input;
    this.#maybePrune(nowMs);
    const states = input.rules.map((rule) => refill(this.#bucket(rule, nowMs), rule, nowMs));
    const granted = Math.min(input.tokens, ...states.map(wholeTokens));
    const after = granted > 0 ? states.map((state) => take(state, granted)) : states;
    // Refilled balances are written even without a grant, so a shrunk burst stays capped.
    this.#saveBuckets(input.rules, after);
    const retryAfterMs =
      granted > 0 ? 0 : Math.max(...input.rules.map((rule, index) => msUntilTokens(after[index], rule, 1)));
    return { granted, retryAfterMs, buckets: snapshots(input.rules, after) };
  }

  /** Gives back leased tokens that were not used, never above any bucket's burst. */
  release(input: Clocked<ReleaseInput>): { buckets: BucketSnapshot[] } {
    assertRules(input.rules);
    assertTokenCount(input.tokens);
    const { nowMs } = input;
    const after = input.rules.map((rule) => give(refill(this.#bucket(rule, nowMs), rule, nowMs), rule, input.tokens));
    this.#saveBuckets(input.rules, after);
    return { buckets: snapshots(input.rules, after) };
  }

  /** Counts one failure for `key`; at the threshold the key is blocked for the cool-down. */
  recordStrike(input: Clocked<StrikeInput>): StrikeResult {
    assertStrikePolicy(input);
    this.#maybePrune(input.nowMs);
    const current = this.#strikeState(input.key);
    const outcome = strike(current, input, input.nowMs);
    // A blocked key's strike changes nothing, so nothing is written.
    if (outcome.state !== current) {
      const stored = { ...outcome.state, expiresAtMs: strikeExpiryMs(outcome.state, input) };
      this.#store.writeStrikes(input.key, stored);
      this.#cache(this.#strikes, input.key, stored);
    }
    const { strikes, blocked, blockedUntilMs, newlyBlocked } = outcome;
    return { strikes, blocked, blockedUntilMs, newlyBlocked };
  }

  /** When the key's block ends (epoch ms), or null if it is not blocked. */
  blockedUntil(key: string, nowMs: number): number | null {
    return activeBlock(this.#strikeState(key), nowMs);
  }

  #bucket(rule: RateLimitRule, nowMs: number): BucketState {
    if (!this.#buckets.has(rule.name)) this.#cache(this.#buckets, rule.name, this.#store.readBucket(rule.name));
    return this.#buckets.get(rule.name) ?? fullBucket(rule, nowMs);
  }

  #strikeState(key: string): StrikeState {
    if (!this.#strikes.has(key)) this.#cache(this.#strikes, key, this.#store.readStrikes(key));
    return this.#strikes.get(key) ?? NO_STRIKES;
  }

  #saveBuckets(rules: RateLimitRule[], states: BucketState[]): void {
    const stored = states.map((state, index) => ({
      ...state,
      fullAtMs: state.updatedAtMs + msUntilFull(state, rules[index]),
    }));
    // The cache changes only once SQLite has the rows, so a failed write cannot leave them apart.
    this.#store.atomically(() => {
      for (const [index, rule] of rules.entries()) this.#store.writeBucket(rule.name, stored[index]);
    });
    for (const [index, rule] of rules.entries()) this.#cache(this.#buckets, rule.name, stored[index]);
  }

  #cache<T>(map: Map<string, T>, key: string, value: T): void {
    if (map.size >= MAX_CACHED_ENTRIES && !map.has(key)) map.clear();
    map.set(key, value);
  }

  #maybePrune(nowMs: number): void {
    if (nowMs - this.#lastPruneMs < PRUNE_INTERVAL_MS) return;
    this.#lastPruneMs = nowMs;
    const bucketsFullBeforeMs = nowMs - BUCKET_FORGET_AFTER_FULL_MS;
    this.#store.prune(bucketsFullBeforeMs, nowMs);
    for (const [name, bucket] of this.#buckets) {
      if (bucket === null || bucket.fullAtMs <= bucketsFullBeforeMs) this.#buckets.delete(name);
    }
    for (const [key, strikes] of this.#strikes) {
      if (strikes === null || strikes.expiresAtMs <= nowMs) this.#strikes.delete(key);
    }
  }
}

function snapshots(rules: RateLimitRule[], states: BucketState[]): BucketSnapshot[] {
  return rules.map((rule, index) => ({
    name: rule.name,
    limit: rule.burst,
    remaining: wholeTokens(states[index]),
    resetMs: msUntilFull(states[index], rule),
  }));
}

function assertRules(rules: RateLimitRule[]): void {
  if (rules.length === 0) throw new RangeError("at least one rule is required");
  const names = new Set<string>();
  for (const rule of rules) {
    if (typeof rule.name !== "string" || rule.name.length === 0) throw new RangeError("a rule needs a name");
    if (names.has(rule.name)) throw new RangeError(`rule "${rule.name}" appears twice`);
    names.add(rule.name);
    assertBucketConfig(rule);
  }
}

function assertTokenCount(tokens: number): void {
  if (!Number.isInteger(tokens) || tokens < 1) throw new RangeError(`tokens must be a positive integer, got ${tokens}`);
}
