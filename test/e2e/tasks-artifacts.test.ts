import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rssAnonBytes, workerdPids } from "../support/workerd-memory.ts";
import { createTestWorkspace, TEST_ADMIN_TOKEN } from "../support/workspaces.ts";
import { startWorker, type WorkerProcess } from "./harness.ts";

/**
 * A 50 MB artifact through R2 and the content route under `wrangler dev`,
 * with workerd's anonymous RSS sampled throughout. The download through the
 * content route must not hold the file. The write through R2 is measured and
 * printed but not bounded: the local R2 simulator runs inside the same
 * workerd and keeps uploaded parts in memory (about twice the file). The
 * write path itself (reading the stream, chunking into parts, hashing) is
 * bounded with the uploads discarded (the debug route's `discard_uploads`).
 */

const SIZE_BYTES = 50 * 1024 * 1024;
const RSS_SAMPLE_MS = 20;
/** Streamed, not buffered: holding the object whole would cost at least its size; stream buffers and the allocator stay under it. */
const MAX_READ_RSS_GROWTH_BYTES = 40 * 1024 * 1024;
/** One 5 MiB part buffer, the stream's chunks and the hash: far under the file; holding it would cost 50 MB. */
const MAX_WRITE_PATH_RSS_GROWTH_BYTES = 24 * 1024 * 1024;

let worker: WorkerProcess;
beforeAll(async () => {
  worker = await startWorker({ vars: { ADMIN_TOKEN: TEST_ADMIN_TOKEN, ENABLE_DEBUG_ROUTES: "true" } });
});
afterAll(async () => {
  await worker?.stop();
});

/** Runs `work` while sampling RSS; returns its result and the peak growth over the starting RSS. */
async function measured<T>(pids: number[], work: () => Promise<T>): Promise<{ result: T; growthBytes: number }> {
  const before = await rssAnonBytes(pids);
  let peak = before;
  const timer = setInterval(async () => {
    peak = Math.max(peak, await rssAnonBytes(pids));
  }, RSS_SAMPLE_MS);
  try {
    const result = await work();
    peak = Math.max(peak, await rssAnonBytes(pids));
    return { result, growthBytes: peak - before };
  } finally {
    clearInterval(timer);
  }
}

/** The debug route's content: byte i is i mod 251. */
function expectedSha256(size: number): string {
  const hash = createHash("sha256");
  const chunk = 1024 * 1024;
  for (let offset = 0; offset < size; offset += chunk) {
    const length = Math.min(chunk, size - offset);
    const bytes = new Uint8Array(length);
    for (let index = 0; index < length; index++) bytes[index] = (offset + index) % 251;
    hash.update(bytes);
  }
  return hash.digest("hex");
}

describe("large artifacts", () => {
  it("round-trips 50 MB through R2 and streams it back through the content route without holding it", async () => {
    const workspace = await createTestWorkspace(fetch, worker.baseUrl, { name: "big files" });
    const submitted = await fetch(`${worker.baseUrl}/api/v1/tasks`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ title: "holds a big file", type: "documentation" }),
    });
    const task = (await submitted.json()) as { id: string };
    const pids = await workerdPids(worker.port);
    expect(pids.length).toBeGreaterThan(0);

    // Warm the routes once so first-use allocations do not count as growth.
    await fetch(`${worker.baseUrl}/__debug/tasks/${task.id}/artifacts`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ workspace_id: workspace.id, path: "warm.bin", size_bytes: 1024 * 1024 }),
    });

    const writePath = await measured(pids, async () => {
      const response = await fetch(`${worker.baseUrl}/__debug/tasks/${task.id}/artifacts`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          workspace_id: workspace.id,
          path: "data/discarded.bin",
          size_bytes: SIZE_BYTES,
          discard_uploads: true,
        }),
      });
      expect(response.status).toBe(200);
      return (await response.json()) as { size_bytes: number; sha256: string; stored: boolean };
    });
    expect(writePath.result).toEqual({ size_bytes: SIZE_BYTES, sha256: expectedSha256(SIZE_BYTES), stored: false });

    const write = await measured(pids, async () => {
      const response = await fetch(`${worker.baseUrl}/__debug/tasks/${task.id}/artifacts`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ workspace_id: workspace.id, path: "data/big.bin", size_bytes: SIZE_BYTES }),
      });
      expect(response.status).toBe(201);
      return (await response.json()) as { id: string; size_bytes: number; sha256: string; content_url: string };
    });
    const artifact = write.result;
    expect(artifact.size_bytes).toBe(SIZE_BYTES);
    expect(artifact.sha256).toBe(expectedSha256(SIZE_BYTES));

    const read = await measured(pids, async () => {
      const response = await fetch(`${worker.baseUrl}${artifact.content_url}`, { headers: workspace.headers });
      expect(response.status).toBe(200);
      expect(response.headers.get("Content-Type")).toBe("application/octet-stream");
      expect(response.headers.get("Content-Length")).toBe(String(SIZE_BYTES));
      expect(response.headers.get("ETag")).toBe(`"${artifact.sha256}"`);
      const hash = createHash("sha256");
      let bytes = 0;
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        hash.update(chunk);
        bytes += chunk.byteLength;
        // A slow reader: the Worker must wait for us rather than buffer ahead.
        if (bytes % (8 * 1024 * 1024) < chunk.byteLength) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      return { bytes, sha256: hash.digest("hex") };
    });
    expect(read.result).toEqual({ bytes: SIZE_BYTES, sha256: artifact.sha256 });

    const listed = (await (
      await fetch(`${worker.baseUrl}/api/v1/tasks/${task.id}/artifacts`, { headers: workspace.headers })
    ).json()) as {
      data: { path: string; size_bytes: number }[];
    };
    expect(listed.data.find((file) => file.path === "data/big.bin")?.size_bytes).toBe(SIZE_BYTES);

    console.log(
      `50 MB artifact: workerd anonymous RSS growth: write path (uploads discarded) +${(writePath.growthBytes / 2 ** 20).toFixed(1)} MB, write through local R2 +${(write.growthBytes / 2 ** 20).toFixed(1)} MB, read +${(read.growthBytes / 2 ** 20).toFixed(1)} MB`,
    );
    expect(writePath.growthBytes).toBeLessThan(MAX_WRITE_PATH_RSS_GROWTH_BYTES);
    expect(read.growthBytes).toBeLessThan(MAX_READ_RSS_GROWTH_BYTES);
  }, 180_000);
});
