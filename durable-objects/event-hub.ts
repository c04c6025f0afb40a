import { DurableObject } from "cloudflare:workers";

/**
 * One per workspace. It will hold the workspace's hibernating WebSockets and
 * its seq-numbered event log (replay window) in SQLite; today it answers probes.
 */
export class EventHub extends DurableObject {
  async ping(): Promise<{ ok: true; object: "EventHub"; time: string }> {
    return { ok: true, object: "EventHub", time: new Date().toISOString() };
  }
}
