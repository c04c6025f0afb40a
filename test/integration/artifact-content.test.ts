import { exports } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { documentedHeaders, documentedResponse, openApi, SHARED_HEADERS } from "../support/openapi.ts";
import { createTestWorkspace, type TestWorkspace } from "../support/workspaces.ts";

/** GET /api/v1/artifacts/{id}/content as a download client uses it: whole, in parts, and only when changed. */

const BASE = "http://edge.test";
const fetcher = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));
const SIZE_BYTES = 300_000;
/** The debug route's content: byte i is i mod 251 (patternStream in src/routes/artifacts.ts). */
const byteAt = (index: number) => index % 251;

let workspace: TestWorkspace;
let content: string;
let etag: string;

beforeAll(async () => {
  workspace = await createTestWorkspace(fetcher, BASE, { name: "artifact downloads" });
  const task = await fetcher(`${BASE}/api/v1/tasks`, {
    method: "POST",
    headers: { ...workspace.headers, "Content-Type": "application/json" },
    body: JSON.stringify({ title: "Build the bundle", type: "code_generation" }),
  });
  const { id: taskId } = (await task.json()) as { id: string };
  const stored = await fetcher(`${BASE}/__debug/tasks/${taskId}/artifacts`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ workspace_id: workspace.id, path: "dist/bundle.bin", size_bytes: SIZE_BYTES }),
  });
  expect(stored.status).toBe(201);
  const artifact = (await stored.json()) as { content_url: string; sha256: string };
  content = `${BASE}${artifact.content_url}`;
  etag = `"${artifact.sha256}"`;
});

function download(headers: Record<string, string> = {}) {
  return fetcher(content, { headers: { ...workspace.headers, ...headers } });
}

async function expectBytes(response: Response, offset: number, length: number) {
  const bytes = new Uint8Array(await response.arrayBuffer());
  expect(bytes.length).toBe(length);
  for (const index of [0, 1, Math.floor(length / 2), length - 1]) expect(bytes[index]).toBe(byteAt(offset + index));
}

describe("artifact content", () => {
  it("is answered whole with its length, version and that parts may be asked for", async () => {
    const whole = await download();
    expect(whole.status).toBe(200);
    expect(whole.headers.get("Content-Length")).toBe(String(SIZE_BYTES));
    expect(whole.headers.get("ETag")).toBe(etag);
    expect(whole.headers.get("Accept-Ranges")).toBe("bytes");
    await expectBytes(whole, 0, SIZE_BYTES);
  });

  it("resumes an interrupted download: one byte range answers 206 with that part", async () => {
    const rest = await download({ Range: "bytes=200000-", "If-Range": etag });
    expect(rest.status).toBe(206);
    expect(rest.headers.get("Content-Range")).toBe(`bytes 200000-${SIZE_BYTES - 1}/${SIZE_BYTES}`);
    expect(rest.headers.get("Content-Length")).toBe("100000");
    await expectBytes(rest, 200_000, 100_000);

    const middle = await download({ Range: "bytes=1000-1999" });
    expect(middle.status).toBe(206);
    await expectBytes(middle, 1_000, 1_000);
    const tail = await download({ Range: "bytes=-10" });
    expect(tail.headers.get("Content-Range")).toBe(`bytes ${SIZE_BYTES - 10}-${SIZE_BYTES - 1}/${SIZE_BYTES}`);
    await expectBytes(tail, SIZE_BYTES - 10, 10);
  });

  it("answers whole when the part asked for is of another version, or not one range", async () => {
    const stale = await download({ Range: "bytes=200000-", "If-Range": '"an-older-version"' });
    expect(stale.status).toBe(200);
    await expectBytes(stale, 0, SIZE_BYTES);
    const several = await download({ Range: "bytes=0-1,5-6" });
    expect(several.status).toBe(200);
    await several.body?.cancel();
  });

  it("refuses a range past the end with 416 and the size", async () => {
    const past = await download({ Range: `bytes=${SIZE_BYTES}-` });
    expect(past.status).toBe(416);
    expect(past.headers.get("Content-Range")).toBe(`bytes */${SIZE_BYTES}`);
    expect(past.headers.get("Content-Type")).toBe("application/problem+json");
    expect(await past.json()).toMatchObject({ code: "RANGE_NOT_SATISFIABLE", status: 416 });
  });

  it("answers 304 without a body to a client that has this version", async () => {
    const current = await download({ "If-None-Match": etag });
    expect(current.status).toBe(304);
    expect(current.headers.get("ETag")).toBe(etag);
    expect(await current.text()).toBe("");
    const changed = await download({ "If-None-Match": '"an-older-version"' });
    expect(changed.status).toBe(200);
    await changed.body?.cancel();
  });

  it("names a file that is not ASCII in filename* (RFC 6266), with an ASCII fallback (found by fuzz)", async () => {
    // The name went out as raw UTF-8 bytes in the header, which clients read as Latin-1.
    const task = await fetcher(`${BASE}/api/v1/tasks`, {
      method: "POST",
      headers: { ...workspace.headers, "Content-Type": "application/json" },
      body: JSON.stringify({ title: "Write the notes", type: "documentation" }),
    });
    const { id: taskId } = (await task.json()) as { id: string };
    const names = {
      "docs/readme (1).md": 'inline; filename="readme (1).md"',
      "docs/日本語 notes.md": `inline; filename="___ notes.md"; filename*=UTF-8''%E6%97%A5%E6%9C%AC%E8%AA%9E%20notes.md`,
      "docs/it's \u{1f600}.txt": `inline; filename="it's _.txt"; filename*=UTF-8''it%27s%20%F0%9F%98%80.txt`,
    };
    for (const [path, disposition] of Object.entries(names)) {
      const stored = await fetcher(`${BASE}/__debug/tasks/${taskId}/artifacts`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ workspace_id: workspace.id, path, size_bytes: 10 }),
      });
      const { content_url } = (await stored.json()) as { content_url: string };
      const response = await fetcher(`${BASE}${content_url}`, { headers: workspace.headers });
      expect(response.status).toBe(200);
      expect(response.headers.get("Content-Disposition")).toBe(disposition);
      await response.arrayBuffer();
    }
  });

  it("sends on each answer exactly the headers and media type /openapi.json names for it", async () => {
    const doc = await openApi();
    const answers: [number, Record<string, string>][] = [
      [200, {}],
      [206, { Range: "bytes=10-19" }],
      [304, { "If-None-Match": etag }],
      [416, { Range: `bytes=${SIZE_BYTES}-` }],
    ];
    for (const [status, headers] of answers) {
      const answer = await download(headers);
      expect(answer.status).toBe(status);
      const declared = documentedHeaders(doc, "get", "/api/v1/artifacts/{id}/content", status);
      // The route's own headers (the shared ones are openapi-headers.test.ts's): the same names, each one required.
      const own = Object.keys(declared).filter((name) => !SHARED_HEADERS.includes(name));
      const sent = [...answer.headers.keys()].filter((name) => OWN_CANDIDATES.includes(name));
      expect(sent.sort(), `${status}: sent`).toEqual(own.map((name) => name.toLowerCase()).sort());
      for (const name of own) expect(declared[name]?.required, `${status}: ${name}`).toBe(true);
      // Content-Type is the media type of the response's content (OpenAPI ignores a header of that name).
      const content = Object.keys(
        documentedResponse(doc, "get", "/api/v1/artifacts/{id}/content", status).content ?? {},
      );
      const type = answer.headers.get("Content-Type")?.split(";")[0];
      if (type === undefined) expect(content, `${status}: no body`).toEqual([]);
      else
        expect(
          content.some((range) => mediaRangeMatches(range, type)),
          `${status}: ${type} in ${content}`,
        ).toBe(true);
      await answer.body?.cancel();
    }
  });
});

/** Headers a download may carry that a route sets itself, lower-cased as `Headers` gives them. */
const OWN_CANDIDATES = [
  "etag",
  "cache-control",
  "accept-ranges",
  "content-length",
  "content-range",
  "content-disposition",
  "content-encoding",
  "last-modified",
  "expires",
];

function mediaRangeMatches(range: string, type: string): boolean {
  const [rangeType, rangeSub] = range.split("/");
  const [typeType, typeSub] = type.split("/");
  return (rangeType === "*" || rangeType === typeType) && (rangeSub === "*" || rangeSub === typeSub);
}
