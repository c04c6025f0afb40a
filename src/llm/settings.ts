import { eq } from "drizzle-orm";
import { createDb } from "../db/client.ts";
import { workspaces } from "../db/schema.ts";
import type { AppConfig } from "../env.ts";
import type { WorkspaceSettings } from "./router.ts";
import { chainTargets, parseChain, type RouteTarget } from "./routing.ts";

/**
 * A workspace's routing and budgets, read from D1 and kept in the isolate for
 * a few seconds so the hot path does not read the row on every call. The
 * routes that change them (PUT /api/v1/budgets, PATCH /api/v1/workspace)
 * forget the workspace's entry in their isolate at once; other isolates see
 * the change within `SETTINGS_TTL_MS`.
 */

const SETTINGS_TTL_MS = 5_000;
const MAX_CACHED_WORKSPACES = 5_000;
const cache = new Map<string, { settings: WorkspaceSettings; fetchedAtMs: number }>();

export function forgetWorkspaceSettings(workspaceId: string): void {
  cache.delete(workspaceId);
}

/** LLM_DEFAULT_CHAIN parsed once per isolate (it is the same for every request), not once per call. */
let parsedDefault: { text: string | undefined; chain: RouteTarget[] } | undefined;

function defaultChainOf(text: string | undefined): RouteTarget[] {
  if (parsedDefault === undefined || parsedDefault.text !== text) parsedDefault = { text, chain: parseChain(text) };
  return parsedDefault.chain;
}

export function settingsLoader(config: Pick<AppConfig, "DB" | "LLM_DEFAULT_CHAIN">) {
  const defaultChain = defaultChainOf(config.LLM_DEFAULT_CHAIN);
  return async (workspaceId: string): Promise<WorkspaceSettings> => {
    const nowMs = Date.now();
    const cached = cache.get(workspaceId);
    if (cached && nowMs - cached.fetchedAtMs < SETTINGS_TTL_MS) return cached.settings;
    const rows = await createDb(config.DB)
      .select({ llm: workspaces.llm, budgets: workspaces.budgets })
      .from(workspaces)
      .where(eq(workspaces.id, workspaceId))
      .limit(1);
    const row = rows[0];
    const settings: WorkspaceSettings = {
      strategy: row?.llm?.strategy ?? "fallback",
      // Each entry's own price is resolved here, once per load, not on every call.
      chain: row?.llm?.chain?.length ? chainTargets(row.llm.chain) : defaultChain,
      defaultChain: !row?.llm?.chain?.length,
      budgets: row?.budgets ?? null,
    };
    if (cache.size >= MAX_CACHED_WORKSPACES) cache.clear();
    cache.set(workspaceId, { settings, fetchedAtMs: nowMs });
    return settings;
  };
}
