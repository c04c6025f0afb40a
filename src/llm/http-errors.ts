import { ApiError } from "../lib/problem.ts";
import { BudgetExhaustedError } from "./errors.ts";
import { LlmError } from "./types.ts";

/** How router errors look over HTTP (the OpenAI-compatible endpoint): problem+json with a stable code. */
export function llmErrorToApiError(error: unknown): unknown {
  if (error instanceof BudgetExhaustedError) {
    return new ApiError("RATE_LIMITED", error.message, {
      headers: { "Retry-After": String(error.retryAfterSeconds) },
      extensions: { reason: "budget_exhausted", period: error.period, metric: error.metric, retryable: false },
    });
  }
  if (!(error instanceof LlmError)) return error;
  switch (error.kind) {
    case "invalid_request":
      return new ApiError("BAD_REQUEST", error.message, { extensions: { reason: error.kind } });
    case "budget_exhausted":
      return new ApiError("RATE_LIMITED", error.message, {
        headers: { "Retry-After": "60" },
        extensions: { reason: error.kind },
      });
    default:
      // The providers (or our credentials for them) failed, not the caller: a 503 it may retry.
      return new ApiError("DEPENDENCY_UNAVAILABLE", error.message, {
        headers: { "Retry-After": "1" },
        extensions: { reason: error.kind, retryable: error.retryable },
      });
  }
}
