import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp, openApiDocument } from "../../src/app.ts";

/**
 * bench/router's floors: POST /__debug/bare (what the runtime costs to carry the call's body in and an
 * answer out) and POST /__debug/upstream-hop (the runtime's own outbound hop).
 */

afterEach(() => vi.restoreAllMocks());

const BODY = JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }], max_tokens: 4 });
const COMPLETION = { id: "x", object: "chat.completion", choices: [{ index: 0, message: { role: "assistant" } }] };

function post(vars: Record<string, string>, path = "/__debug/upstream-hop") {
  return createApp().fetch(
    new Request(`http://edge.test${path}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: BODY,
    }),
    { ...env, ...vars },
    createExecutionContext(),
  );
}

describe("POST /__debug/upstream-hop", () => {
  it("sends the body unchanged to OPENAI_BASE_URL/chat/completions and answers the upstream's JSON", async () => {
    const upstream = vi.spyOn(globalThis, "fetch").mockImplementation(async () => Response.json(COMPLETION));
    const response = await post({ OPENAI_BASE_URL: "http://127.0.0.1:9999/v1/", OPENAI_API_KEY: "sk-test" });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual(COMPLETION);
    expect(upstream).toHaveBeenCalledTimes(1);
    const [url, init] = upstream.mock.calls[0] as [string, RequestInit];
    expect(url).toBe("http://127.0.0.1:9999/v1/chat/completions");
    expect(init.body).toBe(BODY);
    expect(new Headers(init.headers).get("Authorization")).toBe("Bearer sk-test");
  });

  it("lends the deployment's key to no one: an upstream not on loopback (the real OpenAI) is never called", async () => {
    // Debug routes may be on where OPENAI_API_KEY is a real key (a developer's .dev.vars, a staging deployment);
    // the route asks for no credentials, so anyone could spend the key and read OpenAI's answers, its 401 naming it.
    const upstream = vi
      .spyOn(globalThis, "fetch")
      .mockImplementation(async () =>
        Response.json(
          { error: { message: "Incorrect API key provided: sk-real***wxyz.", code: "invalid_api_key" } },
          { status: 401 },
        ),
      );
    for (const base of ["https://api.openai.com/v1", "http://127.0.0.1.example.com/v1", "http://10.0.0.5:8000/v1"]) {
      const response = await post({ OPENAI_BASE_URL: base, OPENAI_API_KEY: "sk-realwxyz" });
      expect(response.status).toBe(404);
      expect(await response.text()).not.toContain("sk-real");
    }
    expect(upstream).not.toHaveBeenCalled();
  });

  it("is absent when debug routes are off, and never in the API document", async () => {
    const upstream = vi.spyOn(globalThis, "fetch");
    const response = await post({ ENABLE_DEBUG_ROUTES: "false", OPENAI_BASE_URL: "https://openai.test/v1" });
    expect(response.status).toBe(404);
    expect(upstream).not.toHaveBeenCalled();
    expect(Object.keys(openApiDocument().paths ?? {}).filter((path) => path.startsWith("/__debug"))).toEqual([]);
  });
});

describe("POST /__debug/bare", () => {
  it("answers the body back byte for byte, as JSON, and calls nothing", async () => {
    const outbound = vi.spyOn(globalThis, "fetch");
    const response = await post({}, "/__debug/bare");
    expect(response.status).toBe(200);
    expect(response.headers.get("Content-Type")).toBe("application/json");
    expect(response.headers.get("X-Request-Id")).toMatch(/^req_/);
    expect(await response.text()).toBe(BODY);
    expect(outbound).not.toHaveBeenCalled();
  });

  it("is absent when debug routes are off", async () => {
    const response = await post({ ENABLE_DEBUG_ROUTES: "false" }, "/__debug/bare");
    expect(response.status).toBe(404);
    expect(response.headers.get("Content-Type")).toBe("application/problem+json");
  });

  it("refuses a body that is not JSON, even from a Request built in code (no Content-Length)", async () => {
    const response = await createApp().fetch(
      new Request("http://edge.test/__debug/bare", {
        method: "POST",
        headers: { "Content-Type": "text/html" },
        body: "<b>",
      }),
      env,
      createExecutionContext(),
    );
    expect(response.status).toBe(415);
    expect(response.headers.get("Content-Type")).toBe("application/problem+json");
  });
});
