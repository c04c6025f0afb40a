import type { AppConfig } from "../env.ts";

/** Readiness: can this Worker reach what a request needs? Each check is timed and bounded. */

export interface CheckResult {
  ok: boolean;
  latency_ms: number;
  error?: string;
}

export type ReadinessReport = { ready: boolean; checks: Record<string, CheckResult> };

const CHECK_TIMEOUT_MS = 2_000;
/** A fixed object name so readiness probes never touch a workspace's own limiter. */
export const READINESS_OBJECT_NAME = "__readiness__";

async function timed(check: () => Promise<unknown>): Promise<CheckResult> {
  const startedAtMs = Date.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      check(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS);
      }),
    ]);
    return { ok: true, latency_ms: Date.now() - startedAtMs };
  } catch (error) {
    return {
      ok: false,
      latency_ms: Date.now() - startedAtMs,
      error: error instanceof Error ? error.message : String(error),
    };
  } finally {
    clearTimeout(timer);
  }
}

export async function checkReadiness(config: AppConfig): Promise<ReadinessReport> {
  const [d1, durableObjects, queue, r2] = await Promise.all([
    timed(() => config.DB.prepare("SELECT 1 AS ok").first()),
    timed(async () => {
      const answer = await config.WORKSPACE_LIMITER.getByName(READINESS_OBJECT_NAME).ping();
      if (!answer.ok) throw new Error("limiter did not answer ok");
    }),
    // A send would enqueue real work; the producer binding's presence is what can be checked.
    timed(async () => {
      if (typeof config.TASKS_QUEUE.send !== "function") throw new Error("TASKS_QUEUE is not a queue producer");
    }),
    timed(() => config.ARTIFACTS.head(READINESS_OBJECT_NAME)),
  ]);
  const checks = { d1, durable_objects: durableObjects, queue, r2 };
  return { ready: Object.values(checks).every((check) => check.ok), checks };
}
