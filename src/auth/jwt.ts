import {
  createRemoteJWKSet,
  errors,
  type JWTPayload,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
  jwtVerify,
} from "jose";
import type { AppConfig } from "../env.ts";
import { ApiError } from "../lib/problem.ts";
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

/** The JWKS could not be had (unreachable, timed out, not a 200, not a key set): no verdict on the token. */
class KeySetUnavailable extends Error {}

/**
 * The remote key set, with its fetch failing told apart from the token not matching it. A failed fetch was answered
 * 401 like a forged token, and counted against the caller's address: while the identity provider was down, every
 * user behind one address had it blocked after ten tries, and stayed refused after the provider came back.
 */
function remoteKeySet(url: string): JWTVerifyGetKey {
  let jwks = jwksByUrl.get(url);
  if (!jwks) {
    const remote = createRemoteJWKSet(new URL(url), { cacheMaxAge: 10 * 60_000, cooldownDuration: 30_000 });
    jwks = async (header, token) => {
      try {
        return await remote(header, token);
      } catch (error) {
        // The fetch's failures: a network error (not jose's), its timeout, a status or body that is no key set.
        const unavailable =
          !(error instanceof errors.JOSEError) ||
          error instanceof errors.JWKSTimeout ||
          error instanceof errors.JWKSInvalid ||
          error.code === errors.JOSEError.code;
        throw unavailable ? new KeySetUnavailable("JWKS unavailable", { cause: error }) : error;
      }
    };
    jwksByUrl.set(url, jwks);
  }
  return jwks;
}

export function isJwtConfigured(config: AppConfig): boolean {
  return Boolean(config.JWT_JWKS_URL || config.JWT_SECRET);
}

/**
 * Verifies against a key set. A token naming no `kid` (it is optional) that more than one key could have signed, as
 * during a key rotation, is tried with each: jose leaves that to its caller, and such tokens were all refused.
 */
async function verifyWithKeySet(token: string, jwks: JWTVerifyGetKey, options: JWTVerifyOptions): Promise<JWTPayload> {
  try {
    return (await jwtVerify(token, jwks, options)).payload;
  } catch (error) {
    if (!(error instanceof errors.JWKSMultipleMatchingKeys)) throw error;
    for await (const key of error) {
      try {
        return (await jwtVerify(token, key, options)).payload;
      } catch (keyError) {
        if (!(keyError instanceof errors.JWSSignatureVerificationFailed)) throw keyError;
      }
    }
    throw new errors.JWSSignatureVerificationFailed();
  }
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

/**
 * Verified claims, or null for any failure of the token's: callers say only "invalid credentials". A JWKS that cannot
 * be fetched is a 503 (DEPENDENCY_UNAVAILABLE), thrown: it says nothing of the token.
 */
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
      const jwks = remoteKeySet(config.JWT_JWKS_URL);
      payload = await verifyWithKeySet(token, jwks, { ...options, algorithms: ASYMMETRIC_ALGORITHMS });
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
  } catch (error) {
    if (error instanceof KeySetUnavailable) {
      const detail = "The identity provider's signing keys cannot be fetched; retry shortly.";
      throw new ApiError("DEPENDENCY_UNAVAILABLE", detail, { headers: { "Retry-After": "5" } });
    }
    return null;
  }
}
