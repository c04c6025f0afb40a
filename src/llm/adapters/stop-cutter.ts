/**
 * Stop sequences applied here, to the answer's text, for a provider that is not sent them: Anthropic those of
 * whitespace alone, which it refuses (src/llm/adapters/anthropic-stops.ts); Workers AI's models, which take
 * none; OpenAI's reasoning models, which refuse them (src/llm/adapters/openai.ts); the simulated provider. The
 * text ends at the first sequence, as at a provider that took it, and what came after is dropped (text and tool
 * calls alike); a stream is read no further, but for an OpenAI reasoning model's, read to its end for the usage
 * it bills (its hidden reasoning would otherwise go uncounted).
 */

/** The answer's text, passed on up to the first of the stop sequences it was given. */
export class StopCutter {
  readonly #sequences: string[];
  /** The text's end, held while it may be the start of a sequence. */
  #held = "";
  /** A sequence came: nothing after it is the answer. */
  stopped = false;

  constructor(sequences: readonly string[] | undefined) {
    this.#sequences = (sequences ?? []).filter((sequence) => sequence !== "");
  }

  /** Text as it comes; returns what may be passed on now. */
  push(text: string): string {
    if (this.stopped) return "";
    if (this.#sequences.length === 0) return text;
    const buffer = this.#held + text;
    const cuts = this.#sequences.map((sequence) => buffer.indexOf(sequence)).filter((at) => at !== -1);
    if (cuts.length > 0) {
      this.stopped = true;
      this.#held = "";
      return buffer.slice(0, Math.min(...cuts));
    }
    let heldLength = 0;
    for (const sequence of this.#sequences) {
      for (let length = Math.min(sequence.length - 1, buffer.length); length > heldLength; length--) {
        if (buffer.endsWith(sequence.slice(0, length))) {
          heldLength = length;
          break;
        }
      }
    }
    this.#held = buffer.slice(buffer.length - heldLength);
    return buffer.slice(0, buffer.length - heldLength);
  }

  /** The text ended (or a tool call follows it): what was held, as no sequence came. */
  flush(): string {
    const held = this.#held;
    this.#held = "";
    return held;
  }
}
