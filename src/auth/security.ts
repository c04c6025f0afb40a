import type { Context } from "hono";
import { recordAudit } from "../audit/index.ts";
import { createDb } from "../db/client.ts";
import { publish } from "../events/publish.ts";
import { ApiError } from "../lib/problem.ts";
import type { HonoEnv } from "../types.ts";
import type { AuthResult } from "./authenticate.ts";
import { actorOf, type Principal } from "./principal.ts";

/**
 * Watches for clients that keep failing: repeated authentication failures from
 * one address, revoked or expired keys still in use, and probes of other
 * workspaces' ids. Strikes are counted in a WorkspaceLimiter (shared by every
 * isolate); past a threshold the client is blocked for a cool-down, and a
 * `security.suspicious_activity` event plus an audit entry record it in the
 * workspace concerned. Failures that name no workspace (unknown keys, bad
 * tokens) can only be logged.
 *
 * The block is enforced on every failing attempt (each one asks the limiter)
 * and, in an isolate that has seen the block, on every request from that
 * address until the cool-down ends. A credential blocked for probing is
 * likewise refused on every id it asks for that is not its own (missing or
 * another workspace's: both ask the limiter, so the 403 tells nothing of which
 * ids exist elsewhere) and, in an isolate that has seen the block, on every
 * request it sends until the cool-down ends.
 */

export const AUTH_FAILURE_POLICY = { threshold: 10, windowMs: 60_000, cooldownMs: 5 * 60_000 };
export const PROBE_POLICY = { threshold: 20, windowMs: 60_000, cooldownMs: 5 * 60_000 };
/** A revoked or expired key is reported once per this long, however often it is tried. */
const STALE_KEY_REPORT_MS = 10 * 60_000;

const blockedUntilByClient = new Map<string, number>();
/** Credentials this isolate knows to be blocked for probing, by `<workspace id> <actor type>:<actor id>`: until when. */
const probeBlockedUntilByCredential = new Map<string, number>();

/**
 * The credential, named by its actor's type as well as its id: a key id and a JWT `sub` come from different
 * places, and a user whose `sub` happened to equal a blocked key's id shared that key's strikes and block.
 */
function actorKey(principal: Principal): string {
  const actor = actorOf(principal);
  return `${actor.type}:${actor.id}`;
}

function credentialKey(principal: Principal): string | null {
  return principal.workspaceId === null ? null : `${principal.workspaceId} ${actorKey(principal)}`;
}

/** The WorkspaceLimiter strike counter of a credential's probes. */
function probeStrikeKey(principal: Principal): string {
  return `probe:${actorKey(principal)}`;
}

function probeBlockedError(): ApiError {
  return new ApiError("FORBIDDEN", "This credential is blocked after repeated requests for other workspaces' ids.", {
    extensions: { blocked: true },
  });
}

/**
 * Cheap, local: refuses a credential this isolate knows to be blocked for probing, whatever it asks for (the
 * authentication middleware calls it on every request). Other isolates learn of the block on the credential's
 * next request for an id that is not its own (refuseIfProbeBlocked).
 */
export function refuseIfCredentialBlocked(principal: Principal, nowMs = Date.now()): void {
  if (probeBlockedUntilByCredential.size === 0) return;
  const key = credentialKey(principal);
  if (key === null) return;
  const untilMs = probeBlockedUntilByCredential.get(key);
  if (untilMs === undefined) return;
  if (untilMs > nowMs) throw probeBlockedError();
  probeBlockedUntilByCredential.delete(key);
}

export function clientIp(request: Request): string {
  return request.headers.get("CF-Connecting-IP") ?? request.headers.get("X-Real-IP") ?? "unknown";
}

function blockedError(untilMs: number, nowMs: number): ApiError {
  const retryAfterSeconds = Math.max(1, Math.ceil((untilMs - nowMs) / 1000));
  return new ApiError(
    "RATE_LIMITED",
    `Too many failed authentications from this address: every request from it is refused for ${retryAfterSeconds} s more, whatever credentials it sends. Check the key before trying again.`,
    {
      headers: { "Retry-After": String(retryAfterSeconds) },
      extensions: { blocked: true, retry_after_seconds: retryAfterSeconds },
    },
  );
}

type Severity = "low" | "medium" | "high" | "critical";

export function securityMonitor(c: Context<HonoEnv>) {
  const config = c.get("config");
  const logger = c.get("logger");
  const userAgent = c.req.header("User-Agent") ?? "";

  /** Event and audit entry for a workspace; never fails the request. */
  function report(input: {
    workspaceId: string;
    subject: string;
    activity: string;
    kind: string;
    severity: Severity;
    blocked: boolean;
    ip: string;
    actor: { type: "api_key" | "user" | "operator" | "system"; id: string; display?: string };
  }): void {
    const work = Promise.allSettled([
      publish(config, {
        event_type: "security.suspicious_activity",
        workspace_id: input.workspaceId,
        correlation_id: c.get("trace")?.traceId,
        data: {
          event_type: input.kind,
          severity: input.severity,
          user_id: input.subject,
          ip_address: input.ip,
          user_agent: userAgent,
          suspicious_activity: input.activity,
          blocked: input.blocked,
        },
      }),
      recordAudit(createDb(config.DB), {
        workspaceId: input.workspaceId,
        actor: input.actor,
        action: input.blocked ? "security.blocked" : "auth.failed",
        resourceType: "client",
        resourceId: input.ip,
        requestId: c.get("requestId"),
        traceId: c.get("trace")?.traceId,
        ip: input.ip,
        userAgent,
        metadata: { activity: input.activity, kind: input.kind, subject: input.subject },
      }),
    ]).then((results) => {
      for (const result of results) {
        if (result.status === "rejected") logger.error("security report failed", { error: result.reason });
      }
    });
    c.executionCtx.waitUntil(work);
  }

  return {
    /** Cheap, local: refuses a client this isolate knows to be blocked. */
    async refuseIfBlocked(ip: string): Promise<void> {
      const untilMs = blockedUntilByClient.get(ip);
      if (untilMs === undefined) return;
      const nowMs = Date.now();
      if (untilMs > nowMs) throw blockedError(untilMs, nowMs);
      blockedUntilByClient.delete(ip);
    },

    /** Counts a failed authentication; throws 429 once the client is blocked. */
    async authenticationFailed(ip: string, failure: Extract<AuthResult, { ok: false }>): Promise<void> {
      const nowMs = Date.now();
      const guard = config.WORKSPACE_LIMITER.getByName(`guard:${ip}`);
      let strike: Awaited<ReturnType<typeof guard.recordStrike>>;
      try {
        strike = await guard.recordStrike({ key: `auth:${ip}`, ...AUTH_FAILURE_POLICY, nowMs });
      } catch (error) {
        // Counting is best effort: the caller still gets its 401.
        logger.error("could not record an authentication failure", { error, ip });
        return;
      }

      const staleKey = failure.reason === "revoked_key" || failure.reason === "expired_key";
      if (staleKey && failure.workspaceId && failure.keyId) {
        const once = await config.WORKSPACE_LIMITER.getByName(failure.workspaceId).recordStrike({
          key: `stale-key:${failure.keyId}`,
          threshold: 1,
          windowMs: STALE_KEY_REPORT_MS,
          cooldownMs: STALE_KEY_REPORT_MS,
          nowMs,
        });
        if (once.newlyBlocked) {
          report({
            workspaceId: failure.workspaceId,
            subject: failure.keyId,
            kind: failure.reason,
            activity: `A ${failure.reason === "revoked_key" ? "revoked" : "expired"} API key was used`,
            severity: "high",
            blocked: strike.blocked,
            ip,
            actor: { type: "api_key", id: failure.keyId },
          });
        }
      }

      if (strike.blocked && strike.blockedUntilMs !== null) {
        blockedUntilByClient.set(ip, strike.blockedUntilMs);
        if (strike.newlyBlocked) {
          logger.warn("client blocked after repeated authentication failures", { ip, strikes: strike.strikes });
          if (failure.workspaceId) {
            report({
              workspaceId: failure.workspaceId,
              subject: failure.keyId ?? "anonymous",
              kind: "repeated_auth_failures",
              activity: `${strike.strikes} failed authentications within ${AUTH_FAILURE_POLICY.windowMs / 1000} s`,
              severity: "critical",
              blocked: true,
              ip,
              actor: { type: "system", id: "security-monitor" },
            });
          }
        }
        throw blockedError(strike.blockedUntilMs, nowMs);
      }
    },

    /**
     * An id that exists but belongs to another workspace was asked for. The
     * caller still gets a plain 404; past the threshold it is blocked (403).
     */
    async foreignIdProbed(resourceType: string, resourceId: string): Promise<void> {
      const principal = c.get("principal");
      const workspaceId = c.get("workspaceId");
      if (!principal || !workspaceId) return;
      const actor = actorOf(principal);
      const ip = clientIp(c.req.raw);
      const nowMs = Date.now();
      const strike = await config.WORKSPACE_LIMITER.getByName(workspaceId).recordStrike({
        key: probeStrikeKey(principal),
        ...PROBE_POLICY,
        nowMs,
      });
      logger.warn("foreign id requested", {
        resource_type: resourceType,
        resource_id: resourceId,
        strikes: strike.strikes,
      });
      const key = credentialKey(principal);
      if (strike.blocked && strike.blockedUntilMs !== null && key !== null) {
        probeBlockedUntilByCredential.set(key, strike.blockedUntilMs);
      }
      if (strike.newlyBlocked) {
        report({
          workspaceId,
          subject: actor.id,
          kind: "foreign_id_probe",
          activity: `${strike.strikes} requests for other workspaces' ${resourceType} ids within ${PROBE_POLICY.windowMs / 1000} s`,
          severity: "high",
          blocked: true,
          ip,
          actor,
        });
      }
    },

    /**
     * Refuses a principal blocked for probing. Called on every miss of an id lookup, whether the id is missing or
     * another workspace's: asked only for the latter, a blocked credential got 403 for another workspace's ids and
     * 404 for missing ones, which told it which ids exist elsewhere.
     */
    async refuseIfProbeBlocked(): Promise<void> {
      const principal = c.get("principal");
      const workspaceId = c.get("workspaceId");
      if (!principal || !workspaceId) return;
      const nowMs = Date.now();
      refuseIfCredentialBlocked(principal, nowMs);
      const untilMs = await config.WORKSPACE_LIMITER.getByName(workspaceId).blockedUntil(
        probeStrikeKey(principal),
        nowMs,
      );
      if (untilMs !== null && untilMs > nowMs) {
        const key = credentialKey(principal);
        if (key !== null) probeBlockedUntilByCredential.set(key, untilMs);
        throw probeBlockedError();
      }
    },
  };
}
