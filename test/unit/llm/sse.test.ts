import { describe, expect, it } from "vitest";
import { readSse, SseParser } from "../../../src/llm/sse.ts";

function streamOf(parts: string[]): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const part of parts) controller.enqueue(encoder.encode(part));
      controller.close();
    },
  });
}

async function collect(parts: string[]) {
  const out = [];
  for await (const message of readSse(streamOf(parts))) out.push(message);
  return out;
}

describe("SSE parsing", () => {
  it("yields each message when its blank line arrives, across arbitrary chunk boundaries", async () => {
    const text = 'event: delta\ndata: {"a":1}\n\ndata: line one\ndata: line two\n\n: a comment\ndata: [DONE]\n\n';
    const whole = await collect([text]);
    expect(whole).toEqual([{ event: "delta", data: '{"a":1}' }, { data: "line one\nline two" }, { data: "[DONE]" }]);
    // Every split point, including inside "data:" and between "\r" and "\n".
    for (let cut = 1; cut < text.length; cut++) {
      expect(await collect([text.slice(0, cut), text.slice(cut)])).toEqual(whole);
    }
  });

  it("treats CRLF and lone CR as line ends, also when CR and LF land in different chunks", async () => {
    expect(await collect(["data: a\r", "\n\r\ndata: b\r\r"])).toEqual([{ data: "a" }, { data: "b" }]);
  });

  it("drops a message that never got its blank line, as the spec says", async () => {
    expect(await collect(["data: complete\n\n", "data: cut off"])).toEqual([{ data: "complete" }]);
  });

  it("decodes UTF-8 split inside a character", async () => {
    const bytes = new TextEncoder().encode("data: héllo ✓\n\n");
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const byte of bytes) controller.enqueue(new Uint8Array([byte]));
        controller.close();
      },
    });
    const out = [];
    for await (const message of readSse(stream)) out.push(message.data);
    expect(out).toEqual(["héllo ✓"]);
  });

  it("parses 10,000 messages pushed one byte-range at a time without losing or merging any", () => {
    const parser = new SseParser();
    let count = 0;
    let joined = "";
    for (let index = 0; index < 10_000; index++) {
      const frame = `data: {"i":${index}}\n\n`;
      const half = Math.floor(frame.length / 2);
      for (const message of [...parser.push(frame.slice(0, half)), ...parser.push(frame.slice(half))]) {
        count++;
        joined += (JSON.parse(message.data) as { i: number }).i === index ? "" : "x";
      }
    }
    expect(count).toBe(10_000);
    expect(joined).toBe("");
  });
});
