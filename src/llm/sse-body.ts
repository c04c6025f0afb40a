import type { StreamEvent } from "./provider.ts";
import type { ChatResult } from "./types.ts";

/**
 * The body of a routed stream as Server-Sent Events, whatever the wire format (chat completion chunks, the
 * Responses API's semantic events): the format says which frames each delta, the end and a failure become;
 * this reads the router's deltas as the client asks for frames, and stops the call when the client leaves.
 */
export interface SseFrames {
  /** Frames sent before the first delta (the Responses API's `response.created`); none by default. */
  start?(): string[];
  delta(event: Extract<StreamEvent, { type: "delta" }>): string[];
  /**
   * After the last delta, with the whole result, charged. May wait (the Responses API stores the response before
   * its last event, so a client's next request can refer to it at once).
   */
  end(final: ChatResult): string[] | Promise<string[]>;
  /** The call failed after the response began: it can only be told in-stream. */
  failed(error: unknown): string[];
}

const encoder = new TextEncoder();

export function routedSseBody(
  deltas: AsyncIterable<StreamEvent>,
  result: Promise<ChatResult>,
  frames: SseFrames,
  onError: (error: unknown) => void,
  onCancel?: () => void,
): ReadableStream<Uint8Array> {
  const iterator = deltas[Symbol.asyncIterator]();
  let started = false;
  let cancelled = false;
  const send = (controller: ReadableStreamDefaultController<Uint8Array>, texts: string[]) => {
    for (const text of texts) controller.enqueue(encoder.encode(text));
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        if (!started) {
          started = true;
          send(controller, frames.start?.() ?? []);
        }
        const next = await iterator.next();
        if (!next.done) {
          if (next.value.type === "delta") send(controller, frames.delta(next.value));
          return;
        }
        send(controller, await frames.end(await result));
        controller.close();
      } catch (error) {
        // The client went away and the call was stopped for it (cancel below): nothing failed, and nobody reads.
        if (cancelled) return;
        onError(error);
        send(controller, frames.failed(error));
        controller.close();
      }
    },
    async cancel() {
      // The client went away: stop reading the provider (the router releases the reservation). `return()` of
      // the router's generator waits for a `next()` in flight, that is for the provider's next event, which a
      // stalled provider (or a model thinking before its next token) may not send until the attempt's
      // timeout: `onCancel` aborts the call first, so its fetch ends now and the `next()` with it.
      cancelled = true;
      onCancel?.();
      await iterator.return?.();
    },
  });
}
