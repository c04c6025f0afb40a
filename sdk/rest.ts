import type { PublishedEvent } from "../src/events/catalog.ts";
import { sleepMs } from "../src/lib/sleep.ts";
import { TERMINAL_STATUSES } from "../src/tasks/views.ts";
import { type BackoffOptions, backoffDelayMs } from "./backoff.ts";
import type {
  ApiKey,
  Artifact,
  AuditFilter,
  AuditLog,
  AuditLogStats,
  AuditVerification,
  BudgetStatus,
  Budgets,
  CreatedApiKey,
  CreatedWorkspace,
  DeadLetter,
  DeadLetterListQuery,
  DeadLetterReplay,
  DeadLetterReplayResult,
  EventListQuery,
  NewApiKey,
  NewTask,
  NewWorkspace,
  Page,
  PageQuery,
  Problem,
  Provider,
  Task,
  TaskListQuery,
  TaskRun,
  Usage,
  UsageQuery,
  Whoami,
  Workspace,
  WorkspaceOperatorPatch,
  WorkspacePatch,
} from "./types.ts";

/**
 * A typed REST client for the MGX-AI Edge API: fetch-based, so it runs in
 * browsers, Node 22, Deno and Workers alike. Errors come back as `MgxApiError`
 * carrying the RFC 9457 problem the API answered. Its types (types.ts) are
 * inferred from the schemas the server validates with, so the two cannot drift apart.
 */

export class MgxApiError extends Error {
  readonly status: number;
  readonly problem: Problem;
  readonly retryAfterSeconds: number | null;

  constructor(problem: Problem, retryAfterSeconds: number | null) {
    super(`${problem.status} ${problem.code}: ${problem.detail}`);
    this.name = "MgxApiError";
    this.status = problem.status;
    this.problem = problem;
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

export interface MgxClientOptions {
  /** e.g. `https://api.mgx-ai.com` or `http://127.0.0.1:8787`. */
  baseUrl: string;
  /** A workspace API key (`mgx_…`) or a JWT access token. Keep it server-side in browsers: use tickets there. */
  apiKey?: string;
  fetch?: typeof fetch;
  headers?: Record<string, string>;
  /**
   * How many times a request that may safely be sent again (GET, HEAD, PUT, DELETE, or one with an
   * `Idempotency-Key`) is retried after a 429, 502, 503 or 504, or a connection that failed. Default 2; 0 never.
   */
  maxRetries?: number;
  /**
   * The longest wait a retry is worth (default 60 s). The wait is the answer's `Retry-After`, else backoff; one
   * longer than this (a spent budget's, until its period resets) is not waited out: the error is thrown at once.
   */
  maxRetryWaitMs?: number;
  /** The backoff between retries the answer gives no `Retry-After` for (default 0.5 s, doubling, at most 8 s). */
  retryBackoff?: Partial<BackoffOptions>;
}

/** Methods that mean the same when sent twice (RFC 9110 §9.2.2), and so may be retried. */
const IDEMPOTENT_METHODS = new Set(["GET", "HEAD", "PUT", "DELETE", "OPTIONS"]);
/** Answers worth a retry: limited, or a gateway or the service briefly unavailable. */
const RETRYABLE_STATUSES = new Set([429, 502, 503, 504]);
const DEFAULT_RETRY_BACKOFF: BackoffOptions = { baseDelayMs: 500, maxDelayMs: 8_000 };
/** The longest delay setTimeout keeps (a signed 32-bit count of milliseconds, about 24.8 days). */
const MAX_TIMER_MS = 2_147_483_647;

export type Query = Record<string, string | number | boolean | readonly string[] | null | undefined>;

export interface RequestOptions {
  query?: Query;
  /** Sent as JSON. */
  body?: unknown;
  headers?: Record<string, string>;
  /** Stops the request, and the wait before a retry. */
  signal?: AbortSignal;
  /** This request's own limit on retries, in place of the client's `maxRetries` (0: none). */
  maxRetries?: number;
}

/**
 * What every typed method takes last: a signal that stops it (and its waits before retries), headers of its own,
 * and its own limit on retries.
 */
export type CallOptions = Pick<RequestOptions, "headers" | "signal" | "maxRetries">;

export class MgxClient {
  readonly baseUrl: string;
  private readonly apiKey: string | undefined;
  private readonly fetchImpl: typeof fetch;
  private readonly headers: Record<string, string>;
  private readonly maxRetries: number;
  private readonly maxRetryWaitMs: number;
  private readonly retryBackoff: BackoffOptions;

  constructor(options: MgxClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.apiKey = options.apiKey;
    this.fetchImpl = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.headers = options.headers ?? {};
    this.maxRetries = Math.max(0, Math.floor(options.maxRetries ?? 2));
    this.maxRetryWaitMs = options.maxRetryWaitMs ?? 60_000;
    this.retryBackoff = { ...DEFAULT_RETRY_BACKOFF, ...options.retryBackoff };
  }

  /** Any route: JSON in, JSON out (undefined for a HEAD, a 204 or a 304), problems thrown as MgxApiError. */
  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const response = await this.fetchResponse(method, path, options);
    // These have no body to read (RFC 9110 §6.4.1): parsing one failed with "Unexpected end of JSON input".
    if (method.toUpperCase() === "HEAD" || response.status === 204 || response.status === 304) {
      await response.body?.cancel();
      return undefined as T;
    }
    return (await response.json()) as T;
  }

  /**
   * Any route, its response as it came (a file's bytes, streamed: its body, `Content-Type`, `ETag`); problems
   * thrown as MgxApiError.
   */
  async fetchResponse(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
    // Appended to the base URL, "api/v1/tasks" named another host (`http://api.testapi/v1/tasks`), key and all.
    if (!path.startsWith("/")) throw new TypeError(`the path ${path} does not start with "/"`);
    if (hasBlankOrDotSegment(path)) throw new TypeError(`an empty, "." or ".." segment in ${path}: is an id empty?`);
    const url = new URL(`${this.baseUrl}${path}`);
    for (const [name, value] of Object.entries(options.query ?? {})) {
      // An empty list filters nothing, as the API reads `types=`: left out rather than sent blank. A null (a page's
      // `next_cursor: null` passed on as `cursor`) is none too: sent, it was the string "null", a cursor refused.
      if (value === undefined || value === null || (Array.isArray(value) && value.length === 0)) continue;
      url.searchParams.set(name, Array.isArray(value) ? value.join(",") : String(value));
    }
    // The request's own headers last: a call may send another credential, or ask for another type.
    const headers = mergeHeaders(
      { Accept: "application/json" },
      this.apiKey ? { Authorization: `Bearer ${this.apiKey}` } : undefined,
      options.body !== undefined ? { "Content-Type": "application/json" } : undefined,
      this.headers,
      options.headers,
    );
    const init = {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      ...(options.signal ? { signal: options.signal } : {}),
    };
    // Sent again, a POST without a key could do its work twice (two tasks): only these are retried.
    const retryable =
      IDEMPOTENT_METHODS.has(method.toUpperCase()) ||
      Object.keys(headers).some((name) => name.toLowerCase() === "idempotency-key");
    for (let attempt = 0; ; attempt++) {
      const canRetry = retryable && attempt < (options.maxRetries ?? this.maxRetries);
      let response: Response;
      try {
        response = await this.fetchImpl(url, init);
      } catch (error) {
        if (!canRetry || options.signal?.aborted || isProgrammingError(error)) throw error;
        await sleepMs(backoffDelayMs(attempt, this.retryBackoff), options.signal);
        continue;
      }
      // A 304 answers the caller's own conditional request (`If-None-Match`): its copy is current, which is no error.
      if (response.ok || response.status === 304) return response;
      const waitMs = canRetry ? this.retryWaitMs(response, attempt) : undefined;
      if (waitMs === undefined) throw await toError(response);
      await response.body?.cancel();
      await sleepMs(waitMs, options.signal);
    }
  }

  /** How long to wait before asking again after this answer, or undefined when asking again is no use. */
  private retryWaitMs(response: Response, attempt: number): number | undefined {
    if (!RETRYABLE_STATUSES.has(response.status)) return undefined;
    // The API says so where no retry can help (a spent budget, a cancelled call).
    if (response.headers.get("X-Should-Retry") === "false") return undefined;
    const retryAfterSeconds = parseRetryAfterSeconds(response.headers.get("Retry-After"));
    const waitMs = retryAfterSeconds === null ? backoffDelayMs(attempt, this.retryBackoff) : retryAfterSeconds * 1_000;
    return waitMs <= this.maxRetryWaitMs ? waitMs : undefined;
  }

  /**
   * Every item of a list route, page by page (`next_cursor`), 100 a page unless `limit` says otherwise; from
   * `cursor` when given, so that a walk stopped part-way resumes where it stopped.
   */
  async *pages<T>(path: string, query: Query & PageQuery = {}, options?: CallOptions): AsyncGenerator<T> {
    let cursor = query.cursor;
    do {
      const page: Page<T> = await this.request(
        "GET",
        path,
        withCall(options, { query: { ...query, limit: query.limit ?? 100, cursor } }),
      );
      yield* page.data;
      cursor = page.next_cursor ?? undefined;
    } while (cursor);
  }

  health(options?: CallOptions): Promise<{ status: "ok"; version: string; time: string }> {
    return this.request("GET", "/health", withCall(options));
  }

  /** The credential this client calls with, as the API sees it. */
  whoami(options?: CallOptions): Promise<Whoami> {
    return this.request("GET", "/api/v1/whoami", withCall(options));
  }

  /**
   * Whether every dependency answers; a 503 (the problem's `checks` name what failed) is thrown at once, not retried
   * unless `options.maxRetries` says so.
   */
  ready(options?: CallOptions): Promise<{
    status: "ready";
    checks: Record<string, { ok: boolean; latency_ms: number; error?: string; warning?: string }>;
  }> {
    // Not `{ maxRetries: 0, ...options }`: options whose maxRetries is there but undefined undid the 0.
    return this.request("GET", "/ready", withCall({ ...options, maxRetries: options?.maxRetries ?? 0 }));
  }

  readonly events = {
    /** One page of history, in seq order. */
    list: (query: EventListQuery = {}, options?: CallOptions): Promise<Page<PublishedEvent>> =>
      this.request("GET", "/api/v1/events", withCall(options, { query: { ...query } })),

    /** Every event after `after`, page by page. */
    listAll: (query: Omit<EventListQuery, "cursor"> = {}, options?: CallOptions): AsyncGenerator<PublishedEvent> =>
      this.pages("/api/v1/events", { ...query }, options),

    /** A single-use, 60-second ticket for the WebSocket (what a browser should use). */
    createTicket: (options?: CallOptions): Promise<{ ticket: string; expires_at: string }> =>
      this.request("POST", "/api/v1/events/tickets", withCall(options)),

    /** The event contract as JSON Schema. */
    schema: (options?: CallOptions): Promise<Record<string, unknown>> =>
      this.request("GET", "/api/v1/events/schema", withCall(options)),
  };

  readonly tasks = {
    /**
     * Submits a task: `queued`, or `pending` behind the workspace's running tasks. With `idempotencyKey`, sending
     * it again (a retry after a lost answer) gives back the first task rather than a second one, and the client
     * itself retries it after a 429 or 5xx like a GET.
     */
    create: (task: NewTask, options: CallOptions & { idempotencyKey?: string } = {}): Promise<Task> => {
      const { idempotencyKey, ...call } = options;
      return this.request(
        "POST",
        "/api/v1/tasks",
        withCall(call, {
          body: task,
          ...(idempotencyKey !== undefined ? { headers: { "Idempotency-Key": idempotencyKey } } : {}),
        }),
      );
    },

    get: (id: string, options?: CallOptions): Promise<Task> =>
      this.request("GET", `/api/v1/tasks/${encodeURIComponent(id)}`, withCall(options)),

    /** One page, newest first. */
    list: (query: TaskListQuery = {}, options?: CallOptions): Promise<Page<Task>> =>
      this.request("GET", "/api/v1/tasks", withCall(options, { query: { ...query } })),

    listAll: (query: Omit<TaskListQuery, "cursor"> = {}, options?: CallOptions): AsyncGenerator<Task> =>
      this.pages("/api/v1/tasks", { ...query }, options),

    /**
     * Reads the task every `intervalMs` (default 1 s) until it ends (completed, failed, cancelled or dead-lettered),
     * and answers it as it ended. Past `timeoutMs` (default 10 minutes) it throws a `TimeoutError`; `signal` stops it.
     * To follow a task as it runs, an EventClient subscribed to `task:{id}` tells each step instead.
     */
    wait: async (
      id: string,
      options: CallOptions & { intervalMs?: number; timeoutMs?: number } = {},
    ): Promise<Task> => {
      const { intervalMs = 1_000, timeoutMs = 600_000, ...call } = options;
      // The deadline stops a read too, and its waits before retries (a Retry-After of 30 s outlived a timeoutMs of
      // 5 s), as the caller's signal does: both through this one.
      const stop = new AbortController();
      // A timer longer than 2^31 − 1 ms fires at once (Node, browsers): Infinity, or anything that long, waits on.
      const timer =
        timeoutMs <= MAX_TIMER_MS
          ? setTimeout(
              () => stop.abort(new DOMException(`task ${id} had not ended after ${timeoutMs} ms`, "TimeoutError")),
              timeoutMs,
            )
          : undefined;
      const onAbort = () => stop.abort(call.signal?.reason);
      if (call.signal?.aborted) onAbort();
      call.signal?.addEventListener("abort", onAbort, { once: true });
      try {
        for (;;) {
          const task: Task = await this.request(
            "GET",
            `/api/v1/tasks/${encodeURIComponent(id)}`,
            withCall({ ...call, signal: stop.signal }),
          );
          if ((TERMINAL_STATUSES as readonly string[]).includes(task.status)) return task;
          await sleepMs(intervalMs, stop.signal);
        }
      } finally {
        clearTimeout(timer);
        call.signal?.removeEventListener("abort", onAbort);
      }
    },

    /** Cancels at once a task not yet running; a running one stops within about a second (`cancel_requested_at`). */
    cancel: (id: string, options?: CallOptions): Promise<Task> =>
      this.request("POST", `/api/v1/tasks/${encodeURIComponent(id)}/cancel`, withCall(options)),

    /** Its attempts: status, timings, tokens, cost, error. */
    runs: (id: string, query: PageQuery = {}, options?: CallOptions): Promise<Page<TaskRun>> =>
      this.request("GET", `/api/v1/tasks/${encodeURIComponent(id)}/runs`, withCall(options, { query: { ...query } })),

    /** The files its agent wrote. */
    artifacts: (id: string, query: PageQuery = {}, options?: CallOptions): Promise<Page<Artifact>> =>
      this.request(
        "GET",
        `/api/v1/tasks/${encodeURIComponent(id)}/artifacts`,
        withCall(options, { query: { ...query } }),
      ),
  };

  readonly artifacts = {
    /**
     * The file, streamed: read its body (`text()`, `arrayBuffer()`, or as a stream); `Content-Type` is its type.
     * A part of it: `headers: { Range: "bytes=0-1023" }` (a 206). With `headers: { "If-None-Match": etag }`, the
     * `ETag` of a copy the caller has, a 304 without a body says that copy is current.
     */
    content: (id: string, options?: CallOptions): Promise<Response> =>
      this.fetchResponse(
        "GET",
        `/api/v1/artifacts/${encodeURIComponent(id)}/content`,
        withCall(options, { headers: { Accept: "*/*" } }),
      ),
  };

  /** Tokens and cost by UTC day, provider and model, with totals. */
  usage(query: UsageQuery = {}, options?: CallOptions): Promise<Usage> {
    return this.request("GET", "/api/v1/usage", withCall(options, { query: { ...query } }));
  }

  readonly budgets = {
    /** The budgets, what each period has used and holds, and whether calls are refused for it. */
    get: (options?: CallOptions): Promise<BudgetStatus> => this.request("GET", "/api/v1/budgets", withCall(options)),
    /** Replaces all four (null is none); needs the `admin` scope. */
    set: (budgets: Budgets, options?: CallOptions): Promise<BudgetStatus> =>
      this.request("PUT", "/api/v1/budgets", withCall(options, { body: budgets })),
  };

  /** Every LLM provider, whether this deployment has it, and its models' circuit breakers and prices. */
  providers(options?: CallOptions): AsyncGenerator<Provider> {
    return this.pages("/api/v1/providers", {}, options);
  }

  readonly workspace = {
    /** The caller's workspace: plan, limits, budgets, queue depth and LLM routing. */
    get: (options?: CallOptions): Promise<Workspace> => this.request("GET", "/api/v1/workspace", withCall(options)),
    /** Its name or LLM routing; needs the `admin` scope. */
    update: (patch: WorkspacePatch, options?: CallOptions): Promise<Workspace> =>
      this.request("PATCH", "/api/v1/workspace", withCall(options, { body: patch })),
  };

  /** The operator's routes: a client whose `apiKey` is the deployment's ADMIN_TOKEN. */
  readonly workspaces = {
    /** A workspace and its first API key (an admin key unless `api_key` says otherwise). */
    create: (workspace: NewWorkspace, options?: CallOptions): Promise<CreatedWorkspace> =>
      this.request("POST", "/api/v1/workspaces", withCall(options, { body: workspace })),
    get: (id: string, options?: CallOptions): Promise<Workspace> =>
      this.request("GET", `/api/v1/workspaces/${encodeURIComponent(id)}`, withCall(options)),
    /** Its name, plan or limits; a new plan resets the limits to the plan's before `limits` apply. */
    update: (id: string, patch: WorkspaceOperatorPatch, options?: CallOptions): Promise<Workspace> =>
      this.request("PATCH", `/api/v1/workspaces/${encodeURIComponent(id)}`, withCall(options, { body: patch })),
  };

  readonly apiKeys = {
    /** A new key of the caller's workspace; its secret `key` is in this answer only. Needs the `admin` scope. */
    create: (key: NewApiKey, options?: CallOptions): Promise<CreatedApiKey> =>
      this.request("POST", "/api/v1/api-keys", withCall(options, { body: key })),
    list: (query: PageQuery = {}, options?: CallOptions): Promise<Page<ApiKey>> =>
      this.request("GET", "/api/v1/api-keys", withCall(options, { query: { ...query } })),
    /** Revoked at once: its streams close, and its next request is refused. */
    revoke: (id: string, options?: CallOptions): Promise<ApiKey> =>
      this.request("DELETE", `/api/v1/api-keys/${encodeURIComponent(id)}`, withCall(options)),
  };

  readonly auditLogs = {
    /** One page, newest first; needs `audit:read`. */
    list: (query: AuditFilter & PageQuery = {}, options?: CallOptions): Promise<Page<AuditLog>> =>
      this.request("GET", "/api/v1/audit-logs", withCall(options, { query: { ...query } })),
    listAll: (query: AuditFilter & { limit?: number } = {}, options?: CallOptions): AsyncGenerator<AuditLog> =>
      this.pages("/api/v1/audit-logs", { ...query }, options),
    /** Every matching entry, streamed: NDJSON (`json`, the default) or CSV; read the response's body. */
    export: (query: AuditFilter & { format?: "json" | "csv" } = {}, options?: CallOptions): Promise<Response> =>
      this.fetchResponse(
        "GET",
        "/api/v1/audit-logs/export",
        withCall(options, { query: { ...query }, headers: { Accept: "*/*" } }),
      ),
    /** Counts by action, actor and UTC day (default: the last 30 days). */
    stats: (query: AuditFilter = {}, options?: CallOptions): Promise<AuditLogStats> =>
      this.request("GET", "/api/v1/audit-logs/stats", withCall(options, { query: { ...query } })),
    /**
     * Walks the hash chain; while `complete` is false, call again with `next` (`after_seq`, `after_hash`).
     */
    verify: (
      query: { after_seq?: number; after_hash?: string; limit?: number } = {},
      options?: CallOptions,
    ): Promise<AuditVerification> =>
      this.request("GET", "/api/v1/audit-logs/verify", withCall(options, { query: { ...query } })),
  };

  readonly deadLetters = {
    /** Tasks that exhausted their retries. */
    list: (query: DeadLetterListQuery = {}, options?: CallOptions): Promise<Page<DeadLetter>> =>
      this.request("GET", "/api/v1/dead-letters", withCall(options, { query: { ...query } })),
    /** Submits them again; what could not be replayed is in `skipped`, with why. */
    replay: (replay: DeadLetterReplay, options?: CallOptions): Promise<DeadLetterReplayResult> =>
      this.request("POST", "/api/v1/dead-letters/replay", withCall(options, { body: replay })),
  };
}

/**
 * What an id that is empty, "." or ".." makes of a route's path. The URL would drop or resolve that segment
 * (`tasks.get("..")` asked GET /api/v1/), so such a request is refused before it is sent.
 */
function hasBlankOrDotSegment(path: string): boolean {
  const segments = path.split("?")[0].split("/").slice(1);
  return segments.some((segment) => segment === "" || segment === "." || segment === "..");
}

/**
 * An exception of a custom `fetch` that no failed connection throws (fetch's own are TypeErrors, or workerd's
 * Error "Network connection lost"): a bug in that fetch, the same on every try, so it is thrown at once.
 */
function isProgrammingError(error: unknown): boolean {
  return (
    error instanceof ReferenceError ||
    error instanceof SyntaxError ||
    error instanceof RangeError ||
    error instanceof EvalError ||
    error instanceof URIError
  );
}

/**
 * A typed method's request with the caller's options laid over it: their signal and retry limit, and their headers
 * over the method's own (a `Range`, an `Accept`).
 */
function withCall(options: CallOptions | undefined, request: RequestOptions = {}): RequestOptions {
  if (!options) return request;
  const { headers, signal, maxRetries } = options;
  return {
    ...request,
    ...(headers ? { headers: mergeHeaders(request.headers, headers) } : {}),
    ...(signal ? { signal } : {}),
    ...(maxRetries !== undefined ? { maxRetries } : {}),
  };
}

/**
 * Header layers merged as HTTP reads them, names ignoring case: a later layer's value replaces an earlier one's
 * (`authorization` over `Authorization`). Merged as plain keys, both were sent and fetch joined them into one
 * value, `Bearer a, Bearer b`, which the API refuses.
 */
function mergeHeaders(...layers: (Record<string, string> | undefined)[]): Record<string, string> {
  const merged: Record<string, string> = {};
  const spellings = new Map<string, string>();
  for (const layer of layers) {
    for (const [name, value] of Object.entries(layer ?? {})) {
      const earlier = spellings.get(name.toLowerCase());
      if (earlier !== undefined) delete merged[earlier];
      spellings.set(name.toLowerCase(), name);
      merged[name] = value;
    }
  }
  return merged;
}

/** `Retry-After` in seconds: as a number of seconds, or as an HTTP date (RFC 9110 §10.2.3). */
function parseRetryAfterSeconds(header: string | null): number | null {
  if (header === null) return null;
  if (/^\d+$/.test(header.trim())) return Number(header.trim());
  const atMs = Date.parse(header);
  return Number.isNaN(atMs) ? null : Math.max(0, Math.ceil((atMs - Date.now()) / 1_000));
}

async function toError(response: Response): Promise<MgxApiError> {
  const retryAfterSeconds = parseRetryAfterSeconds(response.headers.get("Retry-After"));
  let body: unknown = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: a proxy's or load balancer's page.
  }
  // Nor need JSON be a whole problem (a proxy's `{"error": …}`, a `null`): what it lacks comes from the answer itself,
  // so `status` and the message are never undefined (a `null` body threw a TypeError in place of the error).
  const given = body !== null && typeof body === "object" && !Array.isArray(body) ? (body as Partial<Problem>) : {};
  const text = (value: unknown, fallback: string): string => (typeof value === "string" ? value : fallback);
  const problem: Problem = {
    ...given,
    type: text(given.type, "about:blank"),
    title: text(given.title, response.statusText),
    status: response.status,
    detail: text(given.detail, `HTTP ${response.status}`),
    code: text(given.code, "UNKNOWN"),
    request_id: text(given.request_id, response.headers.get("X-Request-Id") ?? ""),
  };
  return new MgxApiError(problem, retryAfterSeconds);
}
