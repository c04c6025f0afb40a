import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { beforeAll, describe, expect, it } from "vitest";
import { createDb } from "../../src/db/client.ts";
import { artifacts } from "../../src/db/schema.ts";
import { artifactUpserts, TaskFiles } from "../../src/tasks/artifacts.ts";
import type { TaskRow } from "../../src/tasks/views.ts";
import { createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";
import { BASE, fetcher, insertTask } from "../unit/tasks/fakes.ts";

/**
 * An artifact's media type is what the agent's write tool was given, and it becomes the download's Content-Type
 * header. One with a control character made every download of the file a 500 (the header could not be set), and one
 * with characters outside ASCII went out as raw UTF-8 bytes.
 */

let workspace: TestWorkspace;
let task: TaskRow;

beforeAll(async () => {
  workspace = await createTestWorkspace(fetcher, BASE, { name: "artifact media types" });
  task = await insertTask(workspace.id, { status: "completed" });
});

async function written(path: string, mimeType: string) {
  const files = new TaskFiles({
    bucket: env.ARTIFACTS,
    workspaceId: workspace.id,
    taskId: task.id,
    runId: "run_media_type",
    existing: [],
  });
  const { row } = await files.write(path, "hello", mimeType);
  await env.DB.batch(artifactUpserts(env.DB, [row]));
  return row.id;
}

function download(id: string) {
  return fetcher(`${BASE}/api/v1/artifacts/${id}/content`, { headers: workspace.headers });
}

describe("an artifact's media type", () => {
  it("that is not a header value is not kept: the file's own type is, and it downloads", async () => {
    for (const [path, given, kept] of [
      ["nul.txt", "text/plain;\u0000x", "text/plain; charset=utf-8"],
      ["escape.md", "text/plain; x=\u001b[31m", "text/markdown; charset=utf-8"],
      ["delete.json", "application/json;\u007f", "application/json; charset=utf-8"],
      ["kanji.txt", "text/plain; charset=\u65e5\u672c", "text/plain; charset=utf-8"],
    ]) {
      const id = await written(path, given);
      const metadata = (await (
        await fetcher(`${BASE}/api/v1/artifacts/${id}`, { headers: workspace.headers })
      ).json()) as { mime_type: string };
      expect(metadata.mime_type, path).toBe(kept);
      const response = await download(id);
      expect(response.status, path).toBe(200);
      expect(response.headers.get("Content-Type"), path).toBe(metadata.mime_type);
      expect(await response.text()).toBe("hello");
    }
  });

  it("with parameters in printable ASCII is kept as given", async () => {
    const id = await written("data.csv", 'text/csv; charset=utf-8; header="present"');
    const response = await download(id);
    expect(response.status).toBe(200);
    expect(response.headers.get("Content-Type")).toBe('text/csv; charset=utf-8; header="present"');
    await response.arrayBuffer();
  });

  it("stored before it was checked downloads as application/octet-stream, not a 500", async () => {
    const id = await written("old.txt", "text/plain");
    await createDb(env.DB).update(artifacts).set({ mimeType: "text/plain;\u0000x" }).where(eq(artifacts.id, id));
    const response = await download(id);
    expect(response.status).toBe(200);
    expect(response.headers.get("Content-Type")).toBe("application/octet-stream");
    expect(await response.text()).toBe("hello");
    const head = await fetcher(`${BASE}/api/v1/artifacts/${id}/content`, {
      method: "HEAD",
      headers: { ...workspace.headers, Range: "bytes=1-2" },
    });
    expect(head.status).toBe(206);
    expect(head.headers.get("Content-Type")).toBe("application/octet-stream");
  });
});
