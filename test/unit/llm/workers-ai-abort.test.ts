import { describe, expect, it } from "vitest";
import { WorkersAiAdapter } from "../../../src/llm/adapters/workers-ai.ts";
import type { AdapterCall, StreamEvent } from "../../../src/llm/provider.ts";

/**
 * The `AI` binding's `run(model, inputs, options)` takes no abort signal: its options go to Cloudflare in the
 * request's JSON, and its fetch is made without one (workerd's src/cloudflare/internal/ai-api.ts). The router bounds
 * an attempt (LLM_ATTEMPT_TIMEOUT_MS, a stream's wait for its next chunk, the call's deadline) and cancels a call
 * whose client left by aborting the attempt's signal; an adapter that waited on the binding alone waited as long as
 * Workers AI took, whatever the signal said.
 */

const MODEL = "@cf/meta/llama-3.1-8b-instruct";

function callWith(signal: AbortSignal): AdapterCall {
  return { model: MODEL, signal, messages: [{ role: "user", content: "Summarise the release notes" }] };
}

const timedOut = () => new DOMException("the provider did not answer in time", "TimeoutError");

/** A binding that never answers, as one stuck behind a busy model. */
const hungBinding = { run: () => new Promise<unknown>(() => {}) };

/** A binding whose stream sends one piece of its answer, then nothing more; cancelled is set when it is cancelled. */
function stallingStreamBinding() {
  const state = { cancelled: false };
  const binding = {
    run: async () =>
      new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode(`data: ${JSON.stringify({ response: "The release" })}\n\n`));
        },
        cancel() {
          state.cancelled = true;
        },
      }),
  };
  return { binding, state };
}

async function settleWithin<T>(promise: Promise<T>, ms: number): Promise<{ settled: boolean; error?: unknown }> {
  return Promise.race([
    promise.then(
      () => ({ settled: true }),
      (error: unknown) => ({ settled: true, error }),
    ),
    new Promise<{ settled: boolean }>((wake) => setTimeout(() => wake({ settled: false }), ms)),
  ]);
}

describe("Workers AI adapter, when its attempt's signal aborts", () => {
  it("gives up a whole answer the binding has not given: a timeout when the attempt timed out", async () => {
    const controller = new AbortController();
    const adapter = new WorkersAiAdapter(hungBinding);
    const answer = adapter.complete(callWith(controller.signal));
    setTimeout(() => controller.abort(timedOut()), 20);
    const outcome = await settleWithin(answer, 1_000);
    expect(outcome.settled).toBe(true);
    expect(outcome.error).toMatchObject({ failure: "timeout" });
  });

  it("gives up a whole answer when the caller cancels: cancelled, not a failure of the provider's", async () => {
    const controller = new AbortController();
    const adapter = new WorkersAiAdapter(hungBinding);
    const answer = adapter.complete(callWith(controller.signal));
    setTimeout(() => controller.abort(new Error("client went away")), 20);
    const outcome = await settleWithin(answer, 1_000);
    expect(outcome.settled).toBe(true);
    expect(outcome.error).toMatchObject({ failure: "cancelled" });
  });

  it("stops reading a stream that stalled mid-answer, and cancels the binding's stream", async () => {
    const controller = new AbortController();
    const { binding, state } = stallingStreamBinding();
    const adapter = new WorkersAiAdapter(binding);
    const seen: StreamEvent[] = [];
    const reading = (async () => {
      for await (const event of adapter.stream(callWith(controller.signal))) {
        seen.push(event);
        setTimeout(() => controller.abort(timedOut()), 20);
      }
    })();
    const outcome = await settleWithin(reading, 1_000);
    expect(seen).toEqual([{ type: "delta", content: "The release" }]);
    expect(outcome.settled).toBe(true);
    expect(outcome.error).toMatchObject({ failure: "timeout" });
    expect(state.cancelled).toBe(true);
  });

  it("does not start on an attempt already aborted", async () => {
    const calls: string[] = [];
    const adapter = new WorkersAiAdapter({
      run: async (model: string) => {
        calls.push(model);
        return { response: "late" };
      },
    });
    const controller = new AbortController();
    controller.abort(timedOut());
    await expect(adapter.complete(callWith(controller.signal))).rejects.toMatchObject({ failure: "timeout" });
    expect(calls).toEqual([]);
  });
});
