/**
 * Incremental Server-Sent Events parsing (WHATWG "event stream" rules): bytes
 * in, one message out as soon as its blank line arrives. Nothing is buffered
 * beyond the current line and the current message, so a 10,000-chunk stream
 * costs the same memory as a 10-chunk one.
 */

export interface SseMessage {
  /** The `event:` field; absent means the default "message". */
  event?: string;
  /** `data:` lines joined with "\n". */
  data: string;
  id?: string;
}

export class SseParser {
  #line = "";
  #data: string[] = [];
  #event: string | undefined;
  #id: string | undefined;
  #afterCr = false;

  /** Feeds decoded text; returns the messages it completed. */
  push(text: string): SseMessage[] {
    const out: SseMessage[] = [];
    let start = 0;
    for (let index = 0; index < text.length; index++) {
      const char = text.charCodeAt(index);
      if (char !== 10 && char !== 13) {
        this.#afterCr = false;
        continue;
      }
      // "\r\n" is one line end, even when a chunk boundary falls between the two.
      if (char === 10 && this.#afterCr) {
        this.#afterCr = false;
        start = index + 1;
        continue;
      }
      this.#line += text.slice(start, index);
      this.#takeLine(out);
      this.#afterCr = char === 13;
      start = index + 1;
    }
    if (start < text.length) this.#line += text.slice(start);
    return out;
  }

  /** At end of stream: a message without its final blank line is dropped, as the spec says. */
  end(): SseMessage[] {
    this.#line = "";
    this.#data = [];
    this.#event = undefined;
    return [];
  }

  #takeLine(out: SseMessage[]): void {
    const line = this.#line;
    this.#line = "";
    if (line === "") {
      if (this.#data.length > 0) {
        out.push({
          data: this.#data.join("\n"),
          ...(this.#event !== undefined ? { event: this.#event } : {}),
          ...(this.#id !== undefined ? { id: this.#id } : {}),
        });
      }
      this.#data = [];
      this.#event = undefined;
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.#data.push(value);
    else if (field === "event") this.#event = value;
    else if (field === "id") this.#id = value;
  }
}

/** Messages of a byte stream, as they arrive. */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseMessage> {
  const parser = new SseParser();
  const decoder = new TextDecoder();
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      for (const message of parser.push(decoder.decode(value, { stream: true }))) yield message;
    }
    for (const message of parser.push(decoder.decode())) yield message;
    parser.end();
  } finally {
    // An early return (caller stopped reading, or an abort) must not leave the upstream open.
    reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}
