import { afterEach, describe, expect, it, vi } from "vitest";
import { createLlmRouter } from "../../src/llm/index.ts";
import {
  anthropicMessage,
  BASE,
  fakeUpstreams,
  fetcher,
  llmConfig,
  openAiCompletion,
  problem,
  quietLogger,
  workspaceWith,
} from "../support/llm.ts";

/**
 * A streamed half-open trial, against fake upstreams and the real ProviderBreaker: its first delta proves the
 * provider answers, so other calls use the target while the stream still runs, and the stream's end is counted
 * once, as GET /api/v1/providers shows.
 */

afterEach(() => vi.restoreAllMocks());

const messages = [{ role: "user" as const, content: "Refactor the parser." }];
const OPENAI = "openai.test";
const ANTHROPIC = "anthropic.test";

/** A router whose breaker half-opens 300 ms after five failures, its trial held up to a minute, one attempt per target. */
function routerWithQuickBreaker() {
  const background: Promise<unknown>[] = [];
  const router = createLlmRouter(llmConfig(), {
    logger: quietLogger,
    waitUntil: (work) => background.push(work),
    overrides: {
      maxAttemptsPerTarget: 1,
      breakerPolicy: {
        consecutiveFailures: 5,
        minCalls: 10,
        failureRatio: 0.5,
        windowMs: 60_000,
        openMs: 300,
        trialTimeoutMs: 60_000,
      },
    },
  });
  // Usage rows and breaker syncs go to waitUntil, as in the Worker; this waits for what the object was told.
  return { router, settled: () => Promise.all(background) };
}

/** An OpenAI stream that sends its first delta at once, then waits to be told how to end: whole, or broken. */
function heldStream() {
  const encoder = new TextEncoder();
  const frame = (body: unknown) => encoder.encode(`data: ${JSON.stringify(body)}\n\n`);
  let end!: (how: "whole" | "broken") => void;
  const ending = new Promise<"whole" | "broken">((resolve) => {
    end = resolve;
  });
  const response = () =>
    new Response(
      new ReadableStream<Uint8Array>({
        async start(controller) {
          controller.enqueue(
            frame({ choices: [{ index: 0, delta: { role: "assistant", content: "long" }, finish_reason: null }] }),
          );
          if ((await ending) === "broken") {
            controller.error(new Error("connection reset mid-answer"));
            return;
          }
          controller.enqueue(frame({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }] }));
          controller.enqueue(frame({ choices: [], usage: { prompt_tokens: 9, completion_tokens: 1 } }));
          controller.enqueue(encoder.encode("data: [DONE]\n\n"));
          controller.close();
        },
      }),
      { headers: { "Content-Type": "text/event-stream" } },
    );
  return { response, end };
}

interface ShownBreaker {
  model: string;
  state: string;
  calls_last_minute: number;
  error_rate: number;
  consecutive_failures: number;
}

async function shownBreaker(headers: Record<string, string>, model: string): Promise<ShownBreaker | undefined> {
  const providers = (await (await fetcher(`${BASE}/api/v1/providers`, { headers })).json()) as {
    data: { provider: string; models: ShownBreaker[] }[];
  };
  return providers.data.find((entry) => entry.provider === "openai")?.models.find((entry) => entry.model === model);
}

/**
 * OpenAI's model (named apart, for a breaker of its own) falling back to Claude: five calls fail over and open its
 * breaker, and 400 ms later it is half-open. The sixth call to OpenAI is the held stream, later ones answer whole.
 */
async function halfOpenWithHeldStream(router: ReturnType<typeof createLlmRouter>) {
  const model = `gpt-4o-mini-trial-stream-${crypto.randomUUID().slice(0, 8)}`;
  const workspace = await workspaceWith({
    strategy: "fallback",
    chain: [
      { provider: "openai", model },
      { provider: "anthropic", model: "claude-3-5-haiku-latest" },
    ],
  });
  const held = heldStream();
  const fake = fakeUpstreams({
    [OPENAI]: (_request, call) =>
      call <= 5 ? problem(503) : call === 6 ? held.response() : openAiCompletion("openai is back"),
    [ANTHROPIC]: () => anthropicMessage("fallback"),
  });
  vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
  for (let call = 0; call < 5; call++) {
    const result = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: `ts${call}` });
    expect(result.provider).toBe("anthropic");
  }
  await new Promise((wake) => setTimeout(wake, 400));
  return { model, workspace, held, fake };
}

describe("a streamed half-open trial", () => {
  it("closes the breaker at its first delta: the next call is served by the target while it streams, counted once", async () => {
    const { router, settled } = routerWithQuickBreaker();
    const { model, workspace, held, fake } = await halfOpenWithHeldStream(router);
    const trial = await router.chatStream({ messages }, { workspaceId: workspace.id, chargeKey: "ts-trial" });
    expect(trial.provider).toBe("openai");
    const deltas = trial.deltas[Symbol.asyncIterator]();
    expect((await deltas.next()).value).toMatchObject({ type: "delta", content: "long" });
    // The trial still streams: the next call goes to OpenAI, not passed over for the trial it holds.
    const meanwhile = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "ts-meanwhile" });
    expect(meanwhile).toMatchObject({ provider: "openai", attempts: 1, message: { content: "openai is back" } });
    expect(fake.count(OPENAI)).toBe(7);
    expect(fake.count(ANTHROPIC)).toBe(5);
    await settled();
    // Closed in the shared breaker; the stream not yet counted (five failures, one success).
    expect(await shownBreaker(workspace.headers, model)).toMatchObject({
      state: "closed",
      calls_last_minute: 6,
      error_rate: 0.833,
      consecutive_failures: 0,
    });
    held.end("whole");
    while (!(await deltas.next()).done);
    expect(await trial.result).toMatchObject({ provider: "openai", finish_reason: "stop" });
    await settled();
    // The stream is one call, whole: seven in all, not eight.
    expect(await shownBreaker(workspace.headers, model)).toMatchObject({
      state: "closed",
      calls_last_minute: 7,
      error_rate: 0.714,
      consecutive_failures: 0,
    });
  });

  it("that then breaks mid-answer counts as one failure, not a success and a failure", async () => {
    const { router, settled } = routerWithQuickBreaker();
    const { model, workspace, held, fake } = await halfOpenWithHeldStream(router);
    const trial = await router.chatStream({ messages }, { workspaceId: workspace.id, chargeKey: "tb-trial" });
    const deltas = trial.deltas[Symbol.asyncIterator]();
    expect((await deltas.next()).done).toBe(false);
    const meanwhile = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "tb-meanwhile" });
    expect(meanwhile.provider).toBe("openai");
    held.end("broken");
    await expect(
      (async () => {
        while (!(await deltas.next()).done);
      })(),
    ).rejects.toMatchObject({ failure: "connection" });
    await settled();
    // Five failures, the call served meanwhile, and the broken stream: seven calls, six failed, the last in a row
    // one. The breaker stays closed: the provider answers, and one failure does not reopen it.
    expect(await shownBreaker(workspace.headers, model)).toMatchObject({
      state: "closed",
      calls_last_minute: 7,
      error_rate: 0.857,
      consecutive_failures: 1,
    });
    // And the next call still goes to OpenAI.
    const next = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "tb-next" });
    expect(next.provider).toBe("openai");
    expect(fake.count(OPENAI)).toBe(8);
  });

  it("of a whole answer read from a stream (a long one, the agent runtime's) closes the breaker at its first delta too", async () => {
    const { router, settled } = routerWithQuickBreaker();
    const { model, workspace, held, fake } = await halfOpenWithHeldStream(router);
    // Asked whole by its caller, read from the provider's stream: the answer is told only at its end.
    const trial = router.chat(
      { messages },
      { workspaceId: workspace.id, chargeKey: "tw-trial", wholeFromStream: true },
    );
    while (fake.count(OPENAI) < 6) await new Promise((wake) => setTimeout(wake, 10));
    await new Promise((wake) => setTimeout(wake, 50));
    const meanwhile = await router.chat({ messages }, { workspaceId: workspace.id, chargeKey: "tw-meanwhile" });
    expect(meanwhile).toMatchObject({ provider: "openai", message: { content: "openai is back" } });
    expect(fake.count(ANTHROPIC)).toBe(5);
    held.end("whole");
    expect(await trial).toMatchObject({ provider: "openai", message: { content: "long" } });
    await settled();
    // Five failures, the call served meanwhile and the trial: seven calls, the trial counted once.
    expect(await shownBreaker(workspace.headers, model)).toMatchObject({
      state: "closed",
      calls_last_minute: 7,
      consecutive_failures: 0,
    });
  });
});
