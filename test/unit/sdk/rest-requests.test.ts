import { describe, expect, it } from "vitest";
import { scripted } from "./scripted-fetch.ts";

/** What MgxClient sends for what a caller hands it: its query values and its paths. */

const page = (next_cursor: string | null) => Response.json({ data: [], next_cursor });

describe("MgxClient's requests", () => {
  it("leaves out a null query value (a last page's next_cursor passed on), rather than send the string 'null'", async () => {
    const { client, sent } = scripted(page(null), page(null));
    const first = await client.tasks.list({ status: "queued" });
    await client.tasks.list({ status: "queued", cursor: first.next_cursor });
    expect(new URL(sent[1].url).search).toBe("?status=queued");
  });

  it("refuses a path without its leading '/' before sending, which the base URL would make another host", async () => {
    const { client, sent } = scripted(page(null));
    await expect(client.request("GET", "api/v1/tasks")).rejects.toThrow(TypeError);
    expect(sent).toEqual([]);
  });

  it("types ready()'s checks with the warning the server reports of a check that passes", async () => {
    const { client } = scripted(
      Response.json({
        status: "ready",
        checks: {
          llm_chain: { ok: true, latency_ms: 0, warning: "LLM_DEFAULT_CHAIN names anthropic, not configured" },
        },
      }),
    );
    const ready = await client.ready();
    // A type error (the property unknown to the type) before it was declared: `npm run typecheck` tells.
    const warning: string | undefined = ready.checks.llm_chain.warning;
    expect(warning).toContain("anthropic");
  });
});
