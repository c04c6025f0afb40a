import { PROBLEMS, type ProblemCode, problemType } from "../lib/problem.ts";
import type { RouteCallers } from "../middleware/auth.ts";
import { METHODS_WITH_BODY } from "../middleware/body.ts";

/**
 * The problem responses the shared middleware gives, written into every
 * operation of the generated document in one pass, so no route can forget
 * one. A status a route lists itself keeps the route's description.
 *
 * What the middleware does (src/app.ts mounts it), and so what the document says:
 * - 413 and 415: `limitBodySize` and `requireJsonBody` check the body of every
 *   POST, PUT, PATCH and DELETE, whether or not the operation reads one (a
 *   body it ignores is still refused for its size or media type). GET and
 *   HEAD bodies are never read, so never refused.
 * - 400: a POST, PUT, PATCH or DELETE body that does not parse: the JSON
 *   validator of an operation with a JSON request body, or for one that
 *   reads none `refuseMalformedUnreadBodies` (an empty body is none).
 * - 401, 429 and 503: everything under /api/v1 is authenticated
 *   (`authenticateApi`) and counted (`rateLimit`: 429 when a bucket is empty
 *   or the client is blocked, 503 when the limiter cannot be reached).
 * - 422: every operation under /api/v1 checks its query (`refuseUndeclaredQueries`): a parameter it does not
 *   take, declared or not, is refused.
 * - 403: an operation behind a guard (`requireScope`, `requireOperator`),
 *   when the credential lacks the scope or is of the other kind.
 */

type Reference = { $ref: string };
interface ProblemResponseObject {
  description: string;
  content: { "application/problem+json": { schema: Reference; example: Record<string, unknown> } };
}
interface OperationObject {
  responses?: Record<string, object>;
}
interface Document {
  paths?: Record<string, object>;
}

const PROBLEM_SCHEMA: Reference = { $ref: "#/components/schemas/Problem" };
const METHODS = new Set(["get", "put", "post", "delete", "options", "head", "patch", "trace"]);

/** The problems the middleware may answer one operation with. */
export function sharedProblemsOf(method: string, path: string, callers: RouteCallers | undefined): ProblemCode[] {
  const codes: ProblemCode[] = [];
  // An operation that reads no body still refuses one that is not JSON (refuseMalformedUnreadBodies).
  if (METHODS_WITH_BODY.has(method.toUpperCase()))
    codes.push("MALFORMED_JSON", "PAYLOAD_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE");
  if (path.startsWith("/api/v1/")) {
    codes.push("UNAUTHENTICATED", "RATE_LIMITED", "DEPENDENCY_UNAVAILABLE", "VALIDATION_FAILED");
    if (callers) codes.push("FORBIDDEN");
  }
  return codes;
}

function problemResponse(code: ProblemCode): ProblemResponseObject {
  const { status, title, description } = PROBLEMS[code];
  return {
    description: `${title}. ${description}`,
    content: {
      "application/problem+json": {
        schema: PROBLEM_SCHEMA,
        example: {
          type: problemType(code),
          title,
          status,
          detail: description,
          code,
          request_id: "req_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3",
        },
      },
    },
  };
}

/** Statuses in order, then `default`: the order a reader scans them in. */
function byStatus(responses: Record<string, object>): Record<string, object> {
  return Object.fromEntries(Object.entries(responses).sort(([a], [b]) => a.localeCompare(b)));
}

/** Adds, to every operation, the problem responses the middleware may give it that it does not list. */
export function withSharedProblems<D extends Document>(doc: D, callersByOperation: Map<string, RouteCallers>): D {
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const [method, value] of Object.entries(item as Record<string, unknown>)) {
      if (!METHODS.has(method)) continue;
      const operation = value as OperationObject;
      const responses = { ...operation.responses };
      for (const code of sharedProblemsOf(method, path, callersByOperation.get(`${method} ${path}`))) {
        responses[String(PROBLEMS[code].status)] ??= problemResponse(code);
      }
      operation.responses = byStatus(responses);
    }
  }
  return doc;
}
