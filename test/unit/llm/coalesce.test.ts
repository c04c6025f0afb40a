import { describe, expect, it } from "vitest";
import { Coalescer } from "../../../src/llm/coalesce.ts";

describe("Coalescer", () => {
  it("writes items added within the delay together, once", async () => {
    const writes: number[][] = [];
    const coalescer = new Coalescer<number>(async (items) => void writes.push([...items]), {
      delayMs: 5,
      maxItems: 10,
    });
    await Promise.all([coalescer.add(1), coalescer.add(2), coalescer.add(3)]);
    expect(writes).toEqual([[1, 2, 3]]);
  });

  it("sends a full batch at once within the unit of work that opened it, and starts a new one", async () => {
    const writes: number[][] = [];
    const coalescer = new Coalescer<number>(async (items) => void writes.push([...items]), {
      delayMs: 60_000,
      maxItems: 2,
    });
    await Coalescer.withinUnit(async () => {
      await Promise.all([coalescer.add(1), coalescer.add(2)]);
      expect(writes).toEqual([[1, 2]]);
    });
  });

  it("leaves a batch filled outside its opener's unit to its opener's timer, and opens the next", async () => {
    // Filled by another request, a batch started there would be written on that request's behalf while its
    // opener waits on it, which the runtime refuses.
    const writes: number[][] = [];
    const coalescer = new Coalescer<number>(async (items) => void writes.push([...items]), {
      delayMs: 30,
      maxItems: 2,
    });
    const first = coalescer.add(1);
    await coalescer.add(2); // fills it: not started
    expect(writes).toEqual([]);
    const next = coalescer.add(3); // opens the next batch
    await first;
    expect(writes).toEqual([[1, 2]]);
    await next;
    expect(writes).toEqual([[1, 2], [3]]);
  });

  it("flushAll sends every batch its unit of work opened without waiting out its delay", async () => {
    const writes: string[][] = [];
    const first = new Coalescer<string>(async (items) => void writes.push([...items]), {
      delayMs: 60_000,
      maxItems: 100,
    });
    const second = new Coalescer<string>(async (items) => void writes.push([...items]), {
      delayMs: 60_000,
      maxItems: 100,
    });
    await Coalescer.withinUnit(async () => {
      const landed = Promise.all([first.add("a"), first.add("b"), second.add("c")]);
      Coalescer.flushAll(); // without it, `landed` would wait the 60 s delay and the test time out
      await landed;
      expect(writes).toEqual([["a", "b"], ["c"]]);
      Coalescer.flushAll(); // nothing waiting: nothing written
      await new Promise((resolve) => setTimeout(resolve, 0));
      expect(writes).toHaveLength(2);
    });
  });

  it("flushAll leaves a batch another request opened to its own timer", async () => {
    // Starting it from here would be I/O on that request's behalf, which the runtime refuses; the batch
    // would then never be written.
    const writes: string[][] = [];
    const shared = new Coalescer<string>(async (items) => void writes.push([...items]), {
      delayMs: 50,
      maxItems: 100,
    });
    const openedElsewhere = shared.add("from a request");
    await Coalescer.withinUnit(async () => {
      Coalescer.flushAll();
      await new Promise((resolve) => setTimeout(resolve, 0));
      expect(writes).toEqual([]);
    });
    Coalescer.flushAll(); // outside any unit: starts nothing
    expect(writes).toEqual([]);
    await openedElsewhere; // its own timer sends it
    expect(writes).toEqual([["from a request"]]);
  });

  it("tries a failed write again under the same batch key, and gives the opener the last error when every try fails", async () => {
    const tries: { items: number[]; batchKey: string }[] = [];
    let failuresLeft = 2;
    const flaky = new Coalescer<number>(
      async (items, batchKey) => {
        tries.push({ items: [...items], batchKey });
        if (failuresLeft-- > 0) throw new Error("limiter restarting");
      },
      { delayMs: 1, maxItems: 10, retryDelaysMs: [1, 1, 1] },
    );
    await Promise.all([flaky.add(1), flaky.add(2)]);
    expect(tries).toHaveLength(3);
    expect(new Set(tries.map((attempt) => attempt.batchKey)).size).toBe(1);
    expect(tries.every((attempt) => attempt.items.join() === "1,2")).toBe(true);
    expect(tries[0].batchKey).toMatch(/^batch:[0-9a-f-]{36}$/);

    let calls = 0;
    const broken = new Coalescer<number>(
      async () => {
        calls++;
        throw new Error(`down (${calls})`);
      },
      { delayMs: 1, maxItems: 10, retryDelaysMs: [1, 1] },
    );
    await expect(broken.add(1)).rejects.toThrow("down (3)");
    // The next batch gets a key of its own.
    const keys: string[] = [];
    const fresh = new Coalescer<number>(async (_items, batchKey) => void keys.push(batchKey), {
      delayMs: 1,
      maxItems: 1,
    });
    await fresh.add(1);
    await fresh.add(2);
    expect(keys[0]).not.toBe(keys[1]);
  });
});
