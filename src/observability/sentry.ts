import { Toucan } from "toucan-js";
import { checkEnv, type WorkerEnv } from "../env.ts";
import { NOT_SECRET_PARAM_NAME, redact, redactText } from "../lib/redact.ts";

/** Headers worth seeing in an error report; Authorization and cookies never leave. */
const ALLOWED_HEADERS = ["user-agent", "content-type", "content-length", "x-request-id", "traceparent", "cf-ray"];

export interface ErrorReportContext {
  request?: Request;
  tags?: Record<string, string | undefined>;
  extra?: Record<string, unknown>;
}

/**
 * Sends an error to Sentry when SENTRY_DSN is set; a no-op otherwise. The send
 * runs in `waitUntil`, so it never delays the response.
 */
export function reportError(
  env: WorkerEnv,
  executionCtx: Pick<ExecutionContext, "waitUntil"> | undefined,
  error: unknown,
  context: ErrorReportContext = {},
): void {
  const checked = checkEnv(env);
  if (!checked.ok || !checked.config.SENTRY_DSN) return;
  const { config } = checked;
  const sentry = new Toucan({
    dsn: config.SENTRY_DSN,
    context: executionCtx,
    request: context.request,
    environment: config.SENTRY_ENVIRONMENT ?? config.ENVIRONMENT,
    release: config.SENTRY_RELEASE,
    requestDataOptions: { allowedHeaders: ALLOWED_HEADERS, allowedSearchParams: NOT_SECRET_PARAM_NAME },
    // What an error says may quote a credential (a provider's answer echoing the key it refused, a header in a
    // message): its message, its exception's text, the extras and the breadcrumbs are redacted as log lines are.
    beforeSend: (event) => {
      if (event.message) event.message = redactText(event.message);
      for (const exception of event.exception?.values ?? []) {
        if (exception.value) exception.value = redactText(exception.value);
      }
      if (event.extra) event.extra = redact(event.extra) as Record<string, unknown>;
      for (const breadcrumb of event.breadcrumbs ?? []) {
        if (breadcrumb.message) breadcrumb.message = redactText(breadcrumb.message);
      }
      return event;
    },
  });
  for (const [name, value] of Object.entries(context.tags ?? {})) if (value) sentry.setTag(name, value);
  if (context.extra) sentry.setExtras(context.extra);
  sentry.captureException(error);
}
