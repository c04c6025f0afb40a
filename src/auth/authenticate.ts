import { eq } from "drizzle-orm";
import { createDb } from "../db/client.ts";
import { type WorkspaceLimits, workspaces } from "../db/schema.ts";
import type { AppConfig } from "../env.ts";
import { hashApiKey, isApiKeyFormat } from "../lib/api-key-format.ts";
import { timingSafeEqual } from "../lib/crypto.ts";
import { type FindKey, findKeyByHash, type KeyLookup } from "./api-keys.ts";
import { looksLikeJwt, verifyAccessToken } from "./jwt.ts";
import { type Principal, SCOPES, type Scope } from "./principal.ts";

/**
 * Resolves an Authorization header to a principal. Verified keys and
 * workspaces are cached per isolate for at most CACHE_TTL_MS, which bounds how
 * long a revoked key or a changed limit can go unnoticed (the contract allows 5 s).
 */

export const CACHE_TTL_MS = 4_000;
const MAX_CACHE_ENTRIES = 10_000;

export type AuthFailureReason =
  | "missing"
  | "malformed"
  | "unknown_key"
  | "revoked_key"
  | "expired_key"
  | "invalid_token"
  | "unknown_workspace"
  /** A WebSocket upgrade's `?ticket=` the hub refused (unknown, used, expired or forged): src/events/service.ts. */
  | "unknown_ticket";

export type AuthResult =
  | { ok: true; principal: Principal; limits: WorkspaceLimits | null }
  | { ok: false; reason: AuthFailureReason; workspaceId?: string; keyId?: string };

interface Cached<T> {
  value: T;
  cachedAtMs: number;
}

class TtlCache<T> {
  private readonly entries = new Map<string, Cached<T>>();
  get(key: string, nowMs: number): T | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (nowMs - entry.cachedAtMs >= CACHE_TTL_MS) {
      this.entries.delete(key);
      return undefined;
    }
    return entry.value;
  }
  set(key: string, value: T, nowMs: number): void {
    if (this.entries.size >= MAX_CACHE_ENTRIES) {
      // Maps iterate in insertion order: drop the oldest.
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.set(key, { value, cachedAtMs: nowMs });
  }
  delete(key: string): void {
    this.entries.delete(key);
  }
  clear(): void {
    this.entries.clear();
  }
}

const keysByHash = new TtlCache<KeyLookup | null>();
const workspaceLimits = new TtlCache<WorkspaceLimits | null>();
/**
 * Each presented key's SHA-256, so a key sent again within CACHE_TTL_MS is not
 * hashed again (a digest and its promise were a measurable share of the hot
 * path's CPU). It holds keys only as long as the caches above hold what they
 * resolve to, bounded the same way; what a key is worth is still decided by
 * `keysByHash`, so revoking (forgetApiKey) acts as before.
 */
const hashesByKey = new TtlCache<string>();

/** A key just revoked here: this isolate refuses it from now on (the others within CACHE_TTL_MS). */
export function forgetApiKey(keyHash: string): void {
  keysByHash.delete(keyHash);
}

/** For tests that change rows behind the cache's back. */
export function clearAuthCaches(): void {
  hashesByKey.clear();
  keysByHash.clear();
  workspaceLimits.clear();
}

const ALL_SCOPES: ReadonlySet<Scope> = new Set(SCOPES);

function bearerToken(header: string | undefined): string | null | undefined {
  if (header === undefined || header === "") return undefined;
  const match = /^Bearer ([\x21-\x7e]{1,4096})$/i.exec(header.trim());
  return match ? match[1] : null;
}

async function authenticateKey(config: AppConfig, key: string, nowMs: number, find: FindKey): Promise<AuthResult> {
  let keyHash = hashesByKey.get(key, nowMs);
  if (keyHash === undefined) {
    keyHash = await hashApiKey(key);
    hashesByKey.set(key, keyHash, nowMs);
  }
  let lookup = keysByHash.get(keyHash, nowMs);
  if (lookup === undefined) {
    lookup = await find(createDb(config.DB), keyHash);
    keysByHash.set(keyHash, lookup, nowMs);
  }
  if (!lookup) return { ok: false, reason: "unknown_key" };
  const ids = { workspaceId: lookup.workspaceId, keyId: lookup.keyId };
  if (lookup.revokedAt) return { ok: false, reason: "revoked_key", ...ids };
  if (lookup.expiresAt && Date.parse(lookup.expiresAt) <= nowMs) return { ok: false, reason: "expired_key", ...ids };
  return {
    ok: true,
    limits: lookup.limits,
    principal: {
      kind: "api_key",
      workspaceId: lookup.workspaceId,
      keyId: lookup.keyId,
      scopes: new Set(lookup.scopes),
      display: `${lookup.name} (${lookup.prefix}…)`,
      expiresAtMs: lookup.expiresAt ? Date.parse(lookup.expiresAt) : null,
    },
  };
}

async function limitsOf(config: AppConfig, workspaceId: string, nowMs: number): Promise<WorkspaceLimits | null> {
  let limits = workspaceLimits.get(workspaceId, nowMs);
  if (limits === undefined) {
    const rows = await createDb(config.DB)
      .select({ limits: workspaces.limits })
      .from(workspaces)
      .where(eq(workspaces.id, workspaceId))
      .limit(1);
    limits = rows[0]?.limits ?? null;
    workspaceLimits.set(workspaceId, limits, nowMs);
  }
  return limits;
}

export async function authenticate(
  config: AppConfig,
  authorization: string | undefined,
  options: { nowMs?: number; findKey?: FindKey } = {},
): Promise<AuthResult> {
  const nowMs = options.nowMs ?? Date.now();
  const token = bearerToken(authorization);
  if (token === undefined) return { ok: false, reason: "missing" };
  if (token === null) return { ok: false, reason: "malformed" };

  if (config.ADMIN_TOKEN && timingSafeEqual(token, config.ADMIN_TOKEN)) {
    return {
      ok: true,
      limits: null,
      principal: { kind: "operator", workspaceId: null, scopes: ALL_SCOPES, display: "operator" },
    };
  }
  if (token.startsWith("mgx_")) {
    if (!isApiKeyFormat(token)) return { ok: false, reason: "malformed" };
    return authenticateKey(config, token, nowMs, options.findKey ?? findKeyByHash);
  }
  if (!looksLikeJwt(token)) return { ok: false, reason: "malformed" };

  const verified = await verifyAccessToken(config, token);
  if (!verified) return { ok: false, reason: "invalid_token" };
  const limits = await limitsOf(config, verified.workspaceId, nowMs);
  if (!limits) return { ok: false, reason: "unknown_workspace", workspaceId: verified.workspaceId };
  return {
    ok: true,
    limits,
    principal: {
      kind: "user",
      workspaceId: verified.workspaceId,
      userId: verified.userId,
      scopes: new Set(verified.scopes),
      display: verified.email ?? verified.userId,
      expiresAtMs: verified.expiresAtMs,
    },
  };
}
