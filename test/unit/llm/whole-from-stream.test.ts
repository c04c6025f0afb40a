import { describe, expect, it } from "vitest";
import { AnthropicAdapter } from "../../../src/llm/adapters/anthropic.ts";
import { ProviderError } from "../../../src/llm/provider.ts";
import { refusesStreaming } from "../../../src/llm/whole-from-stream.ts";

/** Which provider refusals of a long whole answer asked as a stream are about streaming (then asked whole). */

const answered = (status: number, words: string) =>
  new ProviderError("http", `provider answered ${status}: ${words}`, { status });

describe("refusesStreaming", () => {
  it("is a 400, 415 or 422 that names streaming", () => {
    expect(refusesStreaming(answered(400, "Streaming is not supported for this model"))).toBe(true);
    expect(refusesStreaming(answered(400, "Unsupported value: 'stream' does not support true with this model."))).toBe(
      true,
    );
    expect(refusesStreaming(answered(422, "[{'type': 'extra_forbidden', 'loc': ('body', 'stream_options')}]"))).toBe(
      true,
    );
    expect(refusesStreaming(answered(415, "text/event-stream is not served here"))).toBe(true);
    // FastAPI's detail, as errorFromResponse tells it.
    expect(refusesStreaming(answered(422, "body.stream_options: Extra inputs are not permitted"))).toBe(true);
  });

  it("is not a refusal of the request itself, a failure of another status, or one that merely says 'upstream'", () => {
    expect(refusesStreaming(answered(400, "This model's maximum context length is 4096 tokens."))).toBe(false);
    expect(refusesStreaming(answered(400, "upstream rejected the request"))).toBe(false);
    expect(refusesStreaming(answered(500, "streaming broke"))).toBe(false);
    expect(refusesStreaming(answered(404, "no stream here"))).toBe(false);
    expect(refusesStreaming(new ProviderError("protocol", "the stream ended without its final event"))).toBe(false);
    expect(refusesStreaming(new Error("stream"))).toBe(false);
  });
});

describe("refusesStreaming, of our own words", () => {
  it("is not an Anthropic error event without a message, which our fallback words must not name as streaming", async () => {
    // A 400 (invalid_request_error) event with no message, before any delta: taken for a refusal to stream, the
    // target's long answers were asked whole from then on, cut at the attempt timeout.
    const body = 'event: error\ndata: {"type":"error","error":{"type":"invalid_request_error"}}\n\n';
    const adapter = new AnthropicAdapter({
      apiKey: "ak",
      baseUrl: "https://anthropic.test",
      fetch: (async () => new Response(body, { headers: { "Content-Type": "text/event-stream" } })) as typeof fetch,
    });
    const failure = await (async () => {
      for await (const _event of adapter.stream({
        model: "claude-3-5-haiku-latest",
        messages: [{ role: "user", content: "hi" }],
        signal: new AbortController().signal,
      }));
    })().catch((error: unknown) => error);
    expect(failure).toMatchObject({ failure: "http", status: 400 });
    expect(refusesStreaming(failure)).toBe(false);
  });
});
