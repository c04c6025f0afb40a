import { checkEnv, type WorkerEnv } from "../env.ts";
import { type LogContext, Logger } from "../lib/logger.ts";
import { continueOrStartTrace } from "../lib/trace-context.ts";

/** A logger for work outside an HTTP request (queue batches, cron), with a fresh trace id. */
export function backgroundLogger(env: WorkerEnv, context: LogContext = {}): Logger {
  const checked = checkEnv(env);
  const traceIds = continueOrStartTrace(null);
  return new Logger(
    {
      level: checked.ok ? checked.config.LOG_LEVEL : "info",
      sampleRate: checked.ok ? checked.config.LOG_SAMPLE_RATE : 1,
    },
    { trace_id: traceIds.traceId, span_id: traceIds.spanId, ...context },
  );
}
