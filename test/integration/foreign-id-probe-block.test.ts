import { env, exports } from "cloudflare:workers";
import { SignJWT } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { PROBE_POLICY } from "../../src/auth/security.ts";
import { createTestKey, createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";
import { insertTask } from "../unit/tasks/fakes.ts";

/**
 * A credential that keeps asking for other workspaces' ids is blocked (403, `blocked: true`) and, as the problem's
 * `blocked` member documents, "refused whatever it sends until the block lapses". The block must not become an
 * oracle either: while it lasts, another workspace's id and a missing id must still answer alike, or the 403 tells
 * the prober which ids exist elsewhere.
 */

const BASE = "http://edge.test";
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));
const MISSING_TASK = "task_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3";

let theirs: TestWorkspace;
beforeAll(async () => {
  theirs = await createTestWorkspace(fetcher, BASE, { name: "theirs" });
});

/** Asks for another workspace's task until the credential is blocked; answers the statuses it got. */
async function probeUntilBlocked(prober: TestWorkspace, foreignTaskId: string): Promise<number[]> {
  const statuses: number[] = [];
  for (let attempt = 0; attempt < PROBE_POLICY.threshold; attempt++) {
    const response = await fetcher(`${BASE}/api/v1/tasks/${foreignTaskId}`, { headers: prober.headers });
    statuses.push(response.status);
    await response.body?.cancel();
  }
  return statuses;
}

function normalise(body: Record<string, unknown>) {
  const { request_id: _requestId, detail: _detail, ...rest } = body;
  return rest;
}

describe("a credential blocked for probing other workspaces' ids", () => {
  it("answers another workspace's id and a missing id alike, so the block tells nothing of which exist", async () => {
    const prober = await createTestWorkspace(fetcher, BASE, { name: "prober" });
    const foreign = await insertTask(theirs.id);
    const statuses = await probeUntilBlocked(prober, foreign.id);
    // Every probe before the block reads as a missing id.
    expect(statuses.slice(0, -1).every((status) => status === 404)).toBe(true);

    const foreignAnswer = await fetcher(`${BASE}/api/v1/tasks/${foreign.id}`, { headers: prober.headers });
    const missingAnswer = await fetcher(`${BASE}/api/v1/tasks/${MISSING_TASK}`, { headers: prober.headers });
    expect(missingAnswer.status).toBe(foreignAnswer.status);
    expect(normalise(await missingAnswer.json())).toEqual(normalise(await foreignAnswer.json()));
  });

  it("is refused whatever it sends until the block lapses; the workspace's other keys are not", async () => {
    const prober = await createTestWorkspace(fetcher, BASE, { name: "prober" });
    const other = await createTestKey(fetcher, BASE, prober.key, ["tasks:read"]);
    const foreign = await insertTask(theirs.id);
    await probeUntilBlocked(prober, foreign.id);

    for (const [method, path] of [
      ["GET", "/api/v1/tasks"],
      ["GET", "/api/v1/workspace"],
      ["GET", "/api/v1/api-keys"],
    ] as const) {
      const response = await fetcher(`${BASE}${path}`, { method, headers: prober.headers });
      expect(response.status, `${method} ${path}`).toBe(403);
      expect(await response.json()).toMatchObject({ code: "FORBIDDEN", blocked: true });
    }
    const created = await fetcher(`${BASE}/api/v1/api-keys`, {
      method: "POST",
      headers: { ...prober.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ name: "fresh", scopes: ["admin"] }),
    });
    expect(created.status).toBe(403);

    // The block is the credential's, not its workspace's.
    const list = await fetcher(`${BASE}/api/v1/tasks`, { headers: other.headers });
    expect(list.status).toBe(200);
  });

  it("is the credential's own: a user whose token's sub is the blocked key's id is not refused", async () => {
    const prober = await createTestWorkspace(fetcher, BASE, { name: "prober" });
    const foreign = await insertTask(theirs.id);
    await probeUntilBlocked(prober, foreign.id);

    const userToken = await new SignJWT({ workspace_id: prober.id, scope: "tasks:read" })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject(prober.keyId)
      .setIssuer(env.JWT_ISSUER as string)
      .setAudience(env.JWT_AUDIENCE as string)
      .setIssuedAt()
      .setExpirationTime("5m")
      .sign(new TextEncoder().encode(env.JWT_SECRET as string));
    const userHeaders = { Authorization: `Bearer ${userToken}` };
    expect((await fetcher(`${BASE}/api/v1/tasks`, { headers: userHeaders })).status).toBe(200);
    expect((await fetcher(`${BASE}/api/v1/tasks/${MISSING_TASK}`, { headers: userHeaders })).status).toBe(404);
    // The key itself stays blocked.
    expect((await fetcher(`${BASE}/api/v1/tasks`, { headers: prober.headers })).status).toBe(403);
  });
});
