/**
 * What bench/router's scripts share: `wrangler dev` pointed at the fake
 * upstream, the two workspaces (one with budgets, one without) and the
 * requests of the cases measured under it. run.ts compares them with the
 * upstream and Portkey; attribute.ts tells where their CPU goes.
 */

import { startWorker, type WorkerProcess } from "../../test/e2e/harness.ts";
import { createTestWorkspace, TEST_ADMIN_TOKEN } from "../../test/support/workspaces.ts";

export interface Case {
  name: string;
  url: string;
  method: "GET" | "POST";
  headers: Record<string, string>;
  body?: string;
}

export const CHAT_BODY = JSON.stringify({
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: "Write a haiku about retries." }],
  max_tokens: 16,
});

const JSON_HEADERS = { "Content-Type": "application/json" };

/** `wrangler dev` with the upstream as its only provider, warn-level logs and the debug routes (d)–(d3) need. */
export function startRouterWorker(
  upstreamUrl: string,
  options: { localObservability: boolean },
): Promise<WorkerProcess> {
  return startWorker({
    localObservability: options.localObservability,
    vars: {
      ADMIN_TOKEN: TEST_ADMIN_TOKEN,
      LOG_LEVEL: "warn",
      OPENAI_API_KEY: "sk-fake",
      OPENAI_BASE_URL: `${upstreamUrl}/v1`,
      LLM_DEFAULT_CHAIN: "openai:gpt-4o-mini",
      ENABLE_DEBUG_ROUTES: "true",
    },
  });
}

/** The cases served by the Worker, after creating their workspaces: (b), (b1), (d), (d1), (d3) and (e). */
export async function workerCases(baseUrl: string): Promise<Case[]> {
  const limits = { requests_per_second: 100_000, burst: 100_000 };
  const workspace = await createTestWorkspace(fetch, baseUrl, { limits });
  // Far above what a run spends (about 30 tokens and $0.00001 a call), so nothing is refused.
  const budgets = await fetch(`${baseUrl}/api/v1/budgets`, {
    method: "PUT",
    headers: { ...JSON_HEADERS, ...workspace.headers },
    body: JSON.stringify({
      daily_tokens: 1_000_000_000,
      monthly_tokens: null,
      daily_cost_usd: null,
      monthly_cost_usd: 1_000_000,
    }),
  });
  if (budgets.status !== 200) throw new Error(`PUT /api/v1/budgets answered ${budgets.status}`);
  const unbudgeted = await createTestWorkspace(fetch, baseUrl, { limits });
  const chat = (name: string, headers: Record<string, string>): Case => ({
    name,
    url: `${baseUrl}/api/v1/llm/chat/completions`,
    method: "POST",
    headers: { ...JSON_HEADERS, ...headers },
    body: CHAT_BODY,
  });
  return [
    chat("(b) our router /llm/chat/completions", workspace.headers),
    chat("(b1) our router, no budgets", unbudgeted.headers),
    {
      name: "(d) bare Hono route POST /__debug/bare",
      url: `${baseUrl}/__debug/bare`,
      method: "POST",
      headers: JSON_HEADERS,
      body: CHAT_BODY,
    },
    { name: "(d1) bare GET /health", url: `${baseUrl}/health`, method: "GET", headers: {} },
    {
      name: "(d3) bare upstream hop",
      url: `${baseUrl}/__debug/upstream-hop`,
      method: "POST",
      headers: JSON_HEADERS,
      body: CHAT_BODY,
    },
    { name: "(e) auth+limit /whoami", url: `${baseUrl}/api/v1/whoami`, method: "GET", headers: workspace.headers },
  ];
}

/** Correctness before speed: every case must answer 200. */
export async function checkCases(cases: Case[]): Promise<void> {
  for (const testCase of cases) {
    const response = await send(testCase);
    const text = await response.text();
    if (response.status !== 200) throw new Error(`${testCase.name} answered ${response.status}: ${text.slice(0, 300)}`);
  }
}

export function send(testCase: Case): Promise<Response> {
  return fetch(testCase.url, { method: testCase.method, headers: testCase.headers, body: testCase.body });
}
