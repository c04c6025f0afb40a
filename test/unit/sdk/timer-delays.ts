import { vi } from "vitest";

/** The delays code under test asks of setTimeout (a test's own 1 ms waits left out), in order. */
export function recordDelays(): number[] {
  const delays: number[] = [];
  const original = globalThis.setTimeout;
  vi.spyOn(globalThis, "setTimeout").mockImplementation(((handler: () => void, ms?: number) => {
    if (ms !== undefined && ms > 1) delays.push(ms);
    return original(handler, ms);
  }) as typeof setTimeout);
  return delays;
}
