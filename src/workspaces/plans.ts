import type { Plan, WorkspaceLimits } from "../db/schema.ts";

/** Default limits per plan; an operator may override any of them per workspace. */
export const PLAN_LIMITS: Record<Plan, WorkspaceLimits> = {
  free: { requests_per_second: 5, burst: 20, max_running_tasks: 2, max_pending_tasks: 50 },
  team: { requests_per_second: 50, burst: 100, max_running_tasks: 10, max_pending_tasks: 1_000 },
  enterprise: { requests_per_second: 500, burst: 1_000, max_running_tasks: 100, max_pending_tasks: 10_000 },
};

export const PLANS = Object.keys(PLAN_LIMITS) as [Plan, ...Plan[]];

/** Rules for the WorkspaceLimiter: the workspace's bucket and the calling key's (or user's) own. */
export function rateLimitRules(limits: WorkspaceLimits, callerBucket: string) {
  return [
    { name: "workspace", ratePerSecond: limits.requests_per_second, burst: limits.burst },
    {
      name: callerBucket,
      ratePerSecond: limits.key_requests_per_second ?? limits.requests_per_second,
      burst: limits.key_burst ?? limits.burst,
    },
  ];
}
