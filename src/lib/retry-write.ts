/**
 * Retries for writes that must survive a passing failure (a Durable Object
 * restarting or overloaded, a D1 hiccup): counts, charges, usage rows and
 * events that nothing else would send again. A write may have landed although
 * its answer was lost, so a retried write must be idempotent: the same key on
 * every try (a batch key, a charge key, an event id).
 */

/** Waits before each retry (with jitter: half to all of each); about 5 s in all, well inside waitUntil's time. */
export const WRITE_RETRY_DELAYS_MS: readonly number[] = [250, 1_000, 4_000];

/** `write`, tried again after each of `delaysMs`; the last failure is thrown. */
export async function withWriteRetries<R>(
  write: () => Promise<R>,
  delaysMs: readonly number[] = WRITE_RETRY_DELAYS_MS,
): Promise<R> {
  for (let retry = 0; ; retry++) {
    try {
      return await write();
    } catch (error) {
      const delayMs = delaysMs[retry];
      if (delayMs === undefined) throw error;
      await new Promise((wake) => setTimeout(wake, delayMs * (0.5 + Math.random() / 2)));
    }
  }
}
