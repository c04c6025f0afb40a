import type { PublishedEvent } from "../src/events/catalog.ts";

/**
 * A typed REST client for the MGX-AI Edge API: fetch-based, so it runs in
 * browsers, Node 22, Deno and Workers alike. Errors come back as `MgxApiError`
 * carrying the RFC 9457 problem the API answered.
 */

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  request_id: string;
  errors?: { path: string; message: string }[];
  [extension: string]: unknown;
}

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
}

export type Query = Record<string, string | number | boolean | readonly string[] | undefined>;

export interface Page<T> {
  data: T[];
  next_cursor: string | null;
}

export interface EventListQuery {
  after?: string;
  cursor?: string;
  limit?: number;
  types?: readonly string[];
  channels?: readonly string[];
  version?: string;
}

export class MgxClient {
  readonly baseUrl: string;
  private readonly apiKey: string | undefined;
  private readonly fetchImpl: typeof fetch;
  private readonly headers: Record<string, string>;

  constructor(options: MgxClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.apiKey = options.apiKey;
    this.fetchImpl = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.headers = options.headers ?? {};
  }

  /** Any route: JSON in, JSON out, problems thrown as MgxApiError. */
  async request<T>(method: string, path: string, options: { query?: Query; body?: unknown } = {}): Promise<T> {
    const url = new URL(`${this.baseUrl}${path}`);
    for (const [name, value] of Object.entries(options.query ?? {})) {
      if (value === undefined) continue;
      url.searchParams.set(name, Array.isArray(value) ? value.join(",") : String(value));
    }
    const headers: Record<string, string> = { Accept: "application/json", ...this.headers };
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    const response = await this.fetchImpl(url, {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    });
    if (!response.ok) throw await toError(response);
    if (response.status === 204) return undefined as T;
    return (await response.json()) as T;
  }

  health(): Promise<{ status: "ok"; version: string; time: string }> {
    return this.request("GET", "/health");
  }

  ready(): Promise<{ status: "ready"; checks: Record<string, { ok: boolean; latency_ms: number; error?: string }> }> {
    return this.request("GET", "/ready");
  }

  readonly events = {
    /** One page of history, in seq order. */
    list: (query: EventListQuery = {}): Promise<Page<PublishedEvent>> =>
      this.request("GET", "/api/v1/events", { query: { ...query } }),

    /** Every event after `after`, page by page. */
    listAll: async function* (
      this: MgxClient,
      query: Omit<EventListQuery, "cursor"> = {},
    ): AsyncGenerator<PublishedEvent> {
      let cursor: string | undefined;
      do {
        const page = await this.events.list({ ...query, limit: query.limit ?? 100, cursor });
        yield* page.data;
        cursor = page.next_cursor ?? undefined;
      } while (cursor);
    }.bind(this),

    /** A single-use, 60-second ticket for the WebSocket (what a browser should use). */
    createTicket: (): Promise<{ ticket: string; expires_at: string }> => this.request("POST", "/api/v1/events/tickets"),

    /** The event contract as JSON Schema. */
    schema: (): Promise<Record<string, unknown>> => this.request("GET", "/api/v1/events/schema"),
  };
}

async function toError(response: Response): Promise<MgxApiError> {
  const retryAfter = response.headers.get("Retry-After");
  const retryAfterSeconds = retryAfter !== null && /^\d+$/.test(retryAfter) ? Number(retryAfter) : null;
  let problem: Problem;
  try {
    problem = (await response.json()) as Problem;
  } catch {
    problem = {
      type: "about:blank",
      title: response.statusText,
      status: response.status,
      detail: `HTTP ${response.status}`,
      code: "UNKNOWN",
      request_id: response.headers.get("X-Request-Id") ?? "",
    };
  }
  return new MgxApiError(problem, retryAfterSeconds);
}
