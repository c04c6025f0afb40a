import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestKey, createTestWorkspace, TEST_ADMIN_TOKEN } from "../support/workspaces.ts";
import { startWorker, type WorkerProcess } from "./harness.ts";

let worker: WorkerProcess;
beforeAll(async () => {
  worker = await startWorker({ vars: { ADMIN_TOKEN: TEST_ADMIN_TOKEN } });
});
afterAll(async () => {
  await worker?.stop();
});

describe("authentication and limits under wrangler dev", () => {
  it("keeps two workspaces apart", async () => {
    const a = await createTestWorkspace(fetch, worker.baseUrl, { name: "A" });
    const b = await createTestWorkspace(fetch, worker.baseUrl, { name: "B" });
    const bKey = await createTestKey(fetch, worker.baseUrl, b.key, ["tasks:read"]);

    const whoA = (await (await fetch(`${worker.baseUrl}/api/v1/workspace`, { headers: a.headers })).json()) as {
      id: string;
    };
    expect(whoA.id).toBe(a.id);
    const listA = (await (await fetch(`${worker.baseUrl}/api/v1/api-keys`, { headers: a.headers })).json()) as {
      data: { id: string }[];
    };
    expect(listA.data.map((key) => key.id)).toEqual([a.keyId]);
    const foreign = await fetch(`${worker.baseUrl}/api/v1/api-keys/${bKey.id}`, {
      method: "DELETE",
      headers: a.headers,
    });
    expect(foreign.status).toBe(404);
  });

  it("floods a bucket: bounded successes, 429s with Retry-After, recovery after the window", async () => {
    const burst = 10;
    const ratePerSecond = 5;
    const workspace = await createTestWorkspace(fetch, worker.baseUrl, {
      limits: { requests_per_second: ratePerSecond, burst },
    });
    const startedAtMs = Date.now();
    const statuses: number[] = [];
    const retryAfters: number[] = [];
    // 300 requests from 30 concurrent loops, bounded in count.
    await Promise.all(
      Array.from({ length: 30 }, async () => {
        for (let index = 0; index < 10; index++) {
          const response = await fetch(`${worker.baseUrl}/api/v1/whoami`, { headers: workspace.headers });
          statuses.push(response.status);
          if (response.status === 429) retryAfters.push(Number(response.headers.get("retry-after")));
          await response.arrayBuffer();
        }
      }),
    );
    const elapsedSeconds = (Date.now() - startedAtMs) / 1000;
    const admitted = statuses.filter((status) => status === 200).length;
    expect(statuses.every((status) => status === 200 || status === 429)).toBe(true);
    expect(admitted).toBeGreaterThanOrEqual(burst);
    expect(admitted).toBeLessThanOrEqual(burst + Math.ceil(ratePerSecond * elapsedSeconds));
    expect(retryAfters.length).toBeGreaterThan(0);
    expect(Math.min(...retryAfters)).toBeGreaterThanOrEqual(1);

    await new Promise((wake) => setTimeout(wake, Math.max(...retryAfters) * 1000 + 200));
    const recovered = await fetch(`${worker.baseUrl}/api/v1/whoami`, { headers: workspace.headers });
    expect(recovered.status).toBe(200);
  });

  it("stops a revoked key within 5 s", async () => {
    const workspace = await createTestWorkspace(fetch, worker.baseUrl);
    const victim = await createTestKey(fetch, worker.baseUrl, workspace.key, ["tasks:read"]);
    expect((await fetch(`${worker.baseUrl}/api/v1/whoami`, { headers: victim.headers })).status).toBe(200);
    await fetch(`${worker.baseUrl}/api/v1/api-keys/${victim.id}`, { method: "DELETE", headers: workspace.headers });
    const revokedAtMs = Date.now();
    let refusedAfterMs = Number.POSITIVE_INFINITY;
    while (Date.now() - revokedAtMs < 7_000) {
      const response = await fetch(`${worker.baseUrl}/api/v1/whoami`, { headers: victim.headers });
      if (response.status === 401) {
        refusedAfterMs = Date.now() - revokedAtMs;
        break;
      }
      await new Promise((wake) => setTimeout(wake, 200));
    }
    expect(refusedAfterMs).toBeLessThanOrEqual(5_000);
  });
});
