import { anchorRecentChains } from "./audit/anchor.ts";
import { runAuditRetention } from "./audit/retention.ts";
import { type AppConfig, checkEnv, type WorkerEnv } from "./env.ts";
import { deliverParkedEvents } from "./events/parked.ts";
import { purgeExpiredResponses } from "./llm/responses-store.ts";
import { reportError } from "./observability/sentry.ts";
import { backgroundLogger } from "./observability/worker-logger.ts";

export type ScheduledJob = (env: WorkerEnv, logger: ReturnType<typeof backgroundLogger>) => Promise<void>;

/** Jobs per cron expression (wrangler.toml [triggers]). */
export const SCHEDULED_JOBS: Record<string, ScheduledJob[]> = {
  // Every minute: a subscriber waits at most that long for events parked while its hub was down (one
  // indexed read when nothing is parked).
  "* * * * *": [
    async (env, logger) => {
      await deliverParkedEvents(checkedConfig(env), logger);
    },
  ],
  "*/5 * * * *": [
    (env, logger) => anchorRecentChains(checkedConfig(env), logger),
    // Stored responses past their 30 days, in bounded batches (one indexed read when none is): often, so that
    // a busy day's expiries never pile up behind a daily run's bound.
    async (env, logger) => {
      await purgeExpiredResponses(env.DB as D1Database, logger);
    },
  ],
  "17 3 * * *": [(env, logger) => runAuditRetention(env, logger)],
};

function checkedConfig(env: WorkerEnv): AppConfig {
  const checked = checkEnv(env);
  if (!checked.ok) throw new Error(`bad environment: ${checked.problems.map((problem) => problem.path).join(", ")}`);
  return checked.config;
}

export async function handleScheduled(
  controller: ScheduledController,
  env: WorkerEnv,
  ctx: ExecutionContext,
): Promise<void> {
  const logger = backgroundLogger(env, { cron: controller.cron });
  const jobs = SCHEDULED_JOBS[controller.cron] ?? [];
  logger.info("scheduled run started", { jobs: jobs.length });
  const results = await Promise.allSettled(jobs.map((job) => job(env, logger)));
  for (const result of results) {
    if (result.status === "rejected") {
      logger.error("scheduled job failed", { error: result.reason });
      reportError(env, ctx, result.reason, { tags: { cron: controller.cron } });
    }
  }
}
