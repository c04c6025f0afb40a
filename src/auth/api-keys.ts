import { and, desc, eq, isNull, lt, or } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { type ApiKeyScope, apiKeys, type WorkspaceLimits, workspaces } from "../db/schema.ts";
import { displayPrefix, generateApiKey, hashApiKey } from "../lib/api-key-format.ts";
import { newId } from "../lib/ids.ts";

/** Workspace API keys: creation (the key is returned once), listing, revocation, and lookup by key. */

export interface ApiKeyView {
  id: string;
  name: string;
  prefix: string;
  scopes: ApiKeyScope[];
  created_at: string;
  created_by: string | null;
  last_used_at: string | null;
  expires_at: string | null;
  revoked_at: string | null;
}

type ApiKeyRow = typeof apiKeys.$inferSelect;

export function toApiKeyView(row: ApiKeyRow): ApiKeyView {
  return {
    id: row.id,
    name: row.name,
    prefix: row.displayPrefix,
    scopes: row.scopes,
    created_at: row.createdAt,
    created_by: row.createdBy,
    last_used_at: row.lastUsedAt,
    expires_at: row.expiresAt,
    revoked_at: row.revokedAt,
  };
}

export interface NewApiKey {
  /** The complete row, so it can be both inserted and shown. */
  row: ApiKeyRow;
  /** The secret itself: shown to the caller once, never stored. */
  key: string;
}

/**
 * A new key's fields as the API names them (NewApiKeySchema), as newApiKey
 * takes them. Spelled out: spreading the body dropped `expires_at`, which
 * newApiKey calls `expiresAt`, and every key lived for ever.
 */
export function newApiKeyFields(body: { name: string; scopes: ApiKeyScope[]; expires_at?: string }) {
  return {
    name: body.name,
    scopes: body.scopes,
    // Stored in UTC like every other time, whatever offset the client wrote.
    expiresAt: body.expires_at === undefined ? null : new Date(body.expires_at).toISOString(),
  };
}

/** Builds a key and its row; the caller inserts the row in the same batch as its audit entry. */
export async function newApiKey(input: {
  workspaceId: string;
  name: string;
  scopes: ApiKeyScope[];
  createdBy: string;
  expiresAt?: string | null;
}): Promise<NewApiKey> {
  const key = generateApiKey();
  return {
    key,
    row: {
      id: newId("apiKey"),
      workspaceId: input.workspaceId,
      name: input.name,
      keyHash: await hashApiKey(key),
      displayPrefix: displayPrefix(key),
      scopes: [...new Set(input.scopes)],
      createdBy: input.createdBy,
      createdAt: new Date().toISOString(),
      expiresAt: input.expiresAt ?? null,
      lastUsedAt: null,
      revokedAt: null,
    },
  };
}

export interface KeyLookup {
  keyId: string;
  workspaceId: string;
  name: string;
  prefix: string;
  scopes: ApiKeyScope[];
  revokedAt: string | null;
  expiresAt: string | null;
  limits: WorkspaceLimits;
}

export type FindKey = (db: Database, keyHash: string) => Promise<KeyLookup | null>;

/** One indexed read: the key (by hash) joined to its workspace's limits. */
export async function findKeyByHash(db: Database, keyHash: string): Promise<KeyLookup | null> {
  const rows = await db
    .select({
      keyId: apiKeys.id,
      workspaceId: apiKeys.workspaceId,
      name: apiKeys.name,
      prefix: apiKeys.displayPrefix,
      scopes: apiKeys.scopes,
      revokedAt: apiKeys.revokedAt,
      expiresAt: apiKeys.expiresAt,
      limits: workspaces.limits,
    })
    .from(apiKeys)
    .innerJoin(workspaces, eq(workspaces.id, apiKeys.workspaceId))
    .where(eq(apiKeys.keyHash, keyHash))
    .limit(1);
  return rows[0] ?? null;
}

export async function listApiKeys(
  db: Database,
  workspaceId: string,
  page: { limit: number; after?: { createdAt: string; id: string } },
): Promise<ApiKeyRow[]> {
  const after = page.after;
  return db
    .select()
    .from(apiKeys)
    .where(
      and(
        eq(apiKeys.workspaceId, workspaceId),
        after
          ? or(
              lt(apiKeys.createdAt, after.createdAt),
              and(eq(apiKeys.createdAt, after.createdAt), lt(apiKeys.id, after.id)),
            )
          : undefined,
      ),
    )
    .orderBy(desc(apiKeys.createdAt), desc(apiKeys.id))
    .limit(page.limit + 1);
}

export async function findApiKey(db: Database, workspaceId: string, keyId: string): Promise<ApiKeyRow | null> {
  const rows = await db
    .select()
    .from(apiKeys)
    .where(and(eq(apiKeys.workspaceId, workspaceId), eq(apiKeys.id, keyId)))
    .limit(1);
  return rows[0] ?? null;
}

/** The key while it is not revoked: what a revocation changes, and when its audit entry is written. */
export function unrevokedKey(workspaceId: string, keyId: string) {
  return and(eq(apiKeys.workspaceId, workspaceId), eq(apiKeys.id, keyId), isNull(apiKeys.revokedAt));
}

/** Revokes a key not yet revoked; a revoked one keeps the time it was first revoked at. */
export function revokeStatement(db: Database, workspaceId: string, keyId: string, revokedAt: string) {
  return db.update(apiKeys).set({ revokedAt }).where(unrevokedKey(workspaceId, keyId));
}

export function touchLastUsed(db: Database, keyId: string, usedAt: string) {
  return db.update(apiKeys).set({ lastUsedAt: usedAt }).where(eq(apiKeys.id, keyId));
}
