import { ApiError, type OpenAiErrorMember } from "../lib/problem.ts";
import { BudgetExhaustedError } from "./errors.ts";
import {
  LlmError,
  type TargetFailure,
  type UnfinishedAttemptView,
  type UnfinishedFailedCharge,
  type UnfinishedKind,
  unfinishedAttemptView,
} from "./types.ts";

/**
 * How router errors look over HTTP (the OpenAI-compatible endpoint): problem+json with a stable code.
 *
 * `X-Should-Retry` is the header OpenAI's and Anthropic's SDKs obey before their own rules: they retry
 * every 429 and 5xx by default, which for a spent budget or credentials a provider refuses only repeats
 * the refusal (up to three calls, with waits, for one answer).
 */
const NO_RETRY = { "X-Should-Retry": "false" };

export function llmErrorToApiError(error: unknown): unknown {
  if (error instanceof BudgetExhaustedError) {
    // A budget held by calls in flight (not spent) is worth the SDK's own retry, after Retry-After.
    return new ApiError("RATE_LIMITED", error.message, {
      headers: { "Retry-After": String(error.retryAfterSeconds), ...(error.held ? {} : NO_RETRY) },
      extensions: {
        reason: error.held ? "budget_held" : "budget_exhausted",
        period: error.period,
        metric: error.metric,
        retryable: error.held,
        retry_after_seconds: error.retryAfterSeconds,
        // A call ended by the budget after attempts that timed out or broke was charged them, as a 503 tells.
        ...unfinishedOf(error),
      },
    });
  }
  if (!(error instanceof LlmError)) return error;
  switch (error.kind) {
    case "invalid_request":
    // The prompt is what to change, as for a request fault; `reason` (OpenAI's `err.code`) is Azure's code for it.
    case "content_filter":
      // A content filter may cut an answer that had begun, and a fallback may refuse a prompt an earlier attempt
      // took: those attempts were charged, and are told here as in a 503.
      return new ApiError("BAD_REQUEST", error.message, {
        extensions: { reason: error.kind, ...failuresOf(error), ...unfinishedOf(error) },
      });
    case "budget_exhausted":
      return new ApiError("RATE_LIMITED", error.message, {
        headers: { "Retry-After": "60", ...NO_RETRY },
        extensions: { reason: error.kind },
      });
    default: {
      // The providers (or our credentials for them) failed, not the caller: a 503, which it may retry unless
      // retrying cannot help (credentials the provider refuses, a cancelled call). When every provider asked
      // for a wait, the caller is told the soonest: retrying in a second would only meet their refusals again.
      const waitSeconds =
        error.retryAfterMs === undefined ? undefined : Math.max(1, Math.ceil(error.retryAfterMs / 1000));
      return new ApiError("DEPENDENCY_UNAVAILABLE", error.message, {
        headers: error.retryable ? { "Retry-After": String(waitSeconds ?? 1) } : NO_RETRY,
        extensions: {
          reason: error.kind,
          retryable: error.retryable,
          ...(error.retryable && waitSeconds !== undefined ? { retry_after_seconds: waitSeconds } : {}),
          ...failuresOf(error),
          ...unfinishedOf(error),
        },
      });
    }
  }
}

/** Each target tried and its last failure, as a list a program can read (the detail says the same in words). */
function failuresOf(error: LlmError): { failures?: readonly TargetFailure[] } {
  return error.failures.length > 0 ? { failures: error.failures } : {};
}

/**
 * Attempts that timed out at a provider, or broke mid-answer, were charged though the call failed: told as an
 * answer's `x_mgx.timed_out_attempts` and `interrupted_attempts` tell them, so the caller's bill reconciles with
 * GET /api/v1/usage. (A cancelled call's charge has no one left to tell.)
 */
function unfinishedOf(error: LlmError): {
  timed_out_attempts?: UnfinishedAttemptView[];
  interrupted_attempts?: UnfinishedAttemptView[];
} {
  if (error.kind === "cancelled" || !error.charged?.length) return {};
  const charged = error.charged;
  const told = (kind: UnfinishedKind) =>
    charged
      .filter((charge): charge is UnfinishedFailedCharge => "unfinished" in charge && charge.unfinished === kind)
      .map(unfinishedAttemptView);
  const timedOut = told("timed_out");
  const interrupted = told("interrupted");
  return {
    ...(timedOut.length > 0 ? { timed_out_attempts: timedOut } : {}),
    ...(interrupted.length > 0 ? { interrupted_attempts: interrupted } : {}),
  };
}

/** The OpenAI-compatible routes: chat completions and models, which OpenAI's SDKs call. */
export function isOpenAiCompatiblePath(path: string): boolean {
  return path.startsWith("/api/v1/llm/");
}

/**
 * A problem in OpenAI's terms, the `error` member of the OpenAI-compatible routes' problems (added, not
 * instead: the problem's own members stay). OpenAI's SDKs make `err.message` of its message, so it says
 * which fields are invalid; `err.code` is OpenAI's code where one means the same (a refused key, a spent
 * quota, a rate limit, an unknown model), else the problem's `reason` or its code in lower case; `err.param` the
 * first invalid field, or the problem's `param`.
 */
export function openAiError(error: ApiError): OpenAiErrorMember {
  const fields = error.errors?.map((field) => `${field.path}: ${field.message}`).join("; ");
  const firstPath = error.errors?.[0]?.path;
  // A problem about one field without field errors (a stored response or item not found) names it as `param`.
  const param = typeof error.extensions.param === "string" ? error.extensions.param : firstPath;
  return {
    message: fields ? `${error.message} ${fields}` : error.message,
    ...openAiTypeAndCode(error),
    param: param && param !== "(root)" ? param : null,
  };
}

function openAiTypeAndCode(error: ApiError): { type: string; code: string } {
  const reason = typeof error.extensions.reason === "string" ? error.extensions.reason : undefined;
  const code = reason ?? error.code.toLowerCase();
  // As OpenAI answers a refused key: its SDKs tell it by the status (AuthenticationError) and this code.
  if (error.status === 401) return { type: "invalid_request_error", code: "invalid_api_key" };
  if (error.status === 403) return { type: "permission_error", code };
  if (error.status === 429) {
    // A spent budget is OpenAI's spent quota: waiting a few seconds does not mend it.
    return reason === "budget_exhausted"
      ? { type: "insufficient_quota", code: "insufficient_quota" }
      : { type: "rate_limit_error", code: "rate_limit_exceeded" };
  }
  if (error.status >= 500) return { type: "server_error", code };
  return { type: "invalid_request_error", code };
}
