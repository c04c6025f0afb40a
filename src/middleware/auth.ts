import type { Context, MiddlewareHandler } from "hono";
import { touchLastUsed } from "../auth/api-keys.ts";
import { authenticate } from "../auth/authenticate.ts";
import type { Scope } from "../auth/principal.ts";
import { clientIp, refuseIfCredentialBlocked, securityMonitor } from "../auth/security.ts";
import { createDb } from "../db/client.ts";
import type { AppConfig } from "../env.ts";
import { EVENTS_WS_PATH, isTicketAuthenticatedRequest } from "../events/tickets.ts";
import { ApiError } from "../lib/problem.ts";
import type { HonoEnv } from "../types.ts";

const INVALID_CREDENTIALS = "Invalid credentials.";
const NO_CREDENTIALS = "No credentials were sent: send `Authorization: Bearer <api key or JWT>`.";
/** A browser's WebSocket cannot send a header: it is told of the ticket instead. */
const NO_CREDENTIALS_WS =
  "No credentials were sent: send `Authorization: Bearer <api key or JWT>`, or (a browser's WebSocket) `?ticket=` from `POST /api/v1/events/tickets`.";
const NOT_BEARER = "The Authorization header is not a bearer token: send `Authorization: Bearer <api key or JWT>`.";
/** Told only under `wrangler dev`, where the operator's token not working is the setup's, not a guess's. */
const NO_OPERATOR_TOKEN =
  "Invalid credentials: this is no workspace key or JWT, and no ADMIN_TOKEN is set here, so no token is the operator's (locally: cp .dev.vars.example .dev.vars, then restart npm run dev).";
const UNAUTHENTICATED_HEADERS = { "WWW-Authenticate": 'Bearer realm="mgx-ai-edge"' };
/** `last_used_at` is written at most this often per key and isolate, after the response. */
const LAST_USED_WRITE_INTERVAL_MS = 60_000;
const lastUsedWrittenAtMs = new Map<string, number>();

/**
 * What a refused caller is told. A token that was sent is only "invalid
 * credentials" (unknown, revoked or expired are not told apart; the reason goes
 * to the logs); a request that sent none, or not as a bearer token, is told how
 * to send one, which gives nothing away.
 */
function refusalDetail(reason: string, authorization: string | undefined, path: string, config: AppConfig): string {
  if (reason === "missing") return path === EVENTS_WS_PATH ? NO_CREDENTIALS_WS : NO_CREDENTIALS;
  if (reason !== "malformed") return INVALID_CREDENTIALS;
  if (!/^Bearer\s+\S/i.test(authorization?.trim() ?? "")) return NOT_BEARER;
  // A token of neither form, with no operator token configured: locally, the quick start's ADMIN_TOKEN not set.
  if (config.ENVIRONMENT === "development" && !config.ADMIN_TOKEN) return NO_OPERATOR_TOKEN;
  return INVALID_CREDENTIALS;
}

/**
 * Authenticates every /api/v1 request (API key, JWT or operator token). A
 * failure goes to the logs and the security monitor, which blocks clients
 * that keep failing.
 */
export const authenticateApi: MiddlewareHandler<HonoEnv> = async (c, next) => {
  const ip = clientIp(c.req.raw);
  const monitor = securityMonitor(c);
  await monitor.refuseIfBlocked(ip);
  // A browser's WebSocket carries a single-use ticket instead of a header; the events route redeems it. A ticket it
  // refuses counts as a failed authentication from the address, as a refused key does: guessing tickets, or
  // sending forged ones (each costs a lookup), is blocked after as many tries.
  if (isTicketAuthenticatedRequest(c.req.raw)) {
    await next();
    if (c.res.status === 401) await monitor.authenticationFailed(ip, { ok: false, reason: "unknown_ticket" });
    return;
  }
  const config = c.get("config");

  const authorization = c.req.header("Authorization");
  const result = await authenticate(config, authorization);
  if (!result.ok) {
    c.get("logger").warn("authentication failed", { reason: result.reason, ip, workspace_id: result.workspaceId });
    await monitor.authenticationFailed(ip, result);
    throw new ApiError("UNAUTHENTICATED", refusalDetail(result.reason, authorization, c.req.path, config), {
      headers: UNAUTHENTICATED_HEADERS,
    });
  }

  const { principal } = result;
  // A credential this isolate has seen blocked for probing other workspaces' ids is refused whatever it asks.
  refuseIfCredentialBlocked(principal);
  c.set("principal", principal);
  c.set("limits", result.limits);
  if (principal.workspaceId) c.set("workspaceId", principal.workspaceId);
  c.set(
    "logger",
    c.get("logger").child({
      workspace_id: principal.workspaceId ?? undefined,
      ...(principal.kind === "user" ? { user_id: principal.userId } : {}),
      ...(principal.kind === "api_key" ? { key_id: principal.keyId } : {}),
    }),
  );
  if (principal.kind === "api_key") {
    const nowMs = Date.now();
    if (nowMs - (lastUsedWrittenAtMs.get(principal.keyId) ?? 0) >= LAST_USED_WRITE_INTERVAL_MS) {
      lastUsedWrittenAtMs.set(principal.keyId, nowMs);
      const update = touchLastUsed(createDb(config.DB), principal.keyId, new Date(nowMs).toISOString());
      c.executionCtx.waitUntil(
        update.run().catch((error: unknown) => c.get("logger").warn("last_used_at update failed", { error })),
      );
    }
  }
  await next();
};

/**
 * Who a route's guard lets through to its handler: the guards below register
 * themselves, so the OpenAPI document can say which responses carry the rate
 * limiter's headers (it counts workspace credentials, never the operator).
 */
export type RouteCallers = "workspace" | "operator";
const callersByGuard = new WeakMap<MiddlewareHandler<HonoEnv>, RouteCallers>();

/** The callers `handler` admits, if it is one of the guards below. */
export function guardedCallers(handler: unknown): RouteCallers | undefined {
  return callersByGuard.get(handler as MiddlewareHandler<HonoEnv>);
}

/** Workspace routes: a key or user token of a workspace, holding `scope` (or `admin`). */
/** Throws the 401 or 403 unless the caller is a workspace credential with `scope` (or admin). */
export function assertScope(c: Context<HonoEnv>, scope: Scope): void {
  const principal = c.get("principal");
  if (!principal) throw new ApiError("UNAUTHENTICATED", INVALID_CREDENTIALS, { headers: UNAUTHENTICATED_HEADERS });
  if (principal.kind === "operator") {
    throw new ApiError("FORBIDDEN", "The operator token manages workspaces; use a workspace key for this route.");
  }
  if (!principal.scopes.has(scope) && !principal.scopes.has("admin")) {
    throw new ApiError(
      "FORBIDDEN",
      `This credential lacks the ${scope} scope: use a key or token that has it (or admin); an admin key makes such a key with POST /api/v1/api-keys.`,
      {
        extensions: { required_scope: scope },
      },
    );
  }
}

export function requireScope(scope: Scope): MiddlewareHandler<HonoEnv> {
  const guard: MiddlewareHandler<HonoEnv> = async (c, next) => {
    assertScope(c, scope);
    await next();
  };
  callersByGuard.set(guard, "workspace");
  return guard;
}

/** Operator routes: bearer = ADMIN_TOKEN. */
export const requireOperator: MiddlewareHandler<HonoEnv> = async (c, next) => {
  const principal = c.get("principal");
  if (!principal) throw new ApiError("UNAUTHENTICATED", INVALID_CREDENTIALS, { headers: UNAUTHENTICATED_HEADERS });
  if (principal.kind !== "operator") {
    throw new ApiError(
      "FORBIDDEN",
      "This route is for the operator, whose bearer token is the deployment's ADMIN_TOKEN; a workspace key reads and changes its own workspace at /api/v1/workspace.",
    );
  }
  await next();
};
callersByGuard.set(requireOperator, "operator");
