/**
 * Stop sequences Anthropic will not take. OpenAI's callers stop at a line's or a paragraph's end with
 * `stop: "\n"` or `"\n\n"`; Anthropic refuses a stop sequence of whitespace alone with a 400 ("each stop
 * sequence must contain non-whitespace"), so a chain of Claude failed such a request. Those sequences
 * are not sent: the adapter cuts the answer's text at the first of them instead, as the model would have
 * stopped there, and drops what came after (text and tool calls alike). A whole answer was written on
 * past the cut, and is charged as Anthropic bills it; a stream is read no further than the cut.
 */

/** The sequences Anthropic takes, to send as `stop_sequences`. */
export function sentStops(stop: string[] | undefined): string[] {
  return (stop ?? []).filter((sequence) => sequence.trim() !== "");
}

/** The answer's text, passed on up to the first stop sequence Anthropic was not sent. */
export class StopCutter {
  readonly #sequences: string[];
  /** The text's end, held while it may be the start of a sequence. */
  #held = "";
  /** A sequence came: nothing after it is the answer. */
  stopped = false;

  constructor(stop: string[] | undefined) {
    this.#sequences = (stop ?? []).filter((sequence) => sequence.trim() === "");
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
