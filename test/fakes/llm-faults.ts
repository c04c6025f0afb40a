import type { ServerResponse } from "node:http";

/**
 * Fault injection shared by the fake LLM upstreams: each request takes the
 * next step of the plan (then `fallback`), so a test scripts exactly what the
 * provider does: `[{ status: 429, headers: { "Retry-After": "1" } }, { ok: true }]`.
 */

export type FaultStep =
  | {
      ok: true;
      content?: string;
      usage?: { prompt: number; completion: number };
      chunks?: number;
      latencyMs?: number;
      /** Streamed: sends this many content chunks, then nothing more (the connection stays open, as a stalled provider's). */
      stallAfterChunks?: number;
      /** The answer is this tool call (finish reason `tool_calls`), not text. */
      toolCall?: { id: string; name: string; arguments: string };
      /** Streamed: sends this many content chunks, then destroys the socket (a connection reset mid-answer). */
      resetAfterChunks?: number;
      /** Streamed: waits this long before each frame (a slow stream). */
      frameDelayMs?: number;
      /**
       * Asked for a stream, refuses it with a 400 "streaming is not supported" (a local server build or gateway that
       * does not stream); asked whole, answers.
       */
      refuseStream?: true;
    }
  | { status: number; headers?: Record<string, string>; body?: unknown }
  /** Never answers; the connection stays open until the client gives up. */
  | { hang: true }
  /** Accepts the request, then destroys the socket without a response. */
  | { reset: true };

export class FaultPlan {
  #steps: FaultStep[] = [];
  #fallback: FaultStep;

  constructor(fallback: FaultStep = { ok: true }) {
    this.#fallback = fallback;
  }

  /** Replaces the script; requests beyond it get `fallback`. */
  plan(steps: FaultStep[], fallback?: FaultStep): void {
    this.#steps = [...steps];
    if (fallback) this.#fallback = fallback;
  }

  next(): FaultStep {
    return this.#steps.shift() ?? this.#fallback;
  }
}

/** Applies a failure step; returns false for `ok` steps, which the provider's fake renders itself. */
export function applyFault(step: FaultStep, response: ServerResponse, errorBody: (status: number) => unknown): boolean {
  if ("hang" in step) return true;
  if ("reset" in step) {
    response.socket?.destroy();
    return true;
  }
  if ("status" in step) {
    response.writeHead(step.status, { "Content-Type": "application/json", ...step.headers });
    response.end(JSON.stringify(step.body ?? errorBody(step.status)));
    return true;
  }
  return false;
}

/**
 * Writes SSE frames in batches, waiting for the socket to drain, so a 10,000-chunk stream is never held whole;
 * with `frameDelayMs`, one frame at a time after that wait.
 */
export async function writeFrames(
  response: ServerResponse,
  frames: Iterable<string>,
  options: { frameDelayMs?: number } = {},
): Promise<void> {
  if (options.frameDelayMs) {
    for (const frame of frames) {
      await sleep(options.frameDelayMs);
      if (response.destroyed) return;
      response.write(frame);
    }
    response.end();
    return;
  }
  let batch = "";
  for (const frame of frames) {
    batch += frame;
    if (batch.length >= 16_384) {
      if (!response.write(batch)) await new Promise((drained) => response.once("drain", drained));
      batch = "";
    }
  }
  response.end(batch);
}

/**
 * The pieces a fake streams its answer in: `chunks` repetitions of `word`, or a step's own `content` cut into at
 * most `chunks` slices, so a call told whole from a stream (a long whole answer is asked as one) reads the same
 * answer as one asked whole.
 */
export function answerPieces(content: string | undefined, chunks: number, word: string): string[] {
  if (content === undefined) return Array.from({ length: chunks }, (_, index) => (index === 0 ? word : ` ${word}`));
  const size = Math.max(1, Math.ceil(content.length / chunks));
  const pieces: string[] = [];
  for (let offset = 0; offset < content.length; offset += size) pieces.push(content.slice(offset, offset + size));
  return pieces;
}

/** Writes the first `count` frames, then destroys the socket without ending the response. */
export function writeThenReset(response: ServerResponse, frames: Iterable<string>, count: number): void {
  response.write([...frames].slice(0, count).join(""), () => response.socket?.destroy());
}

export const sleep = (ms: number) => new Promise((wake) => setTimeout(wake, ms));
