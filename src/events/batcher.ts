import { Logger } from "../lib/logger.ts";
import { WRITE_RETRY_DELAYS_MS, withWriteRetries } from "../lib/retry-write.ts";
import type { EventEnvelope, EventType, PublishedEvent } from "./catalog.ts";
import { deliverParkedEventsOf, EventParkedError, parkEvents, parkRefusedEvents } from "./parked.ts";
import { type PublishContext, type PublishEnv, type PublishInput, stampEvent } from "./publish.ts";

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
 * What the hub will not take is parked like publish()'s (src/events/parked.ts);
 * from then on that workspace's events here are parked behind it rather than
 * sent past it, so they still land in issue order.
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
  /** Workspaces with events parked that the hub has not taken: their next events are parked behind them. */
  readonly #parkedBehind = new Set<string>();

  readonly #retryDelaysMs: readonly number[];

  constructor(env: PublishEnv, context: PublishContext = {}, options: { retryDelaysMs?: readonly number[] } = {}) {
    this.#env = env;
    this.#context = context;
    this.#retryDelaysMs = options.retryDelaysMs ?? WRITE_RETRY_DELAYS_MS;
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
    const logger = this.#context.logger ?? new Logger({ level: "info", sampleRate: 1 });
    const stillParked = await deliverParkedEventsOf({ DB, EVENT_HUB }, logger, workspaceIds);
    for (const workspaceId of stillParked) this.#parkedBehind.add(workspaceId);
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
    if (this.#parkedBehind.has(workspaceId) && this.#env.DB) {
      const reason = "the workspace has earlier events parked";
      const parked = await parkEvents(this.#env.DB, events, reason).then(
        () => true,
        () => false, // D1 will not keep them either: the hub is their last chance.
      );
      if (parked)
        throw new EventParkedError(
          events.map((event) => event.event_id),
          new Error(reason),
        );
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
      if (outcome instanceof EventParkedError) this.#parkedBehind.add(workspaceId);
      throw outcome;
    }
  }
}
