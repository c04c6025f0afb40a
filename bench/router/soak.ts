/**
 * Chaos soak of the LLM router under `wrangler dev`, judged by invariants (docs/llm-router.md): two
 * fault-injecting fake upstreams (OpenAI and Anthropic, test/fakes) answer a seeded random mix of
 * successes, 429s with Retry-After, 5xx, hangs, resets, streams cut or stalled mid-answer and slow streams;
 * five workspaces with chains over both (budgeted tightly, roomily, or only while the calls run) send a
 * bounded number of concurrent chat calls, streamed and not, some cancelled by the client; then the books are
 * checked against what the fakes did (soak-checks.ts), and an outage is injected on purpose (soak-breaker.ts). A tool, not a CI test: `npm run soak:router`
 * (`SOAK_CALLS`, `SOAK_CONCURRENCY`, `SOAK_SEED`, `SOAK_CANCEL_RATE`, `SOAK_DUMP`). Exits 1 when an invariant fails.
 */

import { seededRandom } from "../../src/lib/seeded-random.ts";
import { startWorker } from "../../test/e2e/harness.ts";
import { startFakeAnthropic } from "../../test/fakes/anthropic.ts";
import type { FaultStep } from "../../test/fakes/llm-faults.ts";
import { startFakeOpenAi } from "../../test/fakes/openai.ts";
import type { RecordingServer } from "../../test/fakes/recording-server.ts";
import { createTestWorkspace, TEST_ADMIN_TOKEN } from "../../test/support/workspaces.ts";
import { breakerPhase } from "./soak-breaker.ts";
import { checkInvariants } from "./soak-checks.ts";
import { type Attempt, type CallRecord, promptOf, type SoakWorkspace } from "./soak-lib.ts";

const CALLS = Number(process.env.SOAK_CALLS ?? 300);
const CONCURRENCY = Number(process.env.SOAK_CONCURRENCY ?? 16);
const SEED = Number(process.env.SOAK_SEED ?? 1);
const CANCEL_RATE = Number(process.env.SOAK_CANCEL_RATE ?? 0.1);
/** Short, so a hang costs seconds, not the default minute. */
const ATTEMPT_TIMEOUT_MS = 2_000;
const PLAN_STEPS = 4_000;
/** How long an isolate spends a budget lease (src/llm/budget-leases.ts). */
const LEASE_SPEND_MS = 5_000;
const SETTLE_TIMEOUT_MS = 40_000;

const OPENAI = { provider: "openai", model: "gpt-4o-mini" };
const ANTHROPIC = { provider: "anthropic", model: "claude-3-5-haiku-latest" };
const NO_BUDGETS = { daily_tokens: null, monthly_tokens: null, daily_cost_usd: null, monthly_cost_usd: null };

const random = seededRandom(SEED);
const between = (low: number, high: number) => low + Math.floor(random() * (high - low + 1));

function faultStep(provider: "openai" | "anthropic"): FaultStep {
  const roll = random();
  const chunks = between(2, 8);
  const ok = { ok: true as const, chunks, usage: { prompt: between(12, 40), completion: chunks } };
  if (roll < 0.48) return { ...ok, latencyMs: between(0, 40) };
  if (roll < 0.55) return { ...ok, frameDelayMs: between(60, 250) };
  if (roll < 0.6) return { ...ok, latencyMs: between(200, 900) };
  if (roll < 0.66) return { status: 429, headers: { "Retry-After": "1" } };
  // Longer than the router's backoff cap: failed over at once while another target remains.
  if (roll < 0.68) return { status: 429, headers: { "Retry-After": "20" } };
  if (roll < 0.69) return { status: 429, headers: { "retry-after-ms": "300" } };
  if (roll < 0.7 && provider === "openai")
    return {
      status: 429,
      body: {
        error: { message: "You exceeded your current quota", type: "insufficient_quota", code: "insufficient_quota" },
      },
    };
  if (roll < 0.7) return { status: 429, headers: { "Retry-After": "1" } };
  if (roll < 0.78)
    return { status: provider === "anthropic" ? ([500, 529] as const)[between(0, 1)] : between(0, 1) ? 500 : 503 };
  if (roll < 0.83) return { hang: true };
  if (roll < 0.88) return { reset: true };
  if (roll < 0.94) return { ...ok, resetAfterChunks: between(0, 3) };
  return { ...ok, stallAfterChunks: between(0, 2) };
}

/** The attempts each fake served, in arrival order: the k-th chat request took the k-th step of the plan. */
function attemptsOf(
  fake: RecordingServer & { arrivals: number[] },
  provider: string,
  path: RegExp,
  plan: FaultStep[],
): Attempt[] {
  const chats = fake.requests.filter((request) => path.test(request.path));
  return chats.map((request, index) => {
    const text = request.body.toString("utf8");
    const call = /soak call (\d+):/.exec(text);
    const sent = JSON.parse(text);
    return {
      maxTokens: sent.max_tokens ?? sent.max_completion_tokens ?? null,
      provider,
      callId: call ? Number(call[1]) : -1,
      at: fake.arrivals[index] ?? 0,
      step: plan[index] ?? { ok: true },
    };
  });
}

async function api(baseUrl: string, path: string, headers: Record<string, string>, init: RequestInit = {}) {
  const response = await fetch(`${baseUrl}${path}`, {
    ...init,
    headers: { "Content-Type": "application/json", ...headers, ...(init.headers as Record<string, string>) },
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${init.method ?? "GET"} ${path} answered ${response.status}: ${text}`);
  return JSON.parse(text);
}

async function readStream(response: Response, record: CallRecord): Promise<void> {
  const reader = response.body?.getReader();
  if (!reader) return;
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end = buffer.indexOf("\n\n");
    while (end >= 0) {
      const frame = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 2);
      end = buffer.indexOf("\n\n");
      if (!frame.startsWith("data: ")) continue;
      const data = frame.slice(6);
      if (data === "[DONE]") {
        record.done = true;
        continue;
      }
      const chunk = JSON.parse(data);
      if (chunk.error) record.streamError = chunk.error;
      if (chunk.usage) record.usage = chunk.usage;
      if (chunk.x_mgx) record.xMgx = chunk.x_mgx;
      if (chunk.choices?.[0]?.delta?.content) record.deltas++;
    }
  }
}

async function call(baseUrl: string, workspace: SoakWorkspace, record: CallRecord): Promise<void> {
  const controller = new AbortController();
  const timer = record.cancelAfterMs === null ? undefined : setTimeout(() => controller.abort(), record.cancelAfterMs);
  const started = Date.now();
  record.startedAt = started;
  try {
    const response = await fetch(`${baseUrl}/api/v1/llm/chat/completions`, {
      method: "POST",
      signal: controller.signal,
      headers: { "Content-Type": "application/json", "X-Request-Id": record.requestId, ...workspace.headers },
      body: JSON.stringify({
        model: record.model,
        messages: [{ role: "user", content: promptOf(record.id) }],
        max_tokens: 32,
        ...(record.stream
          ? { stream: true, ...(record.includeUsage ? { stream_options: { include_usage: true } } : {}) }
          : {}),
      }),
    });
    record.status = response.status;
    record.contentType = response.headers.get("content-type") ?? "";
    record.retryAfter = response.headers.get("retry-after");
    if (record.stream && response.status === 200) await readStream(response, record);
    else {
      const text = await response.text();
      record.body = text ? JSON.parse(text) : null;
      if (response.status === 200) {
        record.usage = record.body.usage;
        record.xMgx = record.body.x_mgx;
        record.done = true;
      }
    }
  } catch (error) {
    if (controller.signal.aborted) record.cancelled = true;
    else record.clientError = String(error);
  } finally {
    clearTimeout(timer);
    record.ms = Date.now() - started;
  }
}

/** Puts the workspace's raised budgets while calls run, noting what the period had used by then. */
async function raiseBudgets(baseUrl: string, workspace: SoakWorkspace): Promise<void> {
  if (!workspace.raise) return;
  workspace.raise.atMs = Date.now();
  const status = await api(baseUrl, "/api/v1/budgets", workspace.headers, {
    method: "PUT",
    body: JSON.stringify(workspace.raise.budgets),
  });
  workspace.raise.before = workspace.budgets;
  workspace.raise.usedTokens = status.daily.tokens;
  workspace.budgets = workspace.raise.budgets;
  console.log(`  ${workspace.name}: budgets raised at ${status.daily.tokens} tokens used`);
}

async function main(): Promise<void> {
  const openai = await startFakeOpenAi();
  const anthropic = await startFakeAnthropic();
  const openaiPlan = Array.from({ length: PLAN_STEPS }, () => faultStep("openai"));
  const anthropicPlan = Array.from({ length: PLAN_STEPS }, () => faultStep("anthropic"));
  openai.faults.plan(openaiPlan);
  anthropic.faults.plan(anthropicPlan);
  console.log(`soak: ${CALLS} calls, ${CONCURRENCY} at once, seed ${SEED}; fakes at ${openai.url}, ${anthropic.url}`);
  const worker = await startWorker({
    localObservability: false,
    vars: {
      ADMIN_TOKEN: TEST_ADMIN_TOKEN,
      LOG_LEVEL: "error",
      OPENAI_API_KEY: "sk-fake",
      OPENAI_BASE_URL: `${openai.url}/v1`,
      ANTHROPIC_API_KEY: "sk-ant-fake",
      ANTHROPIC_BASE_URL: anthropic.url,
      LLM_DEFAULT_CHAIN: "openai:gpt-4o-mini,anthropic:claude-3-5-haiku-latest",
      LLM_ATTEMPT_TIMEOUT_MS: String(ATTEMPT_TIMEOUT_MS),
    },
  });
  try {
    const specs = [
      // Given a budget under what it already used while calls run: its steps are reported at once, each once.
      {
        name: "openai-first",
        chain: [OPENAI, ANTHROPIC],
        budgets: NO_BUDGETS,
        raise: { afterCalls: Math.floor(CALLS * 0.5), budgets: { ...NO_BUDGETS, daily_tokens: 600 } },
      },
      // Budgeted while its calls run: what it was only counted before must be in the limiter's books.
      {
        name: "anthropic-first",
        chain: [ANTHROPIC, OPENAI],
        budgets: NO_BUDGETS,
        raise: { afterCalls: Math.floor(CALLS * 0.4), budgets: { ...NO_BUDGETS, daily_tokens: 1_000_000 } },
      },
      // Raised while its calls run: steps it no longer reaches are armed again (docs/llm-router.md, budgets).
      {
        name: "tight-tokens",
        chain: [OPENAI, ANTHROPIC],
        budgets: { ...NO_BUDGETS, daily_tokens: 1_500 },
        raise: { afterCalls: Math.floor(CALLS * 0.6), budgets: { ...NO_BUDGETS, daily_tokens: 3_000 } },
      },
      // Room for more than 20 calls at first: its calls draw on budget leases until near the limit.
      { name: "leased-tokens", chain: [OPENAI, ANTHROPIC], budgets: { ...NO_BUDGETS, daily_tokens: 2_500 } },
      {
        name: "tight-cost",
        chain: [ANTHROPIC, OPENAI],
        budgets: { ...NO_BUDGETS, daily_cost_usd: 0.0015, monthly_tokens: 1_000_000 },
      },
    ];
    const workspaces: SoakWorkspace[] = [];
    for (const spec of specs) {
      const created = await createTestWorkspace(fetch, worker.baseUrl, {
        name: spec.name,
        limits: { requests_per_second: 10_000, burst: 10_000 },
      });
      await api(worker.baseUrl, "/api/v1/workspace", created.headers, {
        method: "PATCH",
        body: JSON.stringify({ llm: { strategy: "fallback", chain: spec.chain } }),
      });
      await api(worker.baseUrl, "/api/v1/budgets", created.headers, {
        method: "PUT",
        body: JSON.stringify(spec.budgets),
      });
      workspaces.push({ ...spec, id: created.id, headers: created.headers });
    }

    const records: CallRecord[] = Array.from({ length: CALLS }, (_, id) => {
      const stream = random() < 0.5;
      return {
        id,
        requestId: `soak-${SEED}-${id}`,
        workspace: id % workspaces.length,
        stream,
        includeUsage: stream && random() < 0.7,
        // A model the request names is tried first, the chain after it.
        model: (["auto", "auto", "auto", "gpt-4o-mini", "anthropic:claude-3-5-haiku-latest"] as const)[between(0, 4)],
        cancelAfterMs: random() < CANCEL_RATE ? between(30, 1_500) : null,
        status: 0,
        contentType: "",
        deltas: 0,
        done: false,
        cancelled: false,
        ms: 0,
      };
    });
    const started = Date.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < records.length) {
          const record = records[next++];
          for (const workspace of workspaces)
            if (workspace.raise && next === workspace.raise.afterCalls) await raiseBudgets(worker.baseUrl, workspace);
          await call(worker.baseUrl, workspaces[record.workspace], record);
        }
      }),
    );
    // The burst is over: once its leases' 5 s are up, one more call to a workspace with ample room is lent a
    // lease with its own reservation, and no call follows to draw on it. Its room must go back in 5 s as well.
    await new Promise((wake) => setTimeout(wake, LEASE_SPEND_MS + 1_000));
    const roomy = workspaces.findIndex((workspace) => workspace.name === "anthropic-first");
    const last: CallRecord = {
      id: records.length,
      requestId: `soak-${SEED}-${records.length}`,
      workspace: roomy,
      stream: false,
      includeUsage: false,
      model: "auto",
      cancelAfterMs: null,
      status: 0,
      contentType: "",
      deltas: 0,
      done: false,
      cancelled: false,
      ms: 0,
    };
    records.push(last);
    await call(worker.baseUrl, workspaces[roomy], last);
    console.log(`calls done in ${((Date.now() - started) / 1000).toFixed(1)} s; waiting for settlements`);

    const report = await checkInvariants({
      baseUrl: worker.baseUrl,
      persistDir: worker.persistDir,
      workspaces,
      records,
      // Read once the calls settled: a call its client cancelled goes on in the Worker (retries, fallbacks).
      attempts: () =>
        [
          ...attemptsOf(openai, "openai", /\/chat\/completions$/, openaiPlan),
          ...attemptsOf(anthropic, "anthropic", /^\/v1\/messages$/, anthropicPlan),
        ].sort((a, b) => a.at - b.at),
      settleTimeoutMs: SETTLE_TIMEOUT_MS,
    });
    const outage = await breakerPhase(worker.baseUrl, openai, anthropic);
    process.exitCode = report.failed || outage.failed ? 1 : 0;
  } finally {
    await worker.stop();
    await openai.close();
    await anthropic.close();
  }
}

await main();
