import { env } from "cloudflare:workers";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { verifyAccessToken } from "../../src/auth/jwt.ts";
import { checkEnv } from "../../src/env.ts";
import { createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";
import { BASE, fetcher } from "../unit/tasks/fakes.ts";

/**
 * A token whose header names no `kid` (RFC 7515 makes it optional) against a JWKS holding more than one key of its
 * algorithm, as during a key rotation: every key that could have signed it is tried. jose reports that case as an
 * error (JWKSMultipleMatchingKeys) for the caller to handle, and it was refused as an invalid token.
 */

let workspace: TestWorkspace;
beforeAll(async () => {
  workspace = await createTestWorkspace(fetcher, BASE, { name: "jwks without kid" });
});
afterEach(() => vi.restoreAllMocks());

async function rsaKey(kid: string) {
  const pair = await generateKeyPair("RS256", { extractable: true });
  return { privateKey: pair.privateKey, jwk: { ...(await exportJWK(pair.publicKey)), kid, alg: "RS256", use: "sig" } };
}

function token(privateKey: CryptoKey, header: { kid?: string } = {}) {
  return new SignJWT({ workspace_id: workspace.id })
    .setProtectedHeader({ alg: "RS256", ...header })
    .setSubject("user_5")
    .setIssuer(env.JWT_ISSUER as string)
    .setAudience(env.JWT_AUDIENCE as string)
    .setExpirationTime(Math.floor(Date.now() / 1000) + 300)
    .sign(privateKey);
}

describe("JWT bearer tokens without a kid (JWKS)", () => {
  it("are verified against each key of their algorithm in the key set, and refused if none verifies them", async () => {
    const [retiring, current, stranger] = await Promise.all([rsaKey("old"), rsaKey("new"), rsaKey("other")]);
    const jwksUrl = `https://idp-${crypto.randomUUID()}.test/.well-known/jwks.json`;
    vi.spyOn(globalThis, "fetch").mockImplementation(async (input) => {
      const url = input instanceof Request ? input.url : String(input);
      if (url === jwksUrl) return Response.json({ keys: [retiring.jwk, current.jwk] });
      return new Response("not found", { status: 404 });
    });
    const checked = checkEnv({ ...env, JWT_SECRET: "", JWT_JWKS_URL: jwksUrl });
    if (!checked.ok) throw new Error(JSON.stringify(checked.problems));
    const config = checked.config;

    for (const signer of [retiring, current]) {
      expect(await verifyAccessToken(config, await token(signer.privateKey))).toMatchObject({
        userId: "user_5",
        workspaceId: workspace.id,
      });
    }
    expect(await verifyAccessToken(config, await token(stranger.privateKey))).toBeNull();
    // With a kid, only that key: the other's signature is not tried.
    expect(await verifyAccessToken(config, await token(current.privateKey, { kid: "old" }))).toBeNull();
  });
});
