import type { MiddlewareHandler } from "hono";
import type { WorkspaceLimiter } from "../../durable-objects/workspace-limiter.ts";
import type { WorkspaceLimits } from "../db/schema.ts";
import { ApiError } from "../lib/problem.ts";
import { type RateLimitDecision, RateLimiter, type RateLimitRule, rateLimitHeaders } from "../limits/rate-limiter.ts";
import type { HonoEnv } from "../types.ts";
import { rateLimitRules } from "../workspaces/plans.ts";
import { setResponseHeaders } from "./response-headers.ts";

/**
 * Per-workspace and per-key (or per-user) token buckets, held by the
 * workspace's WorkspaceLimiter. The isolate's RateLimiter leases tokens in
 * small batches, so most requests make no Durable Object call and none is
 * admitted beyond burst + rate·t.
 */

const limiters = new WeakMap<object, RateLimiter>();

function limiterFor(namespace: DurableObjectNamespace<WorkspaceLimiter>) {
  let limiter = limiters.get(namespace);
  if (!limiter) {
    limiter = new RateLimiter(namespace);
    limiters.set(namespace, limiter);
  }
  return limiter;
}

/**
 * A caller's rules, made once per limits object: authentication hands out the
 * same one for as long as it caches the key or workspace, so the rules (and
 * the lease key the limiter derives from them) are not rebuilt per request.
 */
const rulesByLimits = new WeakMap<WorkspaceLimits, Map<string, RateLimitRule[]>>();

function rulesFor(limits: WorkspaceLimits, callerBucket: string): RateLimitRule[] {
  let byCaller = rulesByLimits.get(limits);
  if (!byCaller) {
    byCaller = new Map();
    rulesByLimits.set(limits, byCaller);
  }
  let rules = byCaller.get(callerBucket);
  if (!rules) {
    rules = rateLimitRules(limits, callerBucket);
    byCaller.set(callerBucket, rules);
  }
  return rules;
}

export const rateLimit: MiddlewareHandler<HonoEnv> = async (c, next) => {
  const principal = c.get("principal");
  const limits = c.get("limits");
  if (!principal || principal.kind === "operator" || !limits) return next();

  const callerBucket = principal.kind === "api_key" ? `key:${principal.keyId}` : `user:${principal.userId}`;
  let decision: RateLimitDecision;
  try {
    decision = await limiterFor(c.get("config").WORKSPACE_LIMITER).check(
      principal.workspaceId,
      rulesFor(limits, callerBucket),
    );
  } catch (error) {
    // Without the limiter nothing can be admitted safely: fail closed, but as a retryable 503.
    c.get("logger").error("rate limiter unavailable", { error });
    throw new ApiError("DEPENDENCY_UNAVAILABLE", "The rate limiter is unavailable; retry shortly.", {
      headers: { "Retry-After": "1" },
    });
  }
  const headers = rateLimitHeaders(decision);
  if (!decision.allowed) {
    throw new ApiError(
      "RATE_LIMITED",
      `Rate limit "${decision.policy.name}" reached; retry after ${decision.retryAfterSeconds} s.`,
      {
        headers,
        extensions: { limit: decision.policy.limit, retry_after_seconds: decision.retryAfterSeconds },
      },
    );
  }
  await next();
  setResponseHeaders(c, headers);
};
