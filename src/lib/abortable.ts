/** Ending waits on work that takes no AbortSignal of its own when a signal aborts. */

/**
 * A promise that rejects with the signal's reason once it aborts (at once if it has), for racing work that takes no
 * signal of its own: the Workers AI binding's `run()` (its options are sent to Cloudflare as JSON, and its fetch is
 * made without one), which, waited on alone, held a call for as long as Workers AI took.
 */
export function abortion(signal: AbortSignal): { promise: Promise<never>; dispose: () => void } {
  let onAbort = () => {};
  const promise = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  promise.catch(() => {});
  return { promise, dispose: () => signal.removeEventListener("abort", onAbort) };
}

/**
 * A stream ended with the signal's reason when it aborts (one that stalls past the wait for its next chunk, a client
 * gone), the source stream cancelled: for a stream that takes no signal of its own (the Workers AI binding's).
 */
export function abortableBody(body: ReadableStream<Uint8Array>, signal: AbortSignal): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  const aborted = abortion(signal);
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await Promise.race([reader.read(), aborted.promise]);
        if (done) {
          aborted.dispose();
          controller.close();
        } else controller.enqueue(value);
      } catch (error) {
        aborted.dispose();
        reader.cancel(error).catch(() => {});
        controller.error(error);
      }
    },
    cancel(reason) {
      aborted.dispose();
      return reader.cancel(reason);
    },
  });
}
