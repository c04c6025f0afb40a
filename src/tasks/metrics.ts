import type { Depth } from "../limits/admission.ts";
import type { RunEnd } from "./claims.ts";

/**
 * Raw Analytics Engine points for the dashboards: queue depth per workspace
 * (pending in line, holding a slot = queued or running) at every admission and
 * release, and one point per run. Writes are fire-and-forget; without the
 * binding (tests) nothing is written.
 */

type Metrics = AnalyticsEngineDataset | undefined;

export function recordQueueDepth(metrics: Metrics, workspaceId: string, depth: Depth | undefined): void {
  if (!metrics || !depth) return;
  metrics.writeDataPoint({
    indexes: [workspaceId],
    blobs: ["task.queue_depth"],
    doubles: [depth.pending, depth.leased],
  });
}

export function recordRefusal(metrics: Metrics, workspaceId: string, pending: number, retryAfterMs: number): void {
  metrics?.writeDataPoint({
    indexes: [workspaceId],
    blobs: ["task.refused", "pending_cap"],
    doubles: [pending, retryAfterMs],
  });
}

export function recordRun(
  metrics: Metrics,
  run: { workspaceId: string; type: string; end: RunEnd; durationMs: number; simulated: boolean },
  usage: { promptTokens: number; completionTokens: number; costUsd: number },
): void {
  metrics?.writeDataPoint({
    indexes: [run.workspaceId],
    blobs: ["task.run", run.type, run.end.kind, run.simulated ? "simulated" : "real"],
    doubles: [run.durationMs, usage.promptTokens, usage.completionTokens, usage.costUsd],
  });
}
