import { DurableObject } from "cloudflare:workers";

/**
 * One per workspace (addressed by workspace id). It will hold the workspace's
 * token buckets, task concurrency slots, priority admission queue and token
 * budgets; today it answers readiness probes. State lives in its SQLite storage.
 */
export class WorkspaceLimiter extends DurableObject {
  async ping(): Promise<{ ok: true; object: "WorkspaceLimiter"; time: string }> {
    return { ok: true, object: "WorkspaceLimiter", time: new Date().toISOString() };
  }
}
