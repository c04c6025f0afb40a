import {
  acquireTrial,
  type BreakerPolicy,
  type BreakerState,
  type BreakerStateName,
  type BreakerView,
  CLOSED,
  DEFAULT_BREAKER_POLICY,
  type Outcome,
  recordOutcomes,
  stateNameOf,
  viewOf,
} from "./breaker-core.ts";
import type { BreakerGate, CallOutcome } from "./router.ts";

/**
 * The isolate's side of the circuit breakers. The shared state lives in the
 * ProviderBreaker Durable Object (one per provider); each isolate keeps a copy
 * per (provider, model) that answers `state()` with no round trip. Its own
 * outcomes apply to the copy at once (so five failures here open it here
 * immediately) and go to the object: failures right away, successes batched
 * into a sync within `SYNC_INTERVAL_MS`. A copy older than `SYNC_INTERVAL_MS` is refreshed in the
 * background, so another isolate's opening shows here within about that long.
 * Only the half-open trial waits for the object, which grants it to one caller.
 */

export interface BreakerRemote {
  sync(provider: string, model: string, outcomes: Outcome[]): Promise<BreakerState>;
  tryTrial(provider: string, model: string, leaseMs?: number): Promise<{ granted: boolean; state: BreakerState }>;
}

export type { Outcome };

const SYNC_INTERVAL_MS = 1_000;
/**
 * How long a call waits for the object's answer to its half-open trial before deciding from the local copy, as
 * when the object cannot be reached: an object that does not answer must not hold the call (nor its caller's
 * cancellation, nor its deadline, which the router checks only once it has the answer).
 */
export const TRIAL_ANSWER_TIMEOUT_MS = 1_000;
const MAX_PENDING_OUTCOMES = 200;
/**
 * Models whose copies an isolate keeps. Callers name models (a request's `model`, a simulated model's
 * settings), so the set has no natural end; past this, idle copies go, oldest first, and are fetched
 * again if called.
 */
export const MAX_CACHED_MODELS = 1_000;

interface Entry {
  state: BreakerState;
  syncedAtMs: number;
  pending: Outcome[];
  /** The sync in flight, which later callers join rather than start another. */
  inflight: Promise<void> | null;
  /** Outcomes arrived while a sync was out: it goes round once more (in the context that started it). */
  again: boolean;
  /** The object has taken an outcome of this model from this isolate, so it lists the model (GET /api/v1/providers). */
  reported: boolean;
  /** When the flush of held successes a request scheduled is due (flushLater); null: none is. */
  flushDueAtMs: number | null;
}

/** The promise's value, or null when it fails or has not settled within `ms`. */
export async function answerWithin<T>(promise: Promise<T>, ms: number): Promise<T | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), ms);
    }),
  ])
    .catch(() => null)
    .finally(() => clearTimeout(timer));
}

function split(key: string): [string, string] {
  const colon = key.indexOf(":");
  return [key.slice(0, colon), key.slice(colon + 1)];
}

export class BreakerClient {
  readonly #remote: BreakerRemote | undefined;
  readonly #policy: BreakerPolicy;
  readonly #now: () => number;
  readonly #maxModels: number;
  readonly #entries = new Map<string, Entry>();

  constructor(
    remote?: BreakerRemote,
    options: { policy?: BreakerPolicy; now?: () => number; maxModels?: number } = {},
  ) {
    this.#remote = remote;
    this.#policy = options.policy ?? DEFAULT_BREAKER_POLICY;
    this.#now = options.now ?? Date.now;
    this.#maxModels = options.maxModels ?? MAX_CACHED_MODELS;
  }

  /** How many models this isolate keeps a copy of. */
  get cachedModels(): number {
    return this.#entries.size;
  }

  /** A gate for one request or batch: background syncs are kept alive by its waitUntil. */
  gate(waitUntil?: (promise: Promise<unknown>) => void): BreakerGate {
    const background = (work: Promise<unknown>) => (waitUntil ? waitUntil(work) : undefined);
    return {
      state: (key) => this.state(key, background),
      known: (keys) => this.known(keys),
      tryTrial: (key, leaseMs?: number) => this.tryTrial(key, background, leaseMs),
      record: (key, ok, error, call) => this.record(key, ok, error, background, call),
      releaseTrial: (key) => this.releaseTrial(key, background),
      proveTrial: (key, call) => this.proveTrial(key, call, background),
    };
  }

  /**
   * Fetches the copies of these targets this isolate has never had from the object (a new isolate, a model first
   * called here or dropped from the cache), waiting at most TRIAL_ANSWER_TIMEOUT_MS; undefined when it has them
   * all, so the hot path waits for nothing. Taken for closed, a new isolate's first calls all went to a provider
   * whose breaker the other isolates held open (each waiting out its attempt timeout where the provider hung).
   * Each call fetches its own: a fetch another request started is not its to wait on (see #syncInBackground).
   */
  known(keys: readonly string[]): Promise<void> | undefined {
    if (!this.#remote) return undefined;
    const unknown = keys.filter((key) => this.#entry(key).syncedAtMs === Number.NEGATIVE_INFINITY);
    return unknown.length > 0 ? Promise.all(unknown.map((key) => this.#fetchCopy(key))).then(() => {}) : undefined;
  }

  async #fetchCopy(key: string): Promise<void> {
    const [provider, model] = split(key);
    const shared = await answerWithin(this.#remote!.sync(provider, model, []), TRIAL_ANSWER_TIMEOUT_MS);
    const entry = this.#entry(key);
    if (entry.syncedAtMs !== Number.NEGATIVE_INFINITY) return;
    // Unanswered (the object down or slow), the copy decides as it stands, and the periodic sync tries again: the
    // next calls do not each wait for an object that does not answer.
    if (shared) {
      entry.state =
        entry.pending.length > 0 ? recordOutcomes(shared, entry.pending, this.#now(), this.#policy) : shared;
    }
    entry.syncedAtMs = this.#now();
  }

  /** This isolate's copy, if it has one (none is made): what GET /api/v1/providers shows when the object is down. */
  copyOf(key: string): BreakerView | undefined {
    const entry = this.#entries.get(key);
    return entry ? viewOf(entry.state, this.#now(), this.#policy) : undefined;
  }

  view(key: string): BreakerView {
    return viewOf(this.#entry(key).state, this.#now(), this.#policy);
  }

  state(key: string, background: (work: Promise<unknown>) => void = () => {}): BreakerStateName {
    const entry = this.#entry(key);
    if (this.#remote && this.#now() - entry.syncedAtMs >= SYNC_INTERVAL_MS)
      this.#syncInBackground(key, entry, background);
    return stateNameOf(entry.state, this.#now(), this.#policy);
  }

  /**
   * Asks for the half-open trial. `leaseMs`: how long the trial's attempt may run, which the slot is held for (at
   * least the policy's trialTimeoutMs; see acquireTrial).
   */
  async tryTrial(
    key: string,
    background: (work: Promise<unknown>) => void = () => {},
    leaseMs?: number,
  ): Promise<boolean> {
    const entry = this.#entry(key);
    const remote = this.#remote;
    if (remote) {
      const [provider, model] = split(key);
      const asked = remote.tryTrial(provider, model, leaseMs);
      const answer = await answerWithin(asked, TRIAL_ANSWER_TIMEOUT_MS);
      if (answer) {
        entry.state = answer.state;
        entry.syncedAtMs = this.#now();
        return answer.granted;
      }
      // A trial the object grants after the call stopped waiting is nobody's: handed back, rather than keeping
      // every call off the target until trialTimeoutMs.
      background(
        asked
          .then((late) =>
            late.granted ? remote.sync(provider, model, [{ atMs: this.#now(), ok: false, trialReleased: true }]) : null,
          )
          .catch(() => {}),
      );
    }
    // The shared breaker is unreachable or too slow (or there is none): decide locally rather than block the call.
    const outcome = acquireTrial(entry.state, this.#now(), this.#policy, leaseMs);
    entry.state = outcome.state;
    return outcome.granted;
  }

  record(
    key: string,
    ok: boolean,
    error?: string,
    background: (work: Promise<unknown>) => void = () => {},
    call: CallOutcome = {},
  ): void {
    this.#tell(
      key,
      {
        atMs: call.answeredAtMs ?? this.#now(),
        ok,
        ...(error ? { error } : {}),
        ...(call.startedAtMs !== undefined ? { startedAtMs: call.startedAtMs } : {}),
        ...(call.trial ? { trial: true as const } : {}),
      },
      background,
    );
  }

  /** The half-open trial granted here ended without a verdict: frees it for the next call, here and in the object. */
  releaseTrial(key: string, background: (work: Promise<unknown>) => void = () => {}): void {
    this.#tell(key, { atMs: this.#now(), ok: false, trialReleased: true }, background);
  }

  /**
   * The half-open trial granted here, a stream, began answering: closes the breaker here at once, and in the object
   * with the next sync, which a change of state sends at once (see #tell).
   */
  proveTrial(key: string, call: CallOutcome = {}, background: (work: Promise<unknown>) => void = () => {}): void {
    this.#tell(
      key,
      {
        atMs: call.answeredAtMs ?? this.#now(),
        ok: true,
        trialProved: true,
        ...(call.startedAtMs !== undefined ? { startedAtMs: call.startedAtMs } : {}),
      },
      background,
    );
  }

  #tell(key: string, outcome: Outcome, background: (work: Promise<unknown>) => void): void {
    const entry = this.#entry(key);
    const { ok } = outcome;
    const nowMs = this.#now();
    const before = stateNameOf(entry.state, nowMs, this.#policy);
    entry.state = recordOutcomes(entry.state, [outcome], nowMs, this.#policy);
    if (!this.#remote) return;
    // Full (the object down for a while, or slow under load): the oldest go, as the breaker's own window drops
    // them. Refused instead, the newest did not travel, and a run of failures after 200 answers never reached the
    // object, nor survived the copy's next sync.
    entry.pending.push(outcome);
    if (entry.pending.length > MAX_PENDING_OUTCOMES)
      entry.pending.splice(0, entry.pending.length - MAX_PENDING_OUTCOMES);
    // Failures, any change of state and a model's first outcome travel at once; steady successes ride the next
    // periodic sync. A model called once would otherwise keep its one success here, and never be listed.
    if (!ok || before !== "closed" || !entry.reported || nowMs - entry.syncedAtMs >= SYNC_INTERVAL_MS)
      this.#syncInBackground(key, entry, background);
    else this.#flushLater(key, entry, background);
  }

  /**
   * Held successes reach the object within SYNC_INTERVAL_MS even when no call follows, by a flush the request
   * that held the first of them schedules (and keeps alive in its waitUntil). Riding only the next call's sync,
   * a burst's last successes stayed here: GET /api/v1/providers counted one call of seven, and one failure
   * followed by six successes read as an error rate of 100%. A flush long past due died with its request, and
   * is scheduled anew.
   */
  #flushLater(key: string, entry: Entry, background: (work: Promise<unknown>) => void): void {
    const nowMs = this.#now();
    if (entry.flushDueAtMs !== null && nowMs < entry.flushDueAtMs + SYNC_INTERVAL_MS) return;
    const waitMs = Math.min(SYNC_INTERVAL_MS, Math.max(0, entry.syncedAtMs + SYNC_INTERVAL_MS - nowMs));
    entry.flushDueAtMs = nowMs + waitMs;
    background(
      new Promise((wake) => setTimeout(wake, waitMs)).then(() => {
        entry.flushDueAtMs = null;
        if (entry.pending.length === 0) return;
        // A sync out belongs to the request that started it: it goes round once more for these.
        if (entry.inflight) entry.again = true;
        else return this.#sync(key, entry);
      }),
    );
  }

  /**
   * Only the request that starts a sync holds it (in its waitUntil). A later
   * one must not: in Workers a promise belongs to the request that made it,
   * and its continuations run there, so holding another request's sync could
   * leave this one waiting on I/O it does not own (cancelled as hung). It asks
   * the running sync to go round once more instead.
   */
  #syncInBackground(key: string, entry: Entry, background: (work: Promise<unknown>) => void): void {
    if (!this.#remote) return;
    if (entry.inflight) {
      entry.again = true;
      return;
    }
    background(this.#sync(key, entry));
  }

  /** Waits for outstanding outcomes to reach the shared breaker and for fresh copies (tests, snapshots). */
  async flush(): Promise<void> {
    await Promise.all(
      [...this.#entries].map(async ([key, entry]) => {
        await this.#sync(key, entry);
        // The sync joined above may have left before the latest outcomes arrived.
        if (entry.pending.length > 0) await this.#sync(key, entry);
      }),
    );
  }

  #entry(key: string): Entry {
    let entry = this.#entries.get(key);
    if (!entry) {
      entry = {
        state: CLOSED,
        syncedAtMs: Number.NEGATIVE_INFINITY,
        pending: [],
        inflight: null,
        again: false,
        reported: false,
        flushDueAtMs: null,
      };
      if (this.#entries.size >= this.#maxModels) this.#forgetIdle();
      this.#entries.set(key, entry);
    }
    return entry;
  }

  /** Drops the oldest copies with nothing to send, down to three quarters of the bound. */
  #forgetIdle(): void {
    for (const [key, entry] of this.#entries) {
      if (this.#entries.size < this.#maxModels * 0.75) return;
      if (entry.pending.length === 0 && !entry.inflight) this.#entries.delete(key);
    }
  }

  #sync(key: string, entry: Entry): Promise<void> {
    if (!this.#remote) return Promise.resolve();
    const remote = this.#remote;
    entry.inflight ??= (async () => {
      try {
        let reached: boolean;
        do {
          entry.again = false;
          reached = await this.#exchange(remote, key, entry);
          // An unreachable object is not asked again at once: the next call's sync tries.
        } while (reached && entry.again && entry.pending.length > 0);
      } finally {
        entry.inflight = null;
      }
    })();
    return entry.inflight;
  }

  /** One round trip; false when the object could not be reached. */
  async #exchange(remote: BreakerRemote, key: string, entry: Entry): Promise<boolean> {
    const outcomes = entry.pending;
    entry.pending = [];
    try {
      const [provider, model] = split(key);
      const shared = await remote.sync(provider, model, outcomes);
      // Outcomes recorded while the call was out are not in the object's answer yet: replay them on top.
      entry.state =
        entry.pending.length > 0 ? recordOutcomes(shared, entry.pending, this.#now(), this.#policy) : shared;
      entry.syncedAtMs = this.#now();
      if (outcomes.length > 0) entry.reported = true;
      return true;
    } catch {
      // Keep them for the next sync; meanwhile the local copy still decides.
      entry.pending = [...outcomes, ...entry.pending].slice(-MAX_PENDING_OUTCOMES);
      entry.syncedAtMs = this.#now();
      return false;
    }
  }
}
