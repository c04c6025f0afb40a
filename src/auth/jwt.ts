import { createRemoteJWKSet, type JWTPayload, type JWTVerifyGetKey, jwtVerify } from "jose";
import type { AppConfig } from "../env.ts";
import { hasLoneSurrogate } from "../lib/unicode.ts";
import { SCOPES, type Scope } from "./principal.ts";

/**
 * OAuth2 access tokens (JWT) verified with jose. Keys come from a JWKS URL
 * (cached by jose per isolate) or an HS256 secret. The accepted algorithms are
 * fixed by which one is configured, so `alg: none` and HS/RS swaps fail.
 */

const CLOCK_SKEW_SECONDS = 60;
const ASYMMETRIC_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"];
/** Scopes granted when a token carries no `scope` claim: read-only. */
const DEFAULT_TOKEN_SCOPES: Scope[] = ["tasks:read", "events:read"];
const WORKSPACE_ID = /^ws_[A-Za-z0-9_]+$/;

export interface VerifiedToken {
  userId: string;
  workspaceId: string;
  scopes: Scope[];
  email?: string;
  /** The last moment the token is accepted: `exp` plus the clock skew allowed. */
  expiresAtMs: number;
}

const jwksByUrl = new Map<string, JWTVerifyGetKey>();

export function isJwtConfigured(config: AppConfig): boolean {
  return Boolean(config.JWT_JWKS_URL || config.JWT_SECRET);
}

/** Looks like a compact JWS (three base64url parts); anything else is not tried as a JWT. */
export function looksLikeJwt(token: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token);
}

function scopesFrom(payload: JWTPayload): Scope[] {
  const raw = payload.scope ?? payload.scp;
  if (raw === undefined) return DEFAULT_TOKEN_SCOPES;
  const requested = Array.isArray(raw) ? raw.map(String) : String(raw).split(/\s+/);
  return requested.filter((scope): scope is Scope => (SCOPES as readonly string[]).includes(scope));
}

/** Verified claims, or null for any failure: callers say only "invalid credentials". */
export async function verifyAccessToken(config: AppConfig, token: string): Promise<VerifiedToken | null> {
  if (!isJwtConfigured(config)) return null;
  const options = {
    issuer: config.JWT_ISSUER,
    audience: config.JWT_AUDIENCE,
    clockTolerance: CLOCK_SKEW_SECONDS,
    requiredClaims: ["exp", "sub"],
  };
  try {
    let payload: JWTPayload;
    if (config.JWT_JWKS_URL) {
      let jwks = jwksByUrl.get(config.JWT_JWKS_URL);
      if (!jwks) {
        jwks = createRemoteJWKSet(new URL(config.JWT_JWKS_URL), { cacheMaxAge: 10 * 60_000, cooldownDuration: 30_000 });
        jwksByUrl.set(config.JWT_JWKS_URL, jwks);
      }
      ({ payload } = await jwtVerify(token, jwks, { ...options, algorithms: ASYMMETRIC_ALGORITHMS }));
    } else {
      const secret = new TextEncoder().encode(config.JWT_SECRET);
      ({ payload } = await jwtVerify(token, secret, { ...options, algorithms: ["HS256"] }));
    }
    const workspaceId = payload.workspace_id;
    // jose checks that `sub` is present, not that it is a string (RFC 7519 says it is): a numeric one passed, and
    // every audited write of its bearer was a 500 (the audit entry's actor id must be text). One with a lone
    // surrogate was stored as U+FFFD in created_by and the audit log: another user's id, as far as they tell.
    if (typeof workspaceId !== "string" || !WORKSPACE_ID.test(workspaceId)) return null;
    if (typeof payload.sub !== "string" || payload.sub === "" || hasLoneSurrogate(payload.sub)) return null;
    const email = typeof payload.email === "string" && !hasLoneSurrogate(payload.email) ? payload.email : undefined;
    // requiredClaims has jose check `exp` is there and a number.
    const expiresAtMs = ((payload.exp as number) + CLOCK_SKEW_SECONDS) * 1000;
    return { userId: payload.sub, workspaceId, scopes: scopesFrom(payload), email, expiresAtMs };
  } catch {
    return null;
  }
}
