import { env, exports } from "cloudflare:workers";
import { createDb } from "../../../src/db/client.ts";
import { deadLetters, tasks } from "../../../src/db/schema.ts";
import { checkEnv } from "../../../src/env.ts";
import { newId } from "../../../src/lib/ids.ts";
import { Logger } from "../../../src/lib/logger.ts";
import type { CallContext, ChatRequest, ChatResult, LlmRouter } from "../../../src/llm/types.ts";
import { artifactUpserts, TaskFiles } from "../../../src/tasks/artifacts.ts";
import type { TaskRow } from "../../../src/tasks/views.ts";

/** Test doubles for the task consumer: a scripted LLM router and tasks written straight to D1. */

export const BASE = "http://edge.test";
export const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));

export function appConfig() {
  const checked = checkEnv(env);
  if (!checked.ok) throw new Error("test environment is invalid");
  return checked.config;
}

export const quietLogger = new Logger({ level: "error", sampleRate: 1 }, {}, true);

export type Step = (request: ChatRequest, context: CallContext, call: number) => ChatResult | Promise<ChatResult>;

export interface ScriptedRouter extends LlmRouter {
  calls: { request: ChatRequest; context: CallContext }[];
}

/** Answers each call with the next step (the last step repeats). */
export function scriptedRouter(...steps: Step[]): ScriptedRouter {
  const calls: ScriptedRouter["calls"] = [];
  return {
    calls,
    async chat(request, context) {
      calls.push({ request, context });
      const step = steps[Math.min(calls.length - 1, steps.length - 1)];
      return step(request, context, calls.length);
    },
  };
}

const usage = { prompt_tokens: 100, completion_tokens: 20, total_tokens: 120 };

export function toolCalls(...calls: { name: string; args: Record<string, unknown> }[]): Step {
  return () => ({
    message: {
      role: "assistant",
      content: null,
      tool_calls: calls.map((call, index) => ({
        id: `call_${index}_${crypto.randomUUID().slice(0, 8)}`,
        type: "function" as const,
        function: { name: call.name, arguments: JSON.stringify(call.args) },
      })),
    },
    finish_reason: "tool_calls",
    usage,
    usage_estimated: false,
    cost_usd: 0.001,
    provider: "simulated",
    model: "sim-test",
    simulated: true,
    attempts: 1,
  });
}

export function answer(text: string): Step {
  return () => ({
    message: { role: "assistant", content: text },
    finish_reason: "stop",
    usage,
    usage_estimated: false,
    cost_usd: 0.001,
    provider: "simulated",
    model: "sim-test",
    simulated: true,
    attempts: 1,
  });
}

/** A task row as admission would leave it, without sending it anywhere (the test delivers it). */
export async function insertTask(workspaceId: string, overrides: Partial<TaskRow> = {}): Promise<TaskRow> {
  const db = createDb(env.DB);
  const nowIso = new Date().toISOString();
  const row = {
    id: newId("task"),
    workspaceId,
    title: "Write a hello world",
    description: "A small program.",
    type: "code_generation" as const,
    priority: "medium" as const,
    status: "queued" as const,
    queuedAt: nowIso,
    createdAt: nowIso,
    updatedAt: nowIso,
    ...overrides,
  };
  const [inserted] = await db.insert(tasks).values(row).returning();
  return inserted;
}

/** A dead-lettered task and its letter, recorded at `createdAt` (the stored form: milliseconds, `Z`). */
export async function insertDeadLetter(
  workspaceId: string,
  createdAt: string,
): Promise<{ id: string; taskId: string }> {
  const task = await insertTask(workspaceId, {
    status: "dead_lettered",
    queuedAt: null,
    finishedAt: createdAt,
    error: { type: "retries_exhausted", message: "Failed 4 deliveries." },
  });
  const id = newId("deadLetter");
  await createDb(env.DB)
    .insert(deadLetters)
    .values({
      id,
      workspaceId,
      taskId: task.id,
      messageId: `msg-${id}`,
      queue: "tasks",
      attempts: 4,
      errorType: "retries_exhausted",
      errorMessage: "Failed 4 deliveries.",
      payload: taskBody(workspaceId, task.id),
      createdAt,
    });
  return { id, taskId: task.id };
}

export function taskBody(workspaceId: string, taskId: string) {
  return { v: 1, task_id: taskId, workspace_id: workspaceId };
}

export async function eventsOf(headers: Record<string, string>, taskId: string) {
  const response = await fetcher(`${BASE}/api/v1/events?channels=task:${taskId}&limit=100`, { headers });
  const body = (await response.json()) as { data: { event_type: string; data: Record<string, unknown> }[] };
  return body.data;
}

/** A task submitted through the API (slow, so it stays pending, queued or running for a while). */
export async function submitTask(headers: Record<string, string>): Promise<string> {
  const response = await fetcher(`${BASE}/api/v1/tasks`, {
    method: "POST",
    headers: { ...headers, "Content-Type": "application/json" },
    body: JSON.stringify({
      title: "Fixture task",
      type: "documentation",
      agent_config: { model: "simulated:sim-1?latency_ms=5000" },
    }),
  });
  if (response.status !== 202) throw new Error(`submitting a task answered ${response.status}`);
  return ((await response.json()) as { id: string }).id;
}

/** A task with one stored artifact, written as the consumer would. */
export async function insertArtifact(workspaceId: string): Promise<string> {
  const task = await insertTask(workspaceId, { status: "completed" });
  const files = new TaskFiles({
    bucket: env.ARTIFACTS,
    workspaceId,
    taskId: task.id,
    runId: "run_fixture",
    existing: [],
  });
  const { row } = await files.write("notes/readme.md", "# hello\n");
  await env.DB.batch(artifactUpserts(env.DB, [row]));
  return row.id;
}
