import { env, exports } from "cloudflare:workers";
import { exportJWK, generateKeyPair, type JWTPayload, SignJWT } from "jose";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { verifyAccessToken } from "../../src/auth/jwt.ts";
import { checkEnv } from "../../src/env.ts";
import { createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";
import { watch } from "../unit/events/hub-client.ts";

const BASE = "http://edge.test";
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));
const SECRET = new TextEncoder().encode(env.JWT_SECRET as string);
const ISSUER = env.JWT_ISSUER as string;
const AUDIENCE = env.JWT_AUDIENCE as string;
const nowSeconds = () => Math.floor(Date.now() / 1000);

let workspace: TestWorkspace;
beforeAll(async () => {
  workspace = await createTestWorkspace(fetcher, BASE);
});
afterEach(() => vi.restoreAllMocks());

function token(
  claims: Record<string, unknown> = {},
  options: { audience?: string; issuer?: string; exp?: number; nbf?: number } = {},
) {
  const jwt = new SignJWT({
    workspace_id: workspace.id,
    scope: "tasks:read tasks:write",
    email: "dev@example.com",
    ...claims,
  })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject("user_42")
    .setIssuer(options.issuer ?? ISSUER)
    .setAudience(options.audience ?? AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(options.exp ?? nowSeconds() + 300);
  if (options.nbf !== undefined) jwt.setNotBefore(options.nbf);
  return jwt.sign(SECRET);
}

function call(jwt: string, method = "GET", body?: unknown) {
  return fetcher(`${BASE}/api/v1/workspace`, {
    method,
    headers: { Authorization: `Bearer ${jwt}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
}

function base64url(value: unknown): string {
  return btoa(JSON.stringify(value)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

describe("JWT bearer tokens (HS256 secret)", () => {
  it("a valid token maps workspace_id to the workspace and sub to the user", async () => {
    const response = await call(await token());
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ id: workspace.id });
  });

  it("accepts 60 s of clock skew, and no more", async () => {
    expect((await call(await token({}, { exp: nowSeconds() - 30 }))).status).toBe(200);
    expect((await call(await token({}, { exp: nowSeconds() - 120 }))).status).toBe(401);
    expect((await call(await token({}, { nbf: nowSeconds() + 30 }))).status).toBe(200);
    expect((await call(await token({}, { nbf: nowSeconds() + 120 }))).status).toBe(401);
  });

  it("closes an event stream when its token stops being accepted: exp plus the 60 s of skew", async () => {
    // Accepted for about 3 s more: expired 57 s ago, within the skew.
    const jwt = await token({ scope: "events:read" }, { exp: nowSeconds() - 57 });
    const upgrade = await fetcher(`${BASE}/api/v1/events/ws`, {
      headers: { Authorization: `Bearer ${jwt}`, Upgrade: "websocket" },
    });
    expect(upgrade.status).toBe(101);
    const socket = watch(upgrade.webSocket!);
    expect(await socket.closed).toMatchObject({ code: 1008, reason: "credentials expired" });
    expect(socket.frames.at(-1)).toMatchObject({ type: "error", code: "CREDENTIALS_EXPIRED" });
  });

  it("refuses a wrong audience or issuer", async () => {
    expect((await call(await token({}, { audience: "someone-else" }))).status).toBe(401);
    expect((await call(await token({}, { issuer: "https://evil.test" }))).status).toBe(401);
  });

  it("refuses alg none", async () => {
    const claims = { workspace_id: workspace.id, sub: "user_42", iss: ISSUER, aud: AUDIENCE, exp: nowSeconds() + 300 };
    const unsigned = `${base64url({ alg: "none", typ: "JWT" })}.${base64url(claims)}.`;
    const response = await call(unsigned);
    expect(response.status).toBe(401);
    expect(await response.json()).toMatchObject({ detail: "Invalid credentials." });
  });

  it("refuses an RS256 token when the server expects HS256", async () => {
    const { privateKey } = await generateKeyPair("RS256");
    const rs = await new SignJWT({ workspace_id: workspace.id })
      .setProtectedHeader({ alg: "RS256" })
      .setSubject("user_42")
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setExpirationTime(nowSeconds() + 300)
      .sign(privateKey);
    expect((await call(rs)).status).toBe(401);
  });

  it("refuses a token for a workspace that does not exist, or without one", async () => {
    expect((await call(await token({ workspace_id: "ws_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3" }))).status).toBe(401);
    expect((await call(await token({ workspace_id: undefined }))).status).toBe(401);
  });

  it("refuses a token whose sub is not a string (found by fuzz: its audited writes were a 500)", async () => {
    const numericSub = await new SignJWT({
      workspace_id: workspace.id,
      sub: 42,
      scope: "admin",
    } as unknown as JWTPayload)
      .setProtectedHeader({ alg: "HS256" })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setExpirationTime(nowSeconds() + 300)
      .sign(SECRET);
    const rename = await call(numericSub, "PATCH", { name: "Renamed by sub 42" });
    expect(rename.status).toBe(401);
    expect(rename.headers.get("Content-Type")).toBe("application/problem+json");
    expect(await rename.json()).toMatchObject({ code: "UNAUTHENTICATED", detail: "Invalid credentials." });
    const after = await fetcher(`${BASE}/api/v1/workspace`, { headers: workspace.headers });
    expect(((await after.json()) as { name: string }).name).not.toBe("Renamed by sub 42");
  });

  it("refuses a token whose sub has a lone surrogate: stored as U+FFFD, it would name someone else", async () => {
    const loneSurrogate = await new SignJWT({ workspace_id: workspace.id, scope: "admin" })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("user_\ud800")
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setExpirationTime(nowSeconds() + 300)
      .sign(SECRET);
    // From an address of its own: this file's other refusals come close to the failed-login block (10 in 60 s).
    const rename = await fetcher(`${BASE}/api/v1/workspace`, {
      method: "PATCH",
      headers: {
        Authorization: `Bearer ${loneSurrogate}`,
        "Content-Type": "application/json",
        "CF-Connecting-IP": "192.0.2.77",
      },
      body: JSON.stringify({ name: "Renamed by a lone surrogate" }),
    });
    expect(rename.status).toBe(401);
    expect(await rename.json()).toMatchObject({ code: "UNAUTHENTICATED", detail: "Invalid credentials." });
  });

  it("grants the token's scopes only", async () => {
    const readOnly = await token({ scope: "tasks:read" });
    expect((await call(readOnly)).status).toBe(200);
    expect((await call(readOnly, "PATCH", { name: "nope" })).status).toBe(403);
  });
});

describe("JWT bearer tokens (JWKS)", () => {
  it("verifies RS256 against the JWKS and refuses the HS/RS swap", async () => {
    const { publicKey, privateKey } = await generateKeyPair("RS256", { extractable: true });
    const publicJwk = { ...(await exportJWK(publicKey)), kid: "k1", alg: "RS256", use: "sig" };
    vi.spyOn(globalThis, "fetch").mockImplementation(async (input) => {
      const url = input instanceof Request ? input.url : String(input);
      if (url === "https://issuer.test/.well-known/jwks.json") return Response.json({ keys: [publicJwk] });
      return new Response("not found", { status: 404 });
    });
    const checked = checkEnv({ ...env, JWT_SECRET: "", JWT_JWKS_URL: "https://issuer.test/.well-known/jwks.json" });
    if (!checked.ok) throw new Error(JSON.stringify(checked.problems));
    const config = checked.config;

    const valid = await new SignJWT({ workspace_id: workspace.id })
      .setProtectedHeader({ alg: "RS256", kid: "k1" })
      .setSubject("user_7")
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setExpirationTime(nowSeconds() + 300)
      .sign(privateKey);
    expect(await verifyAccessToken(config, valid)).toMatchObject({ userId: "user_7", workspaceId: workspace.id });

    // The classic swap: HS256 "signed" with the server's public key material.
    const publicKeyBytes = new TextEncoder().encode(JSON.stringify(publicJwk));
    const swapped = await new SignJWT({ workspace_id: workspace.id })
      .setProtectedHeader({ alg: "HS256", kid: "k1" })
      .setSubject("user_7")
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setExpirationTime(nowSeconds() + 300)
      .sign(publicKeyBytes);
    expect(await verifyAccessToken(config, swapped)).toBeNull();
  });
});
