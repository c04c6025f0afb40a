/**
 * The soak's last phase (bench/router/soak.ts): an outage injected on purpose, after the chaos, judged by what
 * GET /api/v1/providers says and what the fakes receive. Models of its own (openai:gpt-4o, then
 * anthropic:claude-3-5-sonnet-latest) give it breakers the chaos never touched: the OpenAI fake fails every call until it opens, an open breaker is passed over
 * (with an `error_rate` fallback event, no request to the fake), and after its 30 s the half-open trial closes
 * it once the fake answers again.
 */

import type { FakeAnthropic } from "../../test/fakes/anthropic.ts";
import type { FakeOpenAi } from "../../test/fakes/openai.ts";
import { createTestWorkspace } from "../../test/support/workspaces.ts";

const OUTAGE_MODEL = "gpt-4o";
/** The fallback's own model too: the chaos may have left claude-3-5-haiku's breaker open, and an open one is passed over. */
const FALLBACK_MODEL = "claude-3-5-sonnet-latest";
const MAX_CALLS_TO_OPEN = 4;
const sleep = (ms: number) => new Promise((wake) => setTimeout(wake, ms));

interface Check {
  name: string;
  violations: string[];
}

export async function breakerPhase(
  baseUrl: string,
  openai: FakeOpenAi,
  anthropic: FakeAnthropic,
): Promise<{ failed: boolean }> {
  const workspace = await createTestWorkspace(fetch, baseUrl, { name: "breaker-phase" });
  const headers = { "Content-Type": "application/json", ...workspace.headers };
  const patched = await fetch(`${baseUrl}/api/v1/workspace`, {
    method: "PATCH",
    headers,
    body: JSON.stringify({
      llm: {
        strategy: "fallback",
        chain: [
          { provider: "openai", model: OUTAGE_MODEL },
          { provider: "anthropic", model: FALLBACK_MODEL },
        ],
      },
    }),
  });
  if (!patched.ok) throw new Error(`PATCH /api/v1/workspace answered ${patched.status}`);
  const chat = async (n: number) => {
    const response = await fetch(`${baseUrl}/api/v1/llm/chat/completions`, {
      method: "POST",
      headers: { ...headers, "X-Request-Id": `breaker-phase-${n}` },
      body: JSON.stringify({ model: "auto", messages: [{ role: "user", content: "breaker phase" }], max_tokens: 16 }),
    });
    const body: any = await response.json();
    if (response.status !== 200) console.log(`    call ${n}: ${JSON.stringify(body)}`);
    return { status: response.status, provider: body.x_mgx?.provider as string | undefined };
  };
  const breaker = async () => {
    const response = await fetch(`${baseUrl}/api/v1/providers?limit=100`, { headers });
    const body: any = await response.json();
    const openaiEntry = body.data.find((entry: { provider: string }) => entry.provider === "openai");
    return openaiEntry?.models.find((model: { model: string }) => model.model === OUTAGE_MODEL);
  };

  const checks: Check[] = [];
  const check = (name: string) => {
    const entry = { name, violations: [] as string[] };
    checks.push(entry);
    return entry;
  };
  openai.faults.plan([], { status: 503 });
  anthropic.faults.plan([], { ok: true, chunks: 3, usage: { prompt: 20, completion: 3 } });

  // 1. Every attempt fails: five in a row open the breaker, and the calls are served by the next target.
  const opens = check("breaker opens on an injected outage, calls served by the next target");
  let calls = 0;
  let state = await breaker();
  while (state?.state !== "open" && calls < MAX_CALLS_TO_OPEN) {
    const answer = await chat(calls++);
    if (answer.status !== 200 || answer.provider !== "anthropic")
      opens.violations.push(`call ${calls}: ${answer.status} from ${answer.provider}`);
    state = await breaker();
  }
  if (state?.state !== "open")
    opens.violations.push(`still ${state?.state} after ${calls} calls: ${JSON.stringify(state)}`);
  console.log(
    `  outage: ${OUTAGE_MODEL} ${state?.state} after ${calls} calls, ${state?.consecutive_failures} failures`,
  );

  // 2. Open: passed over without a request, each call told as an `error_rate` fallback.
  const passed = check("an open breaker is passed over, with an error_rate fallback event");
  const before = openai.received;
  const passedOver: number[] = [];
  for (let index = 0; index < 3; index++) {
    const n = calls++;
    passedOver.push(n);
    const answer = await chat(n);
    if (answer.status !== 200 || answer.provider !== "anthropic")
      passed.violations.push(`call ${n}: ${answer.status} from ${answer.provider}`);
  }
  if (openai.received !== before) passed.violations.push(`the fake received ${openai.received - before} requests`);
  await sleep(1_000);
  const events = await fetch(`${baseUrl}/api/v1/events?types=llm.provider.fallback&limit=100`, { headers });
  const fallbacks = ((await events.json()) as any).data as { request_id?: string; data: { reason: string } }[];
  for (const n of passedOver) {
    const told = fallbacks.filter((event) => event.request_id === `breaker-phase-${n}`);
    if (told.length !== 1 || told[0].data.reason !== "error_rate")
      passed.violations.push(`call ${n}: fallback events ${JSON.stringify(told.map((event) => event.data.reason))}`);
  }

  // 3. Back up: after its 30 s the half-open trial reaches the provider, and its success closes the breaker.
  const recovers = check("the half-open trial closes the breaker once the provider answers");
  openai.faults.plan([], { ok: true, chunks: 3, usage: { prompt: 20, completion: 3 } });
  const retryAtMs = state?.retry_at ? Date.parse(state.retry_at) : Date.now() + 30_000;
  await sleep(Math.max(0, retryAtMs - Date.now()) + 500);
  const trial = await chat(calls++);
  state = await breaker();
  if (trial.status !== 200 || trial.provider !== "openai")
    recovers.violations.push(`trial call: ${trial.status} from ${trial.provider}`);
  if (state?.state !== "closed") recovers.violations.push(`after the trial: ${JSON.stringify(state)}`);

  let failed = false;
  for (const entry of checks) {
    const ok = entry.violations.length === 0;
    failed ||= !ok;
    console.log(`${ok ? "PASS" : "FAIL"} ${entry.name}`);
    for (const violation of entry.violations) console.log(`    ${violation}`);
  }
  return { failed };
}
