/**
 * Per-isolate write coalescing: items added within `delayMs` of the first go
 * out in one write (one D1 batch, one Durable Object call) instead of one
 * each. Every caller gets the promise of the write that carries its item and
 * hands it to its own waitUntil, so the isolate stays up until it lands.
 * Under load this turns hundreds of small writes a second into a few dozen.
 */
export class Coalescer<T> {
  /** Coalescers holding a batch that waits for its timer. */
  static readonly #waiting = new Set<Coalescer<unknown>>();

  /**
   * Sends every waiting batch now. For the end of a unit of work whose runtime
   * waits for its writes anyway (a queue batch): waiting out the delay there
   * only keeps the next unit from starting.
   */
  static flushAll(): Promise<void> {
    const done = [...Coalescer.#waiting].map((coalescer) => {
      const batch = coalescer.#batch;
      if (!batch) return Promise.resolve();
      coalescer.#flush(batch.items);
      return batch.done.catch(() => {});
    });
    return Promise.all(done).then(() => {});
  }

  readonly #write: (items: T[]) => Promise<void>;
  readonly #delayMs: number;
  readonly #maxItems: number;
  #batch: { items: T[]; done: Promise<void>; start: () => void; timer: ReturnType<typeof setTimeout> } | null = null;

  constructor(write: (items: T[]) => Promise<void>, options: { delayMs: number; maxItems: number }) {
    this.#write = write;
    this.#delayMs = options.delayMs;
    this.#maxItems = options.maxItems;
  }

  add(item: T): Promise<void> {
    let batch = this.#batch;
    if (!batch) {
      let start!: () => void;
      const gate = new Promise<void>((resolve) => {
        start = resolve;
      });
      const items: T[] = [];
      const done = gate.then(() => this.#write(items));
      // Every caller awaits or hands on `done`; an unobserved rejection must not crash the isolate.
      done.catch(() => {});
      batch = { items, done, start, timer: setTimeout(() => this.#flush(items), this.#delayMs) };
      this.#batch = batch;
      Coalescer.#waiting.add(this as Coalescer<unknown>);
    }
    batch.items.push(item);
    const done = batch.done;
    if (batch.items.length >= this.#maxItems) this.#flush(batch.items);
    return done;
  }

  #flush(items: T[]): void {
    const batch = this.#batch;
    if (!batch || batch.items !== items) return;
    clearTimeout(batch.timer);
    this.#batch = null;
    Coalescer.#waiting.delete(this as Coalescer<unknown>);
    batch.start();
  }
}
