import type { Context } from "hono";
import { createDb } from "../db/client.ts";
import { TenantDb, type TenantTable } from "../db/tenant.ts";
import { ApiError } from "../lib/problem.ts";
import type { HonoEnv } from "../types.ts";
import { securityMonitor } from "./security.ts";

/** The caller's workspace as a TenantDb; only workspace principals get here (requireScope). */
export function tenantDb(c: Context<HonoEnv>): TenantDb {
  const workspaceId = c.get("workspaceId");
  if (!workspaceId) throw new ApiError("FORBIDDEN", "This route needs a workspace credential.");
  return new TenantDb(createDb(c.get("config").DB), workspaceId);
}

/**
 * The caller's row or a 404 that reads exactly like a missing id. A miss that
 * is another workspace's id counts as a probe for the security monitor; a
 * credential blocked for probing is refused (403) on every miss, a missing id's
 * as another workspace's, so the refusal tells nothing of which ids exist.
 */
export async function findOwnedOr404<T extends TenantTable>(
  c: Context<HonoEnv>,
  table: T,
  id: string,
  resourceType: string,
): Promise<T["$inferSelect"]> {
  const tenant = tenantDb(c);
  const row = await tenant.findById(table, id);
  if (row) return row;
  const monitor = securityMonitor(c);
  if (await tenant.belongsToAnotherWorkspace(table, id)) await monitor.foreignIdProbed(resourceType, id);
  await monitor.refuseIfProbeBlocked();
  throw new ApiError("NOT_FOUND", `No ${resourceType} ${id}.`);
}
