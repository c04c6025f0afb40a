import { createExecutionContext, runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import OpenAI from "openai";
import { expect } from "vitest";
import { createApp } from "../../src/app.ts";
import { createDb } from "../../src/db/client.ts";
import { type LlmRouting, type WorkspaceBudgets, workspaces } from "../../src/db/schema.ts";
import { type AppConfig, checkEnv } from "../../src/env.ts";
import { Logger } from "../../src/lib/logger.ts";
import { LIMITER_EVENT_OUTBOX } from "../../src/limits/limiter-store.ts";
import { createTestWorkspace, type TestWorkspace } from "./workspaces.ts";

/** Helpers for the router's workerd tests: a config with fake provider URLs, workspaces with a chain, events. */

export const BASE = "http://edge.test";
export const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));
export const quietLogger = new Logger({ level: "error", sampleRate: 1 });

export const OPENAI_URL = "https://openai.test/v1";
export const ANTHROPIC_URL = "https://anthropic.test";

/**
 * The openai SDK against the app in this isolate, with OpenAI and Anthropic configured at the fake upstreams
 * (fakeUpstreams answers for them); no retries, so a test sees each answer as it came.
 */
export function sdkAgainstApp(apiKey: string): OpenAI {
  const providers = {
    OPENAI_API_KEY: "sk-test",
    OPENAI_BASE_URL: OPENAI_URL,
    ANTHROPIC_API_KEY: "ak-test",
    ANTHROPIC_BASE_URL: ANTHROPIC_URL,
  };
  return new OpenAI({
    apiKey,
    baseURL: `${BASE}/api/v1/llm`,
    maxRetries: 0,
    fetch: async (url, init) =>
      createApp().fetch(new Request(String(url), init), { ...env, ...providers }, createExecutionContext()),
  });
}

/** POST /api/v1/llm/chat/completions to the app in this isolate, as a workspace's program calls it. */
export function postChat(headers: Record<string, string>, body: unknown): Promise<Response> {
  return fetcher(`${BASE}/api/v1/llm/chat/completions`, {
    method: "POST",
    headers: { ...headers, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

export function llmConfig(extra: Record<string, unknown> = {}): AppConfig {
  const checked = checkEnv({
    ...env,
    OPENAI_API_KEY: "sk-test",
    OPENAI_BASE_URL: OPENAI_URL,
    ANTHROPIC_API_KEY: "ak-test",
    ANTHROPIC_BASE_URL: ANTHROPIC_URL,
    ...extra,
  });
  if (!checked.ok) throw new Error(JSON.stringify(checked.problems));
  return checked.config;
}

export async function workspaceWith(llm: LlmRouting | null, budgets?: WorkspaceBudgets): Promise<TestWorkspace> {
  const workspace = await createTestWorkspace(fetcher, BASE);
  await createDb(env.DB)
    .update(workspaces)
    .set({ llm, ...(budgets ? { budgets } : {}) })
    .where(eq(workspaces.id, workspace.id));
  return workspace;
}

export interface SeenEvent {
  event_type: string;
  version: string;
  task_id?: string;
  data: Record<string, unknown>;
}

/** The workspace's events of the given types, waiting until at least `atLeast` arrived (they are published in the background). */
export async function eventsOf(
  workspace: TestWorkspace,
  types: string,
  atLeast = 0,
  timeoutMs = 5_000,
): Promise<SeenEvent[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const response = await fetcher(`${BASE}/api/v1/events?types=${encodeURIComponent(types)}&limit=100`, {
      headers: workspace.headers,
    });
    const body = (await response.json()) as { data: SeenEvent[] };
    if (body.data.length >= atLeast || Date.now() > deadline) return body.data;
    await new Promise((wake) => setTimeout(wake, 50));
  }
}

/** GET /api/v1/usage once its rows are written: they land just after the answers (coalesced per isolate). */
export async function usageWhenWritten(workspace: TestWorkspace): Promise<Record<string, any>> {
  let usage: Record<string, any> = { data: [] };
  for (let tries = 0; tries < 100 && usage.data.length === 0; tries++) {
    await new Promise((wake) => setTimeout(wake, 20));
    usage = (await (await fetcher(`${BASE}/api/v1/usage`, { headers: workspace.headers })).json()) as Record<
      string,
      any
    >;
  }
  return usage;
}

/** Waits until the workspace's WorkspaceLimiter has delivered every event it queued (src/events/outbox.ts). */
export async function limiterOutboxDrained(workspaceId: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const waiting = () =>
    runInDurableObject(
      env.WORKSPACE_LIMITER.getByName(workspaceId),
      (_instance, state) =>
        state.storage.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM ${LIMITER_EVENT_OUTBOX}`).one().n,
    );
  while ((await waiting()) > 0) {
    if (Date.now() > deadline) throw new Error(`the limiter of ${workspaceId} still holds undelivered events`);
    await new Promise((wake) => setTimeout(wake, 20));
  }
}

export function openAiCompletion(content: string, usage = { prompt_tokens: 12, completion_tokens: 5 }, status = 200) {
  return Response.json(
    {
      id: "chatcmpl-fake",
      object: "chat.completion",
      choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
      usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens },
    },
    { status },
  );
}

/** An OpenAI chat completion that calls tools, each given as [call id, function name, arguments JSON]. */
export function openAiToolCallCompletion(calls: [string, string, string][], content: string | null = null) {
  return Response.json({
    id: "chatcmpl-tool",
    object: "chat.completion",
    choices: [
      {
        index: 0,
        message: {
          role: "assistant",
          content,
          tool_calls: calls.map(([id, name, args]) => ({ id, type: "function", function: { name, arguments: args } })),
        },
        finish_reason: "tool_calls",
      },
    ],
    usage: { prompt_tokens: 20, completion_tokens: 10, total_tokens: 30 },
  });
}

export function anthropicMessage(text: string, usage = { input_tokens: 1_200, output_tokens: 350 }) {
  return Response.json({
    id: "msg_fake",
    type: "message",
    role: "assistant",
    content: [{ type: "text", text }],
    stop_reason: "end_turn",
    usage,
  });
}

export const problem = (status: number, headers: Record<string, string> = {}) =>
  Response.json({ error: { message: `fake ${status}`, type: "server_error" } }, { status, headers });

/** Budgets with no limit set: spread and override the one a test needs (`{ ...NO_BUDGETS, daily_tokens: 100 }`). */
export const NO_BUDGETS: WorkspaceBudgets = {
  daily_tokens: null,
  monthly_tokens: null,
  daily_cost_usd: null,
  monthly_cost_usd: null,
};

/** Fake upstreams for `vi.spyOn(globalThis, "fetch")`: each host answers from its handler; calls are recorded. */
export function fakeUpstreams(
  handlers: Record<string, (request: Request, call: number) => Response | Promise<Response>>,
) {
  const calls: Record<string, Request[]> = {};
  const original = globalThis.fetch;
  const impl = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const request = new Request(input, init);
    const host = new URL(request.url).host;
    const handler = handlers[host];
    if (!handler) return original(input, init);
    calls[host] ??= [];
    calls[host].push(request);
    return handler(request, calls[host].length);
  };
  return { impl, calls, count: (host: string) => calls[host]?.length ?? 0 };
}

/** A response that never comes, until the request is aborted. */
export function hang(request: Request): Promise<Response> {
  return new Promise((_, reject) => {
    request.signal.addEventListener("abort", () => reject(request.signal.reason), { once: true });
  });
}

/** What GET /api/v1/usage tells a workspace with one usage row today: that row, and the totals. */
export async function usageShown(workspace: TestWorkspace) {
  const response = await fetcher(`${BASE}/api/v1/usage`, { headers: workspace.headers });
  expect(response.status).toBe(200);
  const body = (await response.json()) as { data: Record<string, unknown>[]; totals: Record<string, unknown> };
  expect(body.data).toHaveLength(1);
  return body;
}

/** The cost of several charge lines as a usage row sums it (to 1e-8 USD). */
export const summedCost = (...costs: number[]) => Math.round(costs.reduce((sum, cost) => sum + cost, 0) * 1e8) / 1e8;

/** The workspace's daily budget figures, as its WorkspaceLimiter holds them. */
export async function budgetUsed(workspaceId: string) {
  return (await env.WORKSPACE_LIMITER.getByName(workspaceId).budgetStatus()).daily;
}
