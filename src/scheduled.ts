import { runAuditRetention } from "./audit/retention.ts";
import type { WorkerEnv } from "./env.ts";
import { reportError } from "./observability/sentry.ts";
import { backgroundLogger } from "./observability/worker-logger.ts";

export type ScheduledJob = (env: WorkerEnv, logger: ReturnType<typeof backgroundLogger>) => Promise<void>;

/** Jobs per cron expression (wrangler.toml [triggers]); later work registers retention and budget jobs here. */
export const SCHEDULED_JOBS: Record<string, ScheduledJob[]> = {
  "*/5 * * * *": [],
  "17 3 * * *": [(env, logger) => runAuditRetention(env, logger)],
};

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
