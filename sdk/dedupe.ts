/** The last `capacity` event ids seen: enough to drop the duplicates a reconnect can bring, in bounded memory. */
export class RecentIds {
  private readonly capacity: number;
  private readonly ids = new Set<string>();

  constructor(capacity = 10_000) {
    this.capacity = capacity;
  }

  /** True the first time an id is seen. */
  add(id: string): boolean {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    // A Set iterates in insertion order: the first entry is the oldest.
    if (this.ids.size > this.capacity) this.ids.delete(this.ids.values().next().value as string);
    return true;
  }

  get size(): number {
    return this.ids.size;
  }
}
