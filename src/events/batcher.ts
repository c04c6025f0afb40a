import { Logger } from "../lib/logger.ts";
import { WRITE_RETRY_DELAYS_MS, withWriteRetries } from "../lib/retry-write.ts";
import type { EventEnvelope, EventType, PublishedEvent } from "./catalog.ts";
import {
  deliverParkedEventsOf,
  EventParkedError,
  parkEvents,
  parkRefusedEvents,
  redeliverParkedSoon,
} from "./parked.ts";
import { type PublishContext, type PublishEnv, type PublishInput, stampEvent } from "./publish.ts";

/** While a workspace has events parked, how often a send first tries those again. */
const PARKED_TRY_EVERY_MS = 1_000;

/**
 * Publishes like `publish()`, but events issued in the same turn of the event
 * loop go to each workspace's hub in one RPC. For work that emits many events
 * at once inside one invocation (a queue batch of agents): without it, each
 * event is its own Durable Object round trip. Use one batcher per invocation;
 * stubs must not outlive the invocation that made them.
 *
 * A workspace has at most one RPC out at a time; what is issued meanwhile
 * goes in the next one. So events get their seq in the order they were
 * issued, and callers need not wait for one event before issuing the next.
 * What the hub will not take is parked like publish()'s (src/events/parked.ts).
 * From then on that workspace's events here are parked behind it rather than
 * sent past it, so they still land in issue order, until a try of the parked
 * events (at most one a second, before a send) finds the hub back. With an
 * executionCtx, what it parked is also tried again in the background a few
 * seconds later, so the last events of a run need not wait for the cron.
 */
export class EventBatcher {
  readonly #env: PublishEnv;
  readonly #context: PublishContext;
  #pending = new Map<
    string,
    { event: EventEnvelope; resolve: (seq: number) => void; reject: (error: unknown) => void }[]
  >();
  #flushScheduled = false;
  /** Workspaces with a publishMany out: their next events wait for it. */
  readonly #inFlight = new Set<string>();
  /** Workspaces with events parked that the hub has not taken, and when those were last tried (epoch ms). */
  readonly #parkedTriedAtMs = new Map<string, number>();
  /** Workspaces whose parked events are being tried again in the background. */
  readonly #redelivering = new Set<string>();

  readonly #retryDelaysMs: readonly number[];
  readonly #parkedTryEveryMs: number;

  constructor(
    env: PublishEnv,
    context: PublishContext = {},
    options: { retryDelaysMs?: readonly number[]; parkedTryEveryMs?: number } = {},
  ) {
    this.#env = env;
    this.#context = context;
    this.#retryDelaysMs = options.retryDelaysMs ?? WRITE_RETRY_DELAYS_MS;
    this.#parkedTryEveryMs = options.parkedTryEveryMs ?? PARKED_TRY_EVERY_MS;
  }

  publish<K extends EventType>(input: PublishInput<K>): Promise<PublishedEvent<K>> {
    const event = stampEvent(input, this.#context);
    const sent = new Promise<number>((resolve, reject) => {
      const queue = this.#pending.get(input.workspace_id) ?? [];
      queue.push({ event: event as EventEnvelope, resolve, reject });
      this.#pending.set(input.workspace_id, queue);
    });
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setTimeout(() => this.#flush(), 0);
    }
    return sent.then((seq) => ({ ...event, seq }) as PublishedEvent<K>);
  }

  #flush(): void {
    this.#flushScheduled = false;
    for (const workspaceId of this.#pending.keys()) {
      if (!this.#inFlight.has(workspaceId)) this.#send(workspaceId);
    }
  }

  /**
   * Lands what these workspaces have parked before this batcher's first
   * events for them, so a parked `task.created` still comes before its
   * `task.started`; a workspace whose parked events the hub refuses again has
   * its events here parked behind them.
   */
  async deliverParkedFirst(workspaceIds: readonly string[]): Promise<void> {
    const { DB, EVENT_HUB } = this.#env;
    if (!DB) return;
    const stillParked = await deliverParkedEventsOf({ DB, EVENT_HUB }, this.#logger(), workspaceIds);
    for (const workspaceId of stillParked) this.#parkedTriedAtMs.set(workspaceId, Date.now());
  }

  #send(workspaceId: string): void {
    const entries = this.#pending.get(workspaceId);
    if (!entries) return;
    this.#pending.delete(workspaceId);
    this.#inFlight.add(workspaceId);
    this.#deliver(
      workspaceId,
      entries.map((entry) => entry.event),
    )
      .then(
        (seqs) => {
          for (const [index, entry] of entries.entries()) entry.resolve(seqs[index]);
        },
        (error: unknown) => {
          for (const entry of entries) entry.reject(error);
        },
      )
      .finally(() => {
        this.#inFlight.delete(workspaceId);
        this.#send(workspaceId);
      });
  }

  /** The events' seqs, or the error to reject them with: EventParkedError once they are kept in D1. */
  async #deliver(workspaceId: string, events: EventEnvelope[]): Promise<number[]> {
    if (this.#parkedTriedAtMs.has(workspaceId)) {
      const parked = await this.#parkBehind(workspaceId, events);
      if (parked) throw parked;
    }
    try {
      // Events keep their ids across tries, and the hub writes an id once: a batch sent again lands once.
      const results = await withWriteRetries(
        () => this.#env.EVENT_HUB.getByName(workspaceId).publishMany(events),
        this.#retryDelaysMs,
      );
      return results.map((result) => result.seq);
    } catch (error) {
      const outcome = await parkRefusedEvents(this.#env, events, error, this.#context.logger);
      if (outcome instanceof EventParkedError) {
        this.#parkedTriedAtMs.set(workspaceId, Date.now());
        this.#redeliverSoon(workspaceId);
      }
      throw outcome;
    }
  }

  /**
   * While the workspace has events parked, these are parked behind them,
   * unless a try of those (at most one per #parkedTryEveryMs) finds the hub
   * taking them again. Answers the error to reject these with once parked, or
   * undefined when they should go to the hub.
   */
  async #parkBehind(workspaceId: string, events: EventEnvelope[]): Promise<EventParkedError | undefined> {
    const { DB, EVENT_HUB } = this.#env;
    if (!DB) return undefined;
    const nowMs = Date.now();
    if (nowMs - (this.#parkedTriedAtMs.get(workspaceId) ?? 0) >= this.#parkedTryEveryMs) {
      this.#parkedTriedAtMs.set(workspaceId, nowMs);
      const stillParked = await deliverParkedEventsOf({ DB, EVENT_HUB }, this.#logger(), [workspaceId]).catch(
        () => new Set([workspaceId]),
      );
      if (!stillParked.has(workspaceId)) {
        this.#parkedTriedAtMs.delete(workspaceId);
        return undefined;
      }
    }
    const reason = "the workspace has earlier events parked";
    const parked = await parkEvents(DB, events, reason).then(
      () => true,
      () => false, // D1 will not keep them either: the hub is their last chance.
    );
    if (!parked) return undefined;
    this.#redeliverSoon(workspaceId);
    return new EventParkedError(
      events.map((event) => event.event_id),
      new Error(reason),
    );
  }

  /** The workspace's parked events tried again over the next few seconds (one such run at a time), kept alive by the executionCtx. */
  #redeliverSoon(workspaceId: string): void {
    const { DB, EVENT_HUB } = this.#env;
    const executionCtx = this.#context.executionCtx;
    if (!DB || !executionCtx || this.#redelivering.has(workspaceId)) return;
    this.#redelivering.add(workspaceId);
    executionCtx.waitUntil(
      redeliverParkedSoon({ DB, EVENT_HUB }, this.#logger(), workspaceId).finally(() =>
        this.#redelivering.delete(workspaceId),
      ),
    );
  }

  #logger(): Logger {
    return this.#context.logger ?? new Logger({ level: "info", sampleRate: 1 });
  }
}
