import { afterEach, describe, expect, it, vi } from "vitest";
import { createLlmRouter } from "../../src/llm/index.ts";
import type { CallContext } from "../../src/llm/types.ts";
import { anthropicMessage, fakeUpstreams, llmConfig, problem, quietLogger, workspaceWith } from "../support/llm.ts";

/**
 * `llm.provider.fallback` tells a switch to a target the call then tries. A call cancelled before that attempt (its
 * client gone while the call was planned, or between two targets) makes none: told, the event named a fallback to a
 * target that was never called, as the deadline's case already is not told (Router#serve).
 */

afterEach(() => vi.restoreAllMocks());

const messages = [{ role: "user" as const, content: "Refactor the parser." }];
const OPENAI = "openai.test";
const ANTHROPIC = "anthropic.test";

type Emitted = Parameters<NonNullable<CallContext["emitEvent"]>>[0];

function quickBreakerRouter() {
  return createLlmRouter(llmConfig(), {
    logger: quietLogger,
    overrides: {
      maxAttemptsPerTarget: 1,
      breakerPolicy: {
        consecutiveFailures: 5,
        minCalls: 10,
        failureRatio: 0.5,
        windowMs: 60_000,
        openMs: 60_000,
        trialTimeoutMs: 60_000,
      },
    },
  });
}

describe("llm.provider.fallback and a cancelled call", () => {
  it("a call cancelled before its first attempt, its first choice's breaker open, tells no fallback", async () => {
    const model = `gpt-4o-mini-cancel-fallback-${crypto.randomUUID().slice(0, 6)}`;
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [
        { provider: "openai", model },
        { provider: "anthropic", model: "claude-3-5-haiku-latest" },
      ],
    });
    const fake = fakeUpstreams({ [OPENAI]: () => problem(503), [ANTHROPIC]: () => anthropicMessage("fallback") });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = quickBreakerRouter();
    for (let call = 0; call < 5; call++) {
      const result = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: `open-${call}` });
      expect(result.provider).toBe("anthropic");
    }
    const anthropicCalls = fake.count(ANTHROPIC);

    // OpenAI's breaker is open: the next call would pass it over for Claude, but its client leaves at once.
    const emitted: Emitted[] = [];
    const controller = new AbortController();
    const pending = router.chat(
      { messages },
      {
        workspaceId: workspace.id,
        chargeKey: "cancelled-early",
        signal: controller.signal,
        emitEvent: (event) => void emitted.push(event),
      },
    );
    controller.abort();
    await expect(pending).rejects.toMatchObject({ kind: "cancelled" });
    expect(fake.count(ANTHROPIC)).toBe(anthropicCalls);
    expect(emitted.filter((event) => event.event_type === "llm.provider.fallback")).toEqual([]);
  });

  it("a call cancelled after a failed attempt, before the next target, tells the failure but no fallback", async () => {
    const model = `gpt-4o-mini-cancel-between-${crypto.randomUUID().slice(0, 6)}`;
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [
        { provider: "openai", model },
        { provider: "anthropic", model: "claude-3-5-haiku-latest" },
      ],
    });
    const fake = fakeUpstreams({ [OPENAI]: () => problem(501), [ANTHROPIC]: () => anthropicMessage("fallback") });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const router = quickBreakerRouter();
    // The client leaves once the first target's failure (a 501: no retry, on to the next) is told.
    const controller = new AbortController();
    const emitted: Emitted[] = [];
    const error = await router
      .chat(
        { messages },
        {
          workspaceId: workspace.id,
          chargeKey: "cancelled-between",
          signal: controller.signal,
          emitEvent: (event) => {
            emitted.push(event);
            if (event.event_type === "llm.provider.error") controller.abort();
          },
        },
      )
      .catch((caught: unknown) => caught);
    expect(error).toMatchObject({ kind: "cancelled" });
    expect(fake.count(ANTHROPIC)).toBe(0);
    expect(emitted.map((event) => event.event_type)).toEqual(["llm.provider.error"]);
  });
});
