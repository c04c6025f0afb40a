import { describe, expect, it } from "vitest";
import { MgxApiError, MgxClient } from "../../../sdk/index.ts";

/** What MgxClient makes of the answers it gets: bodies, empty ones, and problems, against a scripted fetch. */

function scripted(...answers: Response[]) {
  const sent: { method: string; url: string; headers: Record<string, string> }[] = [];
  const fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    sent.push({
      method: init?.method ?? "GET",
      url: String(input),
      headers: { ...(init?.headers as Record<string, string>) },
    });
    const answer = answers.shift();
    if (!answer) throw new Error("no answer scripted for this request");
    return answer;
  };
  const client = new MgxClient({
    baseUrl: "http://api.test",
    apiKey: "mgx_test",
    fetch: fetch as typeof globalThis.fetch,
    retryBackoff: { baseDelayMs: 1, maxDelayMs: 2 },
  });
  return { client, sent };
}

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
});
