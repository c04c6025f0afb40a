import type { AppConfig } from "../env.ts";
import { buildAdapters, providerWithSettings } from "../llm/adapters/index.ts";
import { parseChain, unpricedEntries } from "../llm/routing.ts";

/** Readiness: can this Worker reach what a request needs? Each check is timed and bounded. */

export interface CheckResult {
  ok: boolean;
  latency_ms: number;
  error?: string;
  /** What works, but not as configured (a check that passes). */
  warning?: string;
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

/**
 * Can LLM_DEFAULT_CHAIN serve a call here? A chain of providers this deployment lacks (secrets not put) failed
 * every call of a workspace without its own chain, each refused as the caller's fault, while /ready said ready.
 * Providers it names but lacks, beside one it has, are a warning: their fallback is gone. So is, in
 * production, a chain with `simulated` (the default when LLM_DEFAULT_CHAIN is unset): its answers are
 * placeholders, answered 200 to callers that may not read `x_mgx.simulated`; and a model the price table lacks.
 */
export function defaultChainCheck(config: AppConfig): CheckResult {
  const adapters = buildAdapters(config);
  const chain = parseChain(config.LLM_DEFAULT_CHAIN);
  const providers = [...new Set(chain.map((target) => target.provider))];
  const lacking = providers.filter((provider) => !adapters.has(provider));
  const warnings: string[] = [];
  if (lacking.length > 0) {
    const told = `LLM_DEFAULT_CHAIN names providers not configured here: ${lacking
      .map(providerWithSettings)
      .join(", ")}`;
    if (lacking.length === providers.length) {
      return { ok: false, latency_ms: 0, error: `${told}; a call without a workspace chain has no provider` };
    }
    warnings.push(`${told}; skipped`);
  }
  // As a workspace's chain naming one is logged when set: a typo (a 404 at every call), or a model newer than
  // the price table, whose calls are charged a guess; LLM_DEFAULT_CHAIN states no price of its own.
  const unpriced = unpricedEntries(chain.filter((target) => adapters.has(target.provider)));
  if (unpriced.length > 0) {
    warnings.push(
      `LLM_DEFAULT_CHAIN names models the price table lacks: ${unpriced.join(", ")}; charged at the unknown-model rate`,
    );
  }
  if (config.ENVIRONMENT === "production" && providers.includes("simulated")) {
    warnings.push("LLM_DEFAULT_CHAIN names simulated (its default when unset): the calls it serves get placeholders");
  }
  return warnings.length > 0 ? { ok: true, latency_ms: 0, warning: warnings.join("; ") } : { ok: true, latency_ms: 0 };
}

/** Under this, an attempt rarely sees a provider's first token: an LLM_ATTEMPT_TIMEOUT_MS given in seconds (`60`). */
const SHORTEST_LIKELY_ATTEMPT_MS = 1_000;

/**
 * LLM_ATTEMPT_TIMEOUT_MS taken for seconds (`60`, 60 ms) timed out nearly every call, each attempt charged the
 * prompt it sent (a provider bills a request whose client stopped waiting), answered 503 "did not answer in
 * time", while /ready said ready. Tests set short ones on purpose: a warning, not a refusal.
 */
export function attemptTimeoutCheck(config: AppConfig): CheckResult {
  const ms = config.LLM_ATTEMPT_TIMEOUT_MS;
  return ms >= SHORTEST_LIKELY_ATTEMPT_MS
    ? { ok: true, latency_ms: 0 }
    : {
        ok: true,
        latency_ms: 0,
        warning: `LLM_ATTEMPT_TIMEOUT_MS is ${ms} ms (milliseconds, not seconds): most calls will time out, each attempt charged its prompt`,
      };
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
  const checks = {
    d1,
    durable_objects: durableObjects,
    queue,
    r2,
    llm_default_chain: defaultChainCheck(config),
    llm_attempt_timeout: attemptTimeoutCheck(config),
  };
  return { ready: Object.values(checks).every((check) => check.ok), checks };
}
