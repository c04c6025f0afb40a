/**
 * What the soak's scripts share (bench/router/soak.ts, soak-checks.ts, soak-books.ts): the records of a run
 * (calls, the fakes' attempts, usage rows) and the helpers that read the Worker's API and local D1.
 */

import { readdirSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import type { FaultStep } from "../../test/fakes/llm-faults.ts";

export interface SoakWorkspace {
  name: string;
  id: string;
  headers: Record<string, string>;
  chain: { provider: string; model: string }[];
  budgets: Record<string, number | null>;
  /** Daily token budget raised after this many calls were sent; `before` and `usedTokens` noted then. */
  raise?: {
    afterCalls: number;
    budgets: Record<string, number | null>;
    before?: Record<string, number | null>;
    usedTokens?: number;
    /** When the new budgets were sent. */
    atMs?: number;
  };
}

export interface CallRecord {
  id: number;
  requestId: string;
  workspace: number;
  stream: boolean;
  includeUsage: boolean;
  model: string;
  cancelAfterMs: number | null;
  startedAt?: number;
  status: number;
  contentType: string;
  retryAfter?: string | null;
  body?: any;
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  xMgx?: {
    provider: string;
    cost_usd: number;
    usage_estimated: boolean;
    attempts: number;
    timed_out_attempts?: unknown[];
    interrupted_attempts?: unknown[];
  };
  streamError?: unknown;
  deltas: number;
  done: boolean;
  cancelled: boolean;
  clientError?: string;
  ms: number;
}

/** One request a fake received: whose call it was, when, and the step of the plan it was answered with. */
export interface Attempt {
  provider: string;
  callId: number;
  at: number;
  step: FaultStep;
  /** The answer's length the router asked for (`max_tokens` or `max_completion_tokens`). */
  maxTokens: number | null;
}

export interface UsageRow {
  workspace_id: string;
  charge_key: string;
  provider: string;
  model: string;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  cost_usd: number;
  estimated: number;
  request_id: string | null;
}

/**
 * A row of an attempt that ended unfinished (timed out, or broken after its answer began), not of a call: usage
 * counts it apart from calls, and its prompt and written part are the documented overshoot of a budget.
 */
export const isUnfinishedAttemptRow = (row: UsageRow) =>
  row.charge_key.includes(":timed-out:") || row.charge_key.includes(":interrupted:");

export interface Invariant {
  name: string;
  checked: number;
  violations: string[];
}

/** What call `id` asks; the fakes find the call's number in it. */
export const promptOf = (id: number) => `soak call ${id}: write a few words about retries.`;

export const sleep = (ms: number) => new Promise((wake) => setTimeout(wake, ms));
export const MODEL_OF: Record<string, string> = { openai: "gpt-4o-mini", anthropic: "claude-3-5-haiku-latest" };

export async function get(baseUrl: string, path: string, headers: Record<string, string>): Promise<any> {
  const response = await fetch(`${baseUrl}${path}`, { headers });
  if (!response.ok) throw new Error(`GET ${path} answered ${response.status}: ${await response.text()}`);
  return response.json();
}

/** The local D1 database wrangler dev keeps under its --persist-to directory. */
export function usageRows(persistDir: string): UsageRow[] {
  const dir = join(persistDir, "v3/d1/miniflare-D1DatabaseObject");
  const file = readdirSync(dir).find((name) => name.endsWith(".sqlite") && name !== "metadata.sqlite");
  if (!file) throw new Error(`no D1 database in ${dir}`);
  const db = new DatabaseSync(join(dir, file), { readOnly: true });
  try {
    return db.prepare("SELECT * FROM usage_records ORDER BY created_at").all() as unknown as UsageRow[];
  } finally {
    db.close();
  }
}

export async function allEvents(baseUrl: string, headers: Record<string, string>, types: string) {
  const events: any[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 200; page++) {
    const query = `types=${encodeURIComponent(types)}&limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
    const body = await get(baseUrl, `/api/v1/events?${query}`, headers);
    events.push(...body.data);
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  return events;
}

export function describe(tried: Attempt[]): string {
  return tried.map((attempt) => `${attempt.provider} ${JSON.stringify(attempt.step)}`).join(", ");
}

export const isOk = (step: FaultStep): step is Extract<FaultStep, { ok: true }> => "ok" in step;
export const near = (a: number, b: number) => Math.abs(a - b) < 1e-9;
