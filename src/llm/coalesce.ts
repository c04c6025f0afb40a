import { AsyncLocalStorage } from "node:async_hooks";
import { WRITE_RETRY_DELAYS_MS, withWriteRetries } from "../lib/retry-write.ts";

/**
 * Per-isolate write coalescing: items added within `delayMs` of the first go
 * out in one write (one D1 batch, one Durable Object call) instead of one
 * each. Under load this turns hundreds of small writes a second into a few
 * dozen.
 *
 * Only the caller that opened a batch gets the write's promise (to hand to
 * its waitUntil, which keeps the isolate up until the write lands, or to
 * await). The others get a settled promise: in Workers a promise belongs to
 * the request that made it, and a request left waiting on another request's
 * I/O is cancelled as hung ("your Worker's code had hung") once it has nothing
 * else to do, which under load meant one runtime error per call. Their items
 * ride the opener's write, which only the opener starts (its timer, even for a
 * batch full before then: see #sealed); a failure is reported once, to the opener.
 *
 * Nothing waits on these writes, so a passing failure (a Durable Object
 * restarting or overloaded, a D1 hiccup) must not lose them: a failed write
 * is tried again (src/lib/retry-write.ts), then its error goes to the
 * opener. A write may have landed although its answer was lost, so each
 * batch carries a key that stays the same across its tries (`batchKey`):
 * the write must use it (or keys of its own) to land once.
 */

export type BatchWrite<T> = (items: T[], batchKey: string) => Promise<void>;

export interface CoalescerOptions {
  delayMs: number;
  maxItems: number;
  /** Tests: no waiting between tries. */
  retryDelaysMs?: readonly number[];
}

/** The unit of work (see Coalescer.withinUnit) a batch was opened in, if any. */
const unitOfWork = new AsyncLocalStorage<object>();

interface Batch<T> {
  items: T[];
  done: Promise<void>;
  /** Lets the write go: called in the request that opened the batch (its timer), or in its unit of work. */
  start: () => void;
  timer: ReturnType<typeof setTimeout>;
  unit: object | undefined;
  started: boolean;
}

export class Coalescer<T> {
  /** Coalescers holding a batch that waits for its timer. */
  static readonly #waiting = new Set<Coalescer<unknown>>();

  /** Runs `work` as a unit whose batches `flushAll` may start early (a queue batch's invocation). */
  static withinUnit<R>(work: () => Promise<R>): Promise<R> {
    return unitOfWork.run({}, work);
  }

  /**
   * Starts now every waiting batch the calling unit of work opened. For the end
   * of a unit whose runtime waits for its writes anyway (a queue batch):
   * waiting out the delay there only keeps the next unit from starting. Only
   * the unit's own: a batch another request opened belongs to that request
   * (see above), and starting it from here is I/O on its behalf, which the
   * runtime refuses ("Cannot perform I/O on behalf of a different request"),
   * leaving that batch never written. Outside a unit it starts nothing.
   */
  static flushAll(): void {
    const unit = unitOfWork.getStore();
    if (!unit) return;
    for (const coalescer of [...Coalescer.#waiting]) {
      for (const batch of coalescer.#pending()) if (batch.unit === unit) coalescer.#start(batch);
    }
  }

  readonly #write: BatchWrite<T>;
  readonly #delayMs: number;
  readonly #maxItems: number;
  readonly #retryDelaysMs: readonly number[];
  /** The batch items are added to. */
  #open: Batch<T> | null = null;
  /**
   * Full batches waiting for their timers. A batch filled by a request other than its opener is not started by that
   * request, for the reason flushAll gives: started there, its write ran on the filling request's behalf while the
   * opener waited on it, which the runtime refused ("Promise will never complete", one error per hundred calls under
   * steady load), and a write left to a request that does not wait for it may be cut off with that request.
   */
  readonly #sealed = new Set<Batch<T>>();

  constructor(write: BatchWrite<T>, options: CoalescerOptions) {
    this.#write = write;
    this.#delayMs = options.delayMs;
    this.#maxItems = options.maxItems;
    this.#retryDelaysMs = options.retryDelaysMs ?? WRITE_RETRY_DELAYS_MS;
  }

  add(item: T): Promise<void> {
    let batch = this.#open;
    const opens = !batch;
    if (!batch) {
      let start!: () => void;
      const gate = new Promise<void>((resolve) => {
        start = resolve;
      });
      const items: T[] = [];
      const done = gate.then(() => this.#writeWithRetries(items));
      // Every caller awaits or hands on `done`; an unobserved rejection must not crash the isolate.
      done.catch(() => {});
      const opened: Batch<T> = {
        items,
        done,
        start,
        timer: setTimeout(() => this.#start(opened), this.#delayMs),
        unit: unitOfWork.getStore(),
        started: false,
      };
      batch = opened;
      this.#open = batch;
      Coalescer.#waiting.add(this as Coalescer<unknown>);
    }
    batch.items.push(item);
    const done = batch.done;
    if (batch.items.length >= this.#maxItems) {
      // Within the unit of work that opened it, the batch goes at once; else it is sealed, and the next item opens
      // a batch of its own.
      if (batch.unit !== undefined && batch.unit === unitOfWork.getStore()) this.#start(batch);
      else {
        this.#open = null;
        this.#sealed.add(batch);
      }
    }
    return opens ? done : Promise.resolve();
  }

  #pending(): Batch<T>[] {
    return this.#open ? [this.#open, ...this.#sealed] : [...this.#sealed];
  }

  #writeWithRetries(items: T[]): Promise<void> {
    const batchKey = `batch:${crypto.randomUUID()}`;
    return withWriteRetries(() => this.#write(items, batchKey), this.#retryDelaysMs);
  }

  #start(batch: Batch<T>): void {
    if (batch.started) return;
    batch.started = true;
    clearTimeout(batch.timer);
    if (this.#open === batch) this.#open = null;
    this.#sealed.delete(batch);
    if (!this.#open && this.#sealed.size === 0) Coalescer.#waiting.delete(this as Coalescer<unknown>);
    batch.start();
  }
}
