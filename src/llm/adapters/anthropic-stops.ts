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

/** The sequences Anthropic is not sent, which the adapter's StopCutter applies to the answer instead. */
export function unsentStops(stop: string[] | undefined): string[] {
  return (stop ?? []).filter((sequence) => sequence.trim() === "");
}
