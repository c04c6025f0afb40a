import type { Principal } from "../auth/principal.ts";
import { EventBatcher } from "../events/batcher.ts";
import { type EventType, logUndelivered, type PublishEnv, type PublishInput, publish } from "../events/index.ts";
import type { Logger } from "../lib/logger.ts";

/**
 * Task events. A task's events get their seq in the order they were emitted
 * (so its `tool.call` always precedes its `tool.result`): through a batcher,
 * which keeps issue order per workspace, or else one after another. Different
 * tasks publish concurrently, and the agent never waits on the hub between
 * steps. A failed publish is logged (and the event parked, src/events/parked.ts), never fails the task.
 */
export class EventChain {
  readonly #config: PublishEnv;
  readonly #logger: Logger;
  readonly #batcher: EventBatcher | undefined;
  #tail: Promise<void> = Promise.resolve();
  #published = 0;

  /** With a batcher (one per queue batch), many tasks' events share hub round trips. */
  constructor(config: PublishEnv, logger: Logger, batcher?: EventBatcher) {
    this.#config = config;
    this.#logger = logger;
    this.#batcher = batcher;
  }

  emit<K extends EventType>(input: PublishInput<K>): void {
    if (this.#batcher) {
      // The batcher keeps a workspace's events in issue order, so there is no need to wait for the previous one.
      let sent: Promise<unknown>;
      try {
        sent = this.#batcher.publish(input);
      } catch (error) {
        this.#logger.warn("task event not published", { error, event_type: input.event_type });
        return;
      }
      const settled = sent.then(
        () => {
          this.#published++;
        },
        (error: unknown) => logUndelivered(this.#logger, error, { event_type: input.event_type }),
      );
      this.#tail = Promise.all([this.#tail, settled]).then(() => {});
      return;
    }
    this.#tail = this.#tail.then(async () => {
      try {
        if (this.#batcher) await this.#batcher.publish(input);
        else await publish(this.#config, input, { logger: this.#logger });
        this.#published++;
      } catch (error) {
        logUndelivered(this.#logger, error, { event_type: input.event_type });
      }
    });
  }

  /** Resolves once everything emitted so far was published (or given up). */
  async flush(): Promise<number> {
    await this.#tail;
    return this.#published;
  }
}

/** A request's own task event gets about half a second of the hub before it is parked: the caller is waiting. */
export const REQUEST_EVENT_RETRY_DELAYS_MS: readonly number[] = [250];

/**
 * Publishes the task event a request answers after (task.created, a cancel's
 * task.error), parking it if the hub will not take it within
 * REQUEST_EVENT_RETRY_DELAYS_MS rather than holding the caller for the ~5 s
 * background writes get; with `waitUntil`, a parked event is tried again
 * over the next few seconds. `afterParked`: first land what the workspace has
 * parked, which may hold this task's earlier events, and park behind it if
 * the hub still refuses that.
 */
export async function publishForRequest<K extends EventType>(
  config: PublishEnv,
  logger: Logger,
  input: PublishInput<K>,
  options: { afterParked?: boolean; waitUntil?: (work: Promise<unknown>) => void } = {},
): Promise<void> {
  const { waitUntil } = options;
  const batcher = new EventBatcher(
    config,
    { logger, executionCtx: waitUntil ? { waitUntil } : undefined },
    { retryDelaysMs: REQUEST_EVENT_RETRY_DELAYS_MS },
  );
  if (options.afterParked) {
    await batcher
      .deliverParkedFirst([input.workspace_id])
      .catch((error: unknown) => logger.warn("parked events not delivered first", { error }));
  }
  try {
    await batcher.publish(input);
  } catch (error) {
    logUndelivered(logger, error, { event_type: input.event_type });
  }
}

/**
 * The seed's `task.created` names a user with an email. API keys and tokens
 * whose subject is not an address get a stable, non-deliverable one under the
 * reserved `.invalid` domain (RFC 2606), so the contract holds without
 * inventing a mailbox.
 */
export function eventUser(principal: Principal | undefined): { id: string; email: string } {
  if (!principal || principal.kind === "operator") return { id: "operator", email: "operator@mgx-edge.invalid" };
  if (principal.kind === "api_key")
    return { id: principal.keyId, email: `${principal.keyId}@api-keys.mgx-edge.invalid` };
  const sub = principal.userId;
  return {
    id: sub,
    email: /^[^@\s]+@[^@\s]+\.[a-z]{2,}$/i.test(sub) ? sub : `${safeLocal(sub)}@users.mgx-edge.invalid`,
  };
}

function safeLocal(value: string): string {
  return value.replaceAll(/[^a-zA-Z0-9._+-]/g, "_").slice(0, 64) || "user";
}

/** The seed's `task.started` knows four providers; others (the offline `simulated` one) run locally. */
export function eventProvider(provider: string): "openai" | "anthropic" | "azure" | "local" {
  return provider === "openai" || provider === "anthropic" || provider === "azure" ? provider : "local";
}
