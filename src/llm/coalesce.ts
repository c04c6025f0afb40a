/**
 * Per-isolate write coalescing: items added within `delayMs` of the first go
 * out in one write (one D1 batch, one Durable Object call) instead of one
 * each. Every caller gets the promise of the write that carries its item and
 * hands it to its own waitUntil, so the isolate stays up until it lands.
 * Under load this turns hundreds of small writes a second into a few dozen.
 */
export class Coalescer<T> {
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
    batch.start();
  }
}
