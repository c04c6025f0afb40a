import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app.ts";
import { createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";
import { BASE, fetcher } from "../unit/tasks/fakes.ts";

/**
 * JWT bearer tokens verified against a JWKS URL while the identity provider's key set cannot be fetched (down,
 * answering 5xx, timing out): that is a dependency down (503, retryable), not the caller's credentials being wrong
 * (401). A 401 also counted as a failed authentication from the caller's address, and ten of them blocked the
 * address: every user behind it kept being refused after the provider came back.
 */

const app = createApp();
const ISSUER = env.JWT_ISSUER as string;
const AUDIENCE = env.JWT_AUDIENCE as string;

let workspace: TestWorkspace;
let privateKey: CryptoKey;
let publicJwk: Record<string, unknown>;
beforeAll(async () => {
  workspace = await createTestWorkspace(fetcher, BASE, { name: "jwks outage" });
  const pair = await generateKeyPair("RS256", { extractable: true });
  privateKey = pair.privateKey;
  publicJwk = { ...(await exportJWK(pair.publicKey)), kid: "k1", alg: "RS256", use: "sig" };
});
afterEach(() => vi.restoreAllMocks());

function signed(key: CryptoKey = privateKey) {
  return new SignJWT({ workspace_id: workspace.id, scope: "tasks:read" })
    .setProtectedHeader({ alg: "RS256", kid: "k1" })
    .setSubject("user_9")
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setExpirationTime(Math.floor(Date.now() / 1000) + 300)
    .sign(key);
}

async function call(jwksUrl: string, jwt: string, ip: string): Promise<Response> {
  const ctx = createExecutionContext();
  const response = await app.fetch(
    new Request(`${BASE}/api/v1/workspace`, { headers: { Authorization: `Bearer ${jwt}`, "CF-Connecting-IP": ip } }),
    { ...env, JWT_SECRET: "", JWT_JWKS_URL: jwksUrl },
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return response;
}

/** The identity provider's JWKS endpoint: `up` decides, at each fetch, whether it answers. */
function identityProvider(jwksUrl: string, up: () => boolean | "unreachable") {
  vi.spyOn(globalThis, "fetch").mockImplementation(async (input) => {
    const url = input instanceof Request ? input.url : String(input);
    if (url !== jwksUrl) return new Response("not found", { status: 404 });
    const state = up();
    if (state === "unreachable") throw new TypeError("Network connection lost.");
    return state ? Response.json({ keys: [publicJwk] }) : new Response("upstream down", { status: 503 });
  });
}

describe("JWT bearer tokens while the JWKS cannot be fetched", () => {
  it("answer a retryable 503 problem, not 401, and do not get the caller's address blocked", async () => {
    const jwksUrl = `https://idp-${crypto.randomUUID()}.test/.well-known/jwks.json`;
    let up: boolean | "unreachable" = false;
    identityProvider(jwksUrl, () => up);
    const jwt = await signed();
    const ip = "203.0.113.77";

    for (const state of [false, "unreachable"] as const) {
      up = state;
      for (let attempt = 0; attempt < 6; attempt++) {
        const response = await call(jwksUrl, jwt, ip);
        expect(response.status).toBe(503);
        expect(response.headers.get("Content-Type")).toBe("application/problem+json");
        expect(response.headers.get("Retry-After")).toMatch(/^\d+$/);
        expect(await response.json()).toMatchObject({ status: 503, code: "DEPENDENCY_UNAVAILABLE" });
      }
    }

    // Back up: the same token from the same address works; twelve outage answers did not block it.
    up = true;
    const recovered = await call(jwksUrl, jwt, ip);
    expect(recovered.status).toBe(200);
    expect(await recovered.json()).toMatchObject({ id: workspace.id });
  });

  it("still refuse (401) a token the key set, once fetched, does not verify", async () => {
    const jwksUrl = `https://idp-${crypto.randomUUID()}.test/.well-known/jwks.json`;
    identityProvider(jwksUrl, () => true);
    const other = await generateKeyPair("RS256");
    const response = await call(jwksUrl, await signed(other.privateKey), "203.0.113.78");
    expect(response.status).toBe(401);
    expect((await call(jwksUrl, await signed(), "203.0.113.78")).status).toBe(200);
  });
});
