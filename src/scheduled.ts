import { anchorRecentChains } from "./audit/anchor.ts";
import { runAuditRetention } from "./audit/retention.ts";
import { type AppConfig, checkEnv, type WorkerEnv } from "./env.ts";
import { deliverParkedEvents } from "./events/parked.ts";
import { purgeExpiredResponses } from "./llm/responses-store.ts";
import { reportError } from "./observability/sentry.ts";
import { backgroundLogger } from "./observability/worker-logger.ts";

export type ScheduledJob = (env: WorkerEnv, logger: ReturnType<typeof backgroundLogger>) => Promise<void>;

/** A job and the name its log lines and error reports carry (a cron runs several). */
export interface NamedScheduledJob {
  name: string;
  run: ScheduledJob;
}

/** Jobs per cron expression (wrangler.toml [triggers]). */
export const SCHEDULED_JOBS: Record<string, NamedScheduledJob[]> = {
  // Every minute: a subscriber waits at most that long for events parked while its hub was down (one
  // indexed read when nothing is parked).
  "* * * * *": [
    {
      name: "deliver-parked-events",
      run: async (env, logger) => {
        await deliverParkedEvents(checkedConfig(env), logger);
      },
    },
  ],
  "*/5 * * * *": [
    { name: "anchor-audit-chains", run: (env, logger) => anchorRecentChains(checkedConfig(env), logger) },
    // Stored responses past their 30 days, in bounded batches (one indexed read when none is): often, so that
    // a busy day's expiries never pile up behind a daily run's bound.
    {
      name: "purge-expired-responses",
      run: async (env, logger) => {
        await purgeExpiredResponses(env.DB as D1Database, logger);
      },
    },
  ],
  "17 3 * * *": [{ name: "audit-retention", run: (env, logger) => runAuditRetention(env, logger) }],
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
  const jobs = SCHEDULED_JOBS[controller.cron];
  if (!jobs) {
    // A trigger in wrangler.toml without its jobs here: nothing runs, and it should not go unnoticed.
    logger.warn("no scheduled jobs for this cron", { known_crons: Object.keys(SCHEDULED_JOBS) });
    return;
  }
  logger.info("scheduled run started", { jobs: jobs.length });
  // Each job on its own: one that fails never keeps the others from running.
  await Promise.all(
    jobs.map(async (job) => {
      const jobLogger = logger.child({ job: job.name });
      const startedMs = Date.now();
      try {
        await job.run(env, jobLogger);
        jobLogger.info("scheduled job finished", { duration_ms: Date.now() - startedMs });
      } catch (error) {
        jobLogger.error("scheduled job failed", { error, duration_ms: Date.now() - startedMs });
        reportError(env, ctx, error, { tags: { cron: controller.cron, job: job.name } });
      }
    }),
  );
}
