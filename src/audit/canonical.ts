/**
 * What the hash chain covers. An entry's hash is
 * `sha256_hex(CHAIN_VERSION "\n" prev_hash "\n" canonical(entry))`, where the
 * canonical form is a JSON array of the entry's fields in a fixed order with
 * the JSON columns re-serialised with sorted keys, so the hash depends on the
 * values and not on how a driver happens to format them. `workspace_id` and
 * `seq` are inside, so an entry cannot be moved to another place or workspace.
 */

import { sha256Hex } from "../lib/crypto.ts";

export const CHAIN_VERSION = "mgx-audit-v1";
/** prev_hash of a workspace's first entry. */
export const GENESIS_HASH = "0".repeat(64);

/** The stored columns the chain covers (snake_case, as D1 returns them). */
export interface ChainedRow {
  id: string;
  workspace_id: string;
  seq: number;
  actor_type: string;
  actor_id: string;
  actor_display: string | null;
  action: string;
  resource_type: string;
  resource_id: string | null;
  request_id: string | null;
  trace_id: string | null;
  ip: string | null;
  user_agent: string | null;
  changes: string | null;
  metadata: string | null;
  created_at: string;
}

/** JSON with object keys sorted at every depth; `undefined` members are dropped as JSON.stringify does. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value === null || typeof value !== "object") return value;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort()) {
    const inner = (value as Record<string, unknown>)[key];
    if (inner !== undefined) out[key] = sortKeys(inner);
  }
  return out;
}

/** A stored JSON column in canonical form; text that is not JSON is covered as it is. */
function canonicalColumn(text: string | null): string | null {
  if (text === null) return null;
  try {
    return canonicalJson(JSON.parse(text));
  } catch {
    return text;
  }
}

export function canonicalEntry(row: ChainedRow): string {
  return JSON.stringify([
    row.workspace_id,
    row.seq,
    row.id,
    row.created_at,
    row.actor_type,
    row.actor_id,
    row.actor_display,
    row.action,
    row.resource_type,
    row.resource_id,
    row.request_id,
    row.trace_id,
    row.ip,
    row.user_agent,
    canonicalColumn(row.changes),
    canonicalColumn(row.metadata),
  ]);
}

export function entryHash(prevHash: string, row: ChainedRow): Promise<string> {
  return sha256Hex(`${CHAIN_VERSION}\n${prevHash}\n${canonicalEntry(row)}`);
}
