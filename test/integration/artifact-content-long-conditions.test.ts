import { beforeAll, describe, expect, it } from "vitest";
import { createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";
import { BASE, fetcher, insertArtifact } from "../unit/tasks/fakes.ts";

/**
 * GET /api/v1/artifacts/{id}/content with a long `Range`, `If-Range` or `If-None-Match`: RFC 9110 lets a server
 * ignore a Range it will not serve (answering whole) and has it evaluate every entity tag a client lists, never
 * refuse the download.
 */

let workspace: TestWorkspace;
let content: string;
let etag: string;
const BODY = "# hello\n";

beforeAll(async () => {
  workspace = await createTestWorkspace(fetcher, BASE, { name: "artifact long conditions" });
  const id = await insertArtifact(workspace.id);
  const meta = (await (await fetcher(`${BASE}/api/v1/artifacts/${id}`, { headers: workspace.headers })).json()) as {
    content_url: string;
    sha256: string;
  };
  content = `${BASE}${meta.content_url}`;
  etag = `"${meta.sha256}"`;
});

function download(headers: Record<string, string>) {
  return fetcher(content, { headers: { ...workspace.headers, ...headers } });
}

describe("artifact content with long conditional headers", () => {
  it("answers whole, not 422, to many ranges in one Range header, as it does to two", async () => {
    const many = `bytes=${Array.from({ length: 60 }, (_, index) => `${index * 10}-${index * 10 + 4}`).join(", ")}`;
    expect(many.length).toBeGreaterThan(200);
    const answer = await download({ Range: many });
    expect(answer.status).toBe(200);
    expect(answer.headers.get("Content-Length")).toBe(String(BODY.length));
    expect(await answer.text()).toBe(BODY);
  });

  it("answers whole, not 422, to a Range whose If-Range is long (it names another version)", async () => {
    const answer = await download({ Range: "bytes=2-", "If-Range": `"${"0".repeat(300)}"` });
    expect(answer.status).toBe(200);
    expect(await answer.text()).toBe(BODY);
  });

  it("answers 304 to an If-None-Match listing several versions, this one among them, however long the list", async () => {
    const older = Array.from({ length: 20 }, (_, index) => `"${index.toString(16).padStart(64, "0")}"`);
    const header = [...older, etag].join(", ");
    expect(header.length).toBeGreaterThan(1_000);
    const current = await download({ "If-None-Match": header });
    expect(current.status).toBe(304);
    expect(current.headers.get("ETag")).toBe(etag);
    const changed = await download({ "If-None-Match": older.join(", ") });
    expect(changed.status).toBe(200);
    expect(await changed.text()).toBe(BODY);
  });
});
