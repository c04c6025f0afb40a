import { z } from "@hono/zod-openapi";
import { PROBLEMS, type ProblemCode } from "./problem.ts";

/** Shared OpenAPI pieces: the problem schema and the standard error responses. */

/**
 * An attempt that ended unfinished while a provider had the request (timed out, or broke mid-answer), and what it
 * was charged (a usage row of its own).
 */
export const UnfinishedAttemptSchema = z.object({
  provider: z.string(),
  model: z.string(),
  prompt_tokens: z.number().int(),
  completion_tokens: z.number().int(),
  cost_usd: z.number(),
  error: z
    .object({
      code: z.string().openapi({
        description:
          "`timeout` (no answer, or no next piece of a streamed one, within the attempt's timeout), `connection` (the connection dropped), or the error type the provider sent in its stream (`server_error`, `overloaded_error`, `content_filter`…).",
      }),
      message: z.string().openapi({ description: "What happened, in words, as the call's `failures` tell it." }),
    })
    .openapi({ description: "Why the attempt ended unfinished." }),
});

export const ProblemSchema = z
  .object({
    type: z.string().openapi({ example: "/problems/validation-failed" }),
    title: z.string().openapi({ example: "Validation failed" }),
    status: z.number().int().openapi({ example: 422 }),
    detail: z.string().openapi({ example: "The request body is invalid." }),
    code: z.enum(Object.keys(PROBLEMS) as [ProblemCode, ...ProblemCode[]]),
    request_id: z.string().openapi({ example: "req_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3" }),
    errors: z
      .array(z.object({ path: z.string(), message: z.string() }))
      .optional()
      .openapi({ description: "Field errors, for 422 responses." }),
    // Members some problems add (RFC 9457 extensions); a client may rely on them where present.
    reason: z.string().optional().openapi({
      description:
        "Why, in a word a program can branch on, e.g. `budget_exhausted`, `all_providers_failed`, `model_not_found`.",
    }),
    retryable: z.boolean().optional().openapi({
      description: "Whether the same request may succeed later (see also `Retry-After`, `X-Should-Retry`).",
    }),
    retry_after_seconds: z
      .number()
      .int()
      .optional()
      .openapi({ description: "429, and a 503 whose providers asked for a wait: as `Retry-After`." }),
    period: z
      .enum(["daily", "monthly"])
      .optional()
      .openapi({ description: "429 `budget_exhausted` or `budget_held`: the budget's period." }),
    metric: z
      .enum(["tokens", "cost_usd"])
      .optional()
      .openapi({ description: "429 `budget_exhausted` or `budget_held`: what the budget counts." }),
    timed_out_attempts: z.array(UnfinishedAttemptSchema).optional().openapi({
      description:
        "503 (or 400 `invalid_request`, `content_filter`, or 429 `budget_exhausted`) of the LLM routes: attempts that timed out while a provider had the request, each charged the prompt it read and what it had written of a long answer asked as a stream (estimated), as an answer's `x_mgx.timed_out_attempts`.",
    }),
    interrupted_attempts: z.array(UnfinishedAttemptSchema).optional().openapi({
      description:
        "503 (or 400 `invalid_request`, `content_filter`, or 429 `budget_exhausted`) of the LLM routes: attempts whose answer broke after it began (the connection dropped, or the provider sent an error in its stream), each charged the prompt it read and what it had written (estimated), as an answer's `x_mgx.interrupted_attempts`.",
    }),
    param: z.string().optional().openapi({
      description:
        "400 of the Responses API routes (`previous_response_not_found`, `item_not_found`, `conversation_too_long`): the request field at fault, as `error.param`.",
    }),
    limit: z
      .number()
      .int()
      .optional()
      .openapi({ description: "429 of the rate limiter: the refusing bucket's burst, as `q` in `RateLimit-Policy`." }),
    required_scope: z.string().optional().openapi({ description: "403: the scope the credential lacks." }),
    blocked: z.boolean().optional().openapi({
      description:
        "429 (an address after repeated failed authentications) or 403 (a credential after repeated requests for other workspaces' ids): refused whatever it sends until the block lapses.",
    }),
    task_status: z
      .string()
      .optional()
      .openapi({ description: "409 of a task's cancel: the task's status, already final (`completed`, `failed`, …)." }),
    checks: z.record(z.string(), z.unknown()).optional().openapi({
      description:
        "503 of `/ready`: each dependency's check (`ok`, `latency_ms`, `error`, `warning`), as the 200 answer reports them.",
    }),
    max_bytes: z.number().int().optional().openapi({ description: "413: the largest body accepted, in bytes." }),
    did_you_mean: z
      .string()
      .optional()
      .openapi({ description: "404: the path of the route the request was probably meant for." }),
    failures: z
      .array(
        z.object({
          provider: z.string(),
          model: z.string(),
          attempts: z.number().int(),
          status: z.number().int().nullable(),
          code: z.string(),
          message: z.string(),
        }),
      )
      .optional()
      .openapi({ description: "LLM calls that failed on every target: each target tried, with its last failure." }),
    error: z
      .object({
        message: z.string(),
        type: z.string().openapi({
          description:
            "`invalid_request_error` (also for a refused key, code `invalid_api_key`, as OpenAI answers it), `permission_error` (403), `rate_limit_error`, `insufficient_quota` (a spent budget) or `server_error` (5xx).",
        }),
        code: z.string().nullable().openapi({
          description:
            "OpenAI's code where one fits (`invalid_api_key`, `insufficient_quota`, `rate_limit_exceeded`, `model_not_found`), else `reason`, else `code` in lower case.",
        }),
        param: z.string().nullable().openapi({ description: "The first invalid field's path, where one is known." }),
      })
      .optional()
      .openapi({
        description:
          "Only on the OpenAI-compatible routes (`/api/v1/llm/*`): the problem as OpenAI's error object, which OpenAI's SDKs read for `err.message`, `err.type`, `err.code` and `err.param`. Its `message` is `detail`, followed by the field errors.",
      }),
  })
  .openapi("Problem", { description: "RFC 9457 problem details." });

const PROBLEM_CONTENT = { "application/problem+json": { schema: ProblemSchema } };

/** A response header as the document names it (a type, not an interface: OpenAPI's HeaderObject takes `x-` keys). */
export type HeaderDoc = {
  description: string;
  required?: boolean;
  schema: { type: "string" | "integer" | "boolean" };
};

/** For a route that says more than the shared `Retry-After` (src/docs/shared-headers.ts) about when it comes. */
export const RETRY_AFTER_HEADER: HeaderDoc = {
  description: "Seconds to wait before trying again.",
  schema: { type: "integer" },
};

/**
 * Problem responses keyed by status, for a route's `responses`. The headers
 * every problem of a status carries (`Retry-After` on 429, …) are added to the
 * whole document at once, by src/docs/shared-headers.ts.
 */
export function problemResponses(...codes: ProblemCode[]) {
  const responses: Record<number, { description: string; content: typeof PROBLEM_CONTENT }> = {};
  for (const code of codes) {
    const { status, title } = PROBLEMS[code];
    const existing = responses[status];
    responses[status] = {
      description: existing ? `${existing.description}; ${title}` : title,
      content: PROBLEM_CONTENT,
    };
  }
  return responses;
}

/**
 * What every authenticated route may answer, whatever it does: missing or bad credentials, a scope it lacks,
 * a rate limit, a dependency down. Spread beside the route's own (`{ ...API_PROBLEMS, ...problemResponses(…) }`):
 * their statuses differ.
 */
export const API_PROBLEMS = problemResponses("UNAUTHENTICATED", "FORBIDDEN", "RATE_LIMITED", "DEPENDENCY_UNAVAILABLE");

export const BEARER_AUTH = "bearerAuth";

/** A required JSON request body, for a route's `request.body`. */
export function jsonBody<T extends z.ZodType>(schema: T) {
  return { required: true, content: { "application/json": { schema } } };
}

/** A JSON response, for a route's `responses`. */
export function jsonResponse<T extends z.ZodType>(description: string, schema: T) {
  return { description, content: { "application/json": { schema } } };
}
