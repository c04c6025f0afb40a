import type { TaskType } from "../db/schema.ts";
import type { AppConfig } from "../env.ts";

/** Execution settings for tasks: timeouts, retries, steps and artifact limits. */

/** A run is stopped after this long; per task type, since documentation runs are short and test runs are not. */
export const DEFAULT_TASK_TIMEOUT_SECONDS: Record<TaskType, number> = {
  code_generation: 600,
  refactoring: 600,
  testing: 600,
  documentation: 300,
};

/** The run timeout of a task type: the deployment's `TASK_TIMEOUT_SECONDS` override, else the default. */
export function taskTimeoutSeconds(config: Pick<AppConfig, "TASK_TIMEOUT_SECONDS">, type: TaskType): number {
  return config.TASK_TIMEOUT_SECONDS[type] ?? DEFAULT_TASK_TIMEOUT_SECONDS[type];
}

/** Deliveries after the first before the queue moves a message to the dead-letter queue (wrangler.toml `max_retries`). */
export const QUEUE_MAX_RETRIES = 3;

/**
 * The longest a retry waits for providers that asked for a wait (Retry-After). The task keeps its running
 * slot meanwhile (its lease is renewed for the delay), so a provider's hour-long wait must not hold it that long.
 */
export const RETRY_AFTER_MAX_SECONDS = 900;

/** Retry backoff: full jitter over an exponential ceiling (`random(0, min(max, base·2^retry))`). */
export const RETRY_BASE_DELAY_SECONDS = 2;
export const RETRY_MAX_DELAY_SECONDS = 120;

/** A run still marked running this long after its timeout belongs to a consumer that died: another may take over. */
export const STALE_RUN_GRACE_MS = 60_000;

/** Agent loop: LLM turns per run, unless `agent_config.max_steps` asks for fewer (or up to the hard cap). */
export const DEFAULT_MAX_STEPS = 12;
export const MAX_STEPS_CAP = 50;

/** How often a running agent re-reads the task row for a cancellation made in another isolate. */
export const CANCEL_POLL_INTERVAL_MS = 1_000;

export const ARTIFACT_LIMITS = {
  /** One artifact's content. */
  maxArtifactBytes: 64 * 1024 * 1024,
  /** All of one task's artifacts together. */
  maxTaskBytes: 256 * 1024 * 1024,
  maxPathChars: 512,
  maxFilesPerTask: 500,
};
export type ArtifactLimits = typeof ARTIFACT_LIMITS;

/** `random(0, min(max, base·2^(attempt-1)))` seconds, at least 1 (the queue's unit is whole seconds). */
export function retryDelaySeconds(attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(RETRY_MAX_DELAY_SECONDS, RETRY_BASE_DELAY_SECONDS * 2 ** Math.max(0, attempt - 1));
  return Math.max(1, Math.round(random() * ceiling));
}
