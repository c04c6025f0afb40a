import { describe, expect, it } from "vitest";
import { liveRequestSignal } from "../../src/lib/request-signal.ts";

describe("the incoming request's signal", () => {
  const request = new Request("http://localhost/", { signal: new AbortController().signal });

  it("is left out under this Worker's flags: without enable_request_signal it never fires", () => {
    expect(Cloudflare.compatibilityFlags.enable_request_signal).toBe(false);
    expect(liveRequestSignal(request)).toBeUndefined();
  });

  it("is passed on where the runtime makes it fire", () => {
    expect(liveRequestSignal(request, { enable_request_signal: true })).toBe(request.signal);
    // No flags at all: not workerd, where a request's signal is live.
    expect(liveRequestSignal(request, null)).toBe(request.signal);
  });
});
