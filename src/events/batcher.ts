import { WRITE_RETRY_DELAYS_MS, withWriteRetries } from "../lib/retry-write.ts";
import type { EventEnvelope, EventType, PublishedEvent } from "./catalog.ts";
import { parkRefusedEvents } from "./parked.ts";
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
 * What the hub will not take is parked like publish()'s (src/events/parked.ts).
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

  #send(workspaceId: string): void {
    const entries = this.#pending.get(workspaceId);
    if (!entries) return;
    this.#pending.delete(workspaceId);
    this.#inFlight.add(workspaceId);
    // Events keep their ids across tries, and the hub writes an id once: a batch sent again lands once.
    withWriteRetries(
      () => this.#env.EVENT_HUB.getByName(workspaceId).publishMany(entries.map((entry) => entry.event)),
      this.#retryDelaysMs,
    )
      .then(
        (results) => {
          for (const [index, entry] of entries.entries()) entry.resolve(results[index].seq);
        },
        async (error: unknown) => {
          const outcome = await parkRefusedEvents(
            this.#env,
            entries.map((entry) => entry.event),
            error,
            this.#context.logger,
          );
          for (const entry of entries) entry.reject(outcome);
        },
      )
      .finally(() => {
        this.#inFlight.delete(workspaceId);
        this.#send(workspaceId);
      });
  }
}
