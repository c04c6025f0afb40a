import { describe, expect, it } from "vitest";
import { MgxApiError } from "../../../sdk/index.ts";
import { scripted } from "./scripted-fetch.ts";

/** What MgxClient makes of the answers it gets: bodies, empty ones, and problems, against a scripted fetch. */

describe("MgxClient answers", () => {
  it("answers an artifact's 304 (the caller's copy is current) as the response, not as an error", async () => {
    const etag = `"${"a".repeat(64)}"`;
    const { client, sent } = scripted(new Response(null, { status: 304, headers: { ETag: etag } }));
    const answer = await client.artifacts.content("art_1", { headers: { "If-None-Match": etag } });
    expect(answer.status).toBe(304);
    expect(answer.headers.get("ETag")).toBe(etag);
    expect(sent[0].headers["If-None-Match"]).toBe(etag);
  });

  it("answers undefined for an answer without a body (HEAD, 204, 304) to request(), rather than a SyntaxError", async () => {
    const { client } = scripted(
      new Response(null, { status: 200, headers: { "Content-Type": "text/csv" } }),
      new Response(null, { status: 204 }),
      new Response(null, { status: 304, headers: { ETag: '"v1"' } }),
    );
    await expect(client.request("HEAD", "/api/v1/audit-logs/export")).resolves.toBeUndefined();
    await expect(client.request("DELETE", "/api/v1/things/1")).resolves.toBeUndefined();
    await expect(
      client.request("GET", "/api/v1/things/1", { headers: { "If-None-Match": '"v1"' } }),
    ).resolves.toBeUndefined();
  });

  it("throws an MgxApiError with the answer's status, code and request id when the body is not a whole problem", async () => {
    const { client } = scripted(
      // A proxy's JSON, no problem at all.
      Response.json({ error: "body too large" }, { status: 413, headers: { "X-Request-Id": "req_proxy" } }),
      Response.json(null, { status: 400, headers: { "X-Request-Id": "req_null" } }),
      // A problem without its code, detail and request id.
      Response.json(
        { type: "/problems/x", title: "Conflict", status: 409 },
        { status: 409, headers: { "Content-Type": "application/problem+json", "X-Request-Id": "req_3" } },
      ),
      new Response("<html>Bad gateway</html>", { status: 502, headers: { "Content-Type": "text/html" } }),
    );
    const errors = [];
    for (let i = 0; i < 4; i++) {
      errors.push(await client.request("POST", "/api/v1/tasks", { body: {} }).catch((error: unknown) => error));
    }
    for (const error of errors) expect(error).toBeInstanceOf(MgxApiError);
    expect(errors[0]).toMatchObject({
      status: 413,
      message: "413 UNKNOWN: HTTP 413",
      problem: { status: 413, code: "UNKNOWN", request_id: "req_proxy", error: "body too large" },
    });
    expect(errors[1]).toMatchObject({ status: 400, problem: { status: 400, code: "UNKNOWN", request_id: "req_null" } });
    expect(errors[2]).toMatchObject({
      status: 409,
      message: "409 UNKNOWN: HTTP 409",
      problem: { type: "/problems/x", title: "Conflict", status: 409, code: "UNKNOWN", request_id: "req_3" },
    });
    expect(errors[3]).toMatchObject({ status: 502, problem: { status: 502, code: "UNKNOWN", detail: "HTTP 502" } });
  });

  it("pages() goes on from the cursor it is given, with the filters on every page, and stops at next_cursor null", async () => {
    const { client, sent } = scripted(
      Response.json({ data: [{ id: "task_3" }], next_cursor: "c3" }),
      Response.json({ data: [{ id: "task_4" }], next_cursor: null }),
    );
    const ids: string[] = [];
    for await (const item of client.pages<{ id: string }>("/api/v1/tasks", {
      status: "queued",
      cursor: "c2",
      limit: 1,
    }))
      ids.push(item.id);
    expect(ids).toEqual(["task_3", "task_4"]);
    expect(sent.map((request) => request.url)).toEqual([
      "http://api.test/api/v1/tasks?status=queued&cursor=c2&limit=1",
      "http://api.test/api/v1/tasks?status=queued&cursor=c3&limit=1",
    ]);
  });

  it("sends a list filter as comma-separated values, and an empty one not at all", async () => {
    const page = () => Response.json({ data: [], next_cursor: null });
    const { client, sent } = scripted(page(), page());
    await client.events.list({ types: ["task.*", "llm.provider.error"] });
    await client.events.list({ types: [], after: "5" });
    expect(sent.map((request) => request.url)).toEqual([
      "http://api.test/api/v1/events?types=task.*%2Cllm.provider.error",
      "http://api.test/api/v1/events?after=5",
    ]);
  });

  it("refuses an empty, '.' or '..' id before asking, which the URL would resolve to another path", async () => {
    const { client, sent } = scripted(Response.json({}));
    for (const id of ["", ".", ".."]) {
      await expect(client.tasks.get(id)).rejects.toThrow(TypeError);
      await expect(client.apiKeys.revoke(id)).rejects.toThrow("is an id empty?");
    }
    expect(sent).toHaveLength(0);
    await client.tasks.get("...");
    expect(sent.map((request) => request.url)).toEqual(["http://api.test/api/v1/tasks/..."]);
  });
});
