import { afterEach, describe, expect, it, vi } from "vitest";
import type { ApiError } from "../../src/lib/problem.ts";
import { llmErrorToApiError } from "../../src/llm/http-errors.ts";
import { createLlmRouter } from "../../src/llm/index.ts";
import { fakeUpstreams, llmConfig, openAiCompletion, problem, quietLogger, workspaceWith } from "../support/llm.ts";

/**
 * A provider's Retry-After that is neither delay-seconds nor an HTTP date asks for no wait: the call backs off as
 * it would without one. Read by V8's lenient Date.parse, "-1" was a date in 2001, a wait of 0: a rate-limited
 * provider was asked again at once, three times in a row.
 */

afterEach(() => vi.restoreAllMocks());

const messages = [{ role: "user" as const, content: "Refactor the parser." }];
const OPENAI = "openai.test";

/** A router whose sleeps are only recorded, with a jitter draw of one half (the first backoff: 250 ms). */
function routerRecordingWaits() {
  const waits: number[] = [];
  const router = createLlmRouter(llmConfig(), {
    logger: quietLogger,
    overrides: { sleep: async (ms) => void waits.push(ms), random: () => 0.5 },
  });
  return { router, waits };
}

describe("a malformed Retry-After", () => {
  it("a 429 whose Retry-After is negative is retried after the backoff, not at once", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "openai", model: "gpt-4o-mini-negative-retry-after" }],
    });
    const fake = fakeUpstreams({
      [OPENAI]: (_request, call) => (call < 3 ? problem(429, { "Retry-After": "-1" }) : openAiCompletion("done")),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const { router, waits } = routerRecordingWaits();
    const result = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "negative-wait" });
    expect(result).toMatchObject({ provider: "openai", attempts: 3 });
    // Full jitter under 500 ms, then under 1 s: half of each.
    expect(waits).toEqual([250, 500]);
  });

  it("a blank retry-after-ms does not stand for a wait of 0 over the Retry-After beside it", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "openai", model: "gpt-4o-mini-blank-retry-after-ms" }],
    });
    const fake = fakeUpstreams({
      [OPENAI]: (_request, call) =>
        call === 1 ? problem(429, { "retry-after-ms": "", "Retry-After": "3" }) : openAiCompletion("done"),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const { router, waits } = routerRecordingWaits();
    const result = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "blank-wait" });
    expect(result).toMatchObject({ provider: "openai", attempts: 2 });
    expect(waits).toEqual([3_000]);
  });

  it("a call that fails on such answers is told the wait the provider asked for, not a second", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "openai", model: "gpt-4o-mini-blank-retry-after-ms-fails" }],
    });
    const fake = fakeUpstreams({ [OPENAI]: () => problem(429, { "retry-after-ms": "", "Retry-After": "600" }) });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const { router } = routerRecordingWaits();
    const error = await router
      .chat({ messages }, { workspaceId: workspace.id, chargeKey: "blank-wait-fails", deadlineMs: Date.now() + 5_000 })
      .catch((caught: unknown) => caught);
    expect(error).toMatchObject({ kind: "all_providers_failed", retryable: true });
    expect(fake.count(OPENAI)).toBe(1);
    expect((llmErrorToApiError(error) as ApiError).headers["Retry-After"]).toBe("600");
  });
});
