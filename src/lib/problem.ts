/**
 * RFC 9457 problem details. Every error the API returns is one of these codes;
 * the catalogue is also served at `/problems/{slug}` so each `type` URI resolves.
 */

export const PROBLEMS = {
  BAD_REQUEST: { status: 400, title: "Bad request", description: "The request could not be understood." },
  MALFORMED_JSON: { status: 400, title: "Malformed JSON", description: "The body is not valid JSON." },
  UNAUTHENTICATED: {
    status: 401,
    title: "Invalid credentials",
    description: "Send `Authorization: Bearer <api key or JWT>`.",
  },
  FORBIDDEN: { status: 403, title: "Forbidden", description: "The credentials do not allow this action." },
  NOT_FOUND: { status: 404, title: "Not found", description: "No such resource, or it is not yours." },
  METHOD_NOT_ALLOWED: {
    status: 405,
    title: "Method not allowed",
    description: "The path exists but not with this method; see the `Allow` header.",
  },
  CONFLICT: { status: 409, title: "Conflict", description: "The request conflicts with the resource's state." },
  PAYLOAD_TOO_LARGE: { status: 413, title: "Payload too large", description: "The body exceeds the size limit." },
  RANGE_NOT_SATISFIABLE: {
    status: 416,
    title: "Range not satisfiable",
    description: "The requested byte range starts past the end; `Content-Range` gives the size.",
  },
  UNSUPPORTED_MEDIA_TYPE: {
    status: 415,
    title: "Unsupported media type",
    description: "Bodies must be sent as `Content-Type: application/json`.",
  },
  VALIDATION_FAILED: {
    status: 422,
    title: "Validation failed",
    description: "The request is well-formed but some fields are invalid; see `errors`.",
  },
  RATE_LIMITED: {
    status: 429,
    title: "Too many requests",
    description: "A rate limit or budget was reached; retry after `Retry-After` seconds.",
  },
  INTERNAL: { status: 500, title: "Internal error", description: "Something failed on our side; it was reported." },
  BAD_ENVIRONMENT: {
    status: 500,
    title: "Server misconfigured",
    description: "The deployment's environment is invalid; the operator must fix its configuration.",
  },
  DEPENDENCY_UNAVAILABLE: {
    status: 503,
    title: "Dependency unavailable",
    description: "A storage or upstream dependency is not reachable right now.",
  },
} as const satisfies Record<string, { status: number; title: string; description: string }>;

export type ProblemCode = keyof typeof PROBLEMS;

export interface FieldError {
  path: string;
  message: string;
}

export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: ProblemCode;
  request_id: string;
  errors?: FieldError[];
  /** Only on the OpenAI-compatible routes (/api/v1/llm/*), for OpenAI's SDKs: see `openAiError`. */
  error?: OpenAiErrorMember;
  [extension: string]: unknown;
}

/**
 * OpenAI's error object. The official SDKs build their exception from a body's `error` member (its
 * message, type, code and param); without it they show the whole body as the message.
 */
export interface OpenAiErrorMember {
  message: string;
  type: string;
  code: string | null;
  param: string | null;
}

export function problemSlug(code: ProblemCode): string {
  return code.toLowerCase().replaceAll("_", "-");
}

export function problemCodeFromSlug(slug: string): ProblemCode | undefined {
  const code = slug.toUpperCase().replaceAll("-", "_");
  return code in PROBLEMS ? (code as ProblemCode) : undefined;
}

export function problemType(code: ProblemCode): string {
  return `/problems/${problemSlug(code)}`;
}

/**
 * Members a problem adds of its own; the standard ones cannot be among them (they would be overwritten),
 * nor `error`, which the OpenAI-compatible routes give OpenAI's error object.
 */
export type ProblemExtensions = Record<string, unknown> & {
  [member in "type" | "title" | "status" | "detail" | "code" | "request_id" | "errors" | "error"]?: never;
};

/** The one error type routes and services throw; the error handler renders it. */
export class ApiError extends Error {
  readonly code: ProblemCode;
  readonly status: number;
  readonly errors?: FieldError[];
  readonly headers: Record<string, string>;
  readonly extensions: ProblemExtensions;

  constructor(
    code: ProblemCode,
    detail?: string,
    options: { errors?: FieldError[]; headers?: Record<string, string>; extensions?: ProblemExtensions } = {},
  ) {
    super(detail ?? PROBLEMS[code].title);
    this.name = "ApiError";
    this.code = code;
    this.status = PROBLEMS[code].status;
    this.errors = options.errors;
    this.headers = options.headers ?? {};
    this.extensions = options.extensions ?? {};
  }
}

export function problemBody(error: ApiError, requestId: string, openAi?: OpenAiErrorMember): ProblemBody {
  return {
    ...error.extensions,
    type: problemType(error.code),
    title: PROBLEMS[error.code].title,
    status: error.status,
    detail: error.message,
    code: error.code,
    request_id: requestId,
    ...(error.errors ? { errors: error.errors } : {}),
    ...(openAi ? { error: openAi } : {}),
  };
}

export function problemResponse(
  error: ApiError,
  requestId: string,
  headers: HeadersInit = {},
  openAi?: OpenAiErrorMember,
): Response {
  const response = new Response(JSON.stringify(problemBody(error, requestId, openAi)), {
    status: error.status,
    headers: { "Content-Type": "application/problem+json", ...error.headers },
  });
  for (const [name, value] of new Headers(headers)) response.headers.set(name, value);
  return response;
}
