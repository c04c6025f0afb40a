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

  it("sends a full batch at once and starts a new one", async () => {
    const writes: number[][] = [];
    const coalescer = new Coalescer<number>(async (items) => void writes.push([...items]), {
      delayMs: 60_000,
      maxItems: 2,
    });
    await Promise.all([coalescer.add(1), coalescer.add(2)]);
    expect(writes).toEqual([[1, 2]]);
  });

  it("flushAll sends every waiting batch without waiting out its delay", async () => {
    const writes: string[][] = [];
    const first = new Coalescer<string>(async (items) => void writes.push([...items]), {
      delayMs: 60_000,
      maxItems: 100,
    });
    const second = new Coalescer<string>(async (items) => void writes.push([...items]), {
      delayMs: 60_000,
      maxItems: 100,
    });
    const landed = Promise.all([first.add("a"), first.add("b"), second.add("c")]);
    Coalescer.flushAll(); // without it, `landed` would wait the 60 s delay and the test time out
    await landed;
    expect(writes).toEqual([["a", "b"], ["c"]]);
    Coalescer.flushAll(); // nothing waiting: nothing written
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(writes).toHaveLength(2);
  });
});
