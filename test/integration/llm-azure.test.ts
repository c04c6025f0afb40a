import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app.ts";
import { BASE, eventsOf, fakeUpstreams, OPENAI_URL, openAiCompletion, workspaceWith } from "../support/llm.ts";

/** POST /api/v1/llm/chat/completions on Azure OpenAI deployments, as Azure answers. */

afterEach(() => vi.restoreAllMocks());

const AZURE = "contoso.openai.azure.com";
const providers = { AZURE_OPENAI_API_KEY: "az-test", AZURE_OPENAI_ENDPOINT: `https://${AZURE}/` };

async function chat(key: string, body: Record<string, unknown>, vars: Record<string, string> = {}): Promise<Response> {
  const request = new Request(`${BASE}/api/v1/llm/chat/completions`, {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ model: "auto", messages: [{ role: "user", content: "Plan the migration" }], ...body }),
  });
  return createApp().fetch(request, { ...env, ...providers, ...vars }, createExecutionContext());
}

const answer = () =>
  Response.json({
    choices: [{ index: 0, message: { role: "assistant", content: "Step 1" }, finish_reason: "stop" }],
    usage: { prompt_tokens: 12, completion_tokens: 40, total_tokens: 52 },
  });

/** Azure's refusal of an API version older than a model (or a feature) takes. */
const tooOld = (what: string, version: string) =>
  Response.json(
    { error: { code: "BadRequest", message: `${what} is enabled only for api versions ${version} and later` } },
    { status: 400 },
  );

describe("Azure API versions", () => {
  it("calls a reasoning deployment in the newer version Azure names, when the configured one is older", async () => {
    // o1, o3-mini and o4-mini take 2024-12-01-preview on; the default, 2024-10-21 GA, failed every call to them.
    const workspace = await workspaceWith({ strategy: "fallback", chain: [{ provider: "azure", model: "o4-mini" }] });
    const fake = fakeUpstreams({
      [AZURE]: (request) =>
        new URL(request.url).searchParams.get("api-version") === "2024-10-21"
          ? tooOld("Model o4-mini", "2024-12-01-preview")
          : answer(),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);

    const response = await chat(workspace.key, { max_tokens: 500 });
    expect(response.status).toBe(200);
    expect(((await response.json()) as Record<string, any>).choices[0].message.content).toBe("Step 1");
    const versions = fake.calls[AZURE].map((request) => new URL(request.url).searchParams.get("api-version"));
    expect(versions).toEqual(["2024-10-21", "2024-12-01-preview"]);
    expect(new URL(fake.calls[AZURE][1].url).pathname).toBe("/openai/deployments/o4-mini/chat/completions");
  });

  it("streams in the newer version too, and does not go below the version configured", async () => {
    const workspace = await workspaceWith({ strategy: "fallback", chain: [{ provider: "azure", model: "o3-mini" }] });
    const fake = fakeUpstreams({
      [AZURE]: (request) => {
        const version = new URL(request.url).searchParams.get("api-version") ?? "";
        if (version < "2024-12-01") return tooOld("Model o3-mini", "2024-12-01-preview");
        return new Response(
          'data: {"choices":[],"prompt_filter_results":[]}\n\ndata: {"choices":[{"index":0,"delta":{"content":"Step 1"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n',
          { headers: { "Content-Type": "text/event-stream" } },
        );
      },
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const streamed = await chat(workspace.key, { stream: true }, { AZURE_OPENAI_API_VERSION: "2024-06-01" });
    expect(streamed.status).toBe(200);
    expect(await streamed.text()).toContain('"content":"Step 1"');
    // Asked in the newer version, the stream asks for its usage: that version takes stream_options.
    const retried = (await fake.calls[AZURE][1].clone().json()) as Record<string, unknown>;
    expect(new URL(fake.calls[AZURE][1].url).searchParams.get("api-version")).toBe("2024-12-01-preview");
    expect(retried.stream_options).toEqual({ include_usage: true });

    // A version Azure names that is not newer than the one sent is no reason to ask again.
    vi.restoreAllMocks();
    const older = fakeUpstreams({ [AZURE]: () => tooOld("Model o3-mini", "2024-12-01-preview") });
    vi.spyOn(globalThis, "fetch").mockImplementation(older.impl);
    const refused = await chat(workspace.key, {}, { AZURE_OPENAI_API_VERSION: "2025-04-01-preview" });
    expect(refused.status).toBe(400);
    expect(older.count(AZURE)).toBe(1);
  });
});

describe("Azure deployment names", () => {
  it("are never a dot segment, which would send the call and its key to another path of the resource", async () => {
    const workspace = await workspaceWith({ strategy: "fallback", chain: [{ provider: "azure", model: "gpt-4o" }] });
    const fake = fakeUpstreams({ [AZURE]: answer });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    for (const model of ["azure:..", "azure:."]) {
      const response = await chat(workspace.key, { model });
      expect(response.status).toBe(200);
      // Not served by the named deployment, which cannot exist: by the chain, as after Azure's own 404.
      expect(fake.calls[AZURE].map((request) => new URL(request.url).pathname)).not.toContain(
        "/openai/chat/completions",
      );
    }
    expect(fake.calls[AZURE].map((request) => new URL(request.url).pathname)).toEqual([
      "/openai/deployments/gpt-4o/chat/completions",
      "/openai/deployments/gpt-4o/chat/completions",
    ]);
  });
});

describe("Azure deployments Azure lacks", () => {
  const lacks = () =>
    Response.json(
      { error: { code: "DeploymentNotFound", message: "The API deployment for this resource does not exist." } },
      { status: 404 },
    );

  it("are the chain's to mend when the chain names them: 503, not the caller's 400", async () => {
    const workspace = await workspaceWith({
      strategy: "fallback",
      chain: [{ provider: "azure", model: "gpt-4o-typo" }],
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fakeUpstreams({ [AZURE]: lacks }).impl);
    const response = await chat(workspace.key, {});
    expect(response.status).toBe(503);
    expect(response.headers.get("X-Should-Retry")).toBe("false");
    expect(await response.json()).toMatchObject({
      reason: "all_providers_failed",
      retryable: false,
      failures: [
        expect.objectContaining({ provider: "azure", model: "gpt-4o-typo", status: 404, code: "DeploymentNotFound" }),
      ],
    });
  });

  it("are the caller's when its request names one: 400, as a request every target refused", async () => {
    const workspace = await workspaceWith({ strategy: "fallback", chain: [{ provider: "azure", model: "gpt-4o" }] });
    const refused = () =>
      Response.json({ error: { code: "BadRequest", message: "Invalid value for 'content'." } }, { status: 400 });
    vi.spyOn(globalThis, "fetch").mockImplementation(
      fakeUpstreams({
        [AZURE]: (request) => (new URL(request.url).pathname.includes("/gpt-4o-typo/") ? lacks() : refused()),
      }).impl,
    );
    const response = await chat(workspace.key, { model: "azure:gpt-4o-typo" });
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ reason: "invalid_request" });
  });
});

describe("Azure content filters", () => {
  const azureThenOpenAi = () =>
    workspaceWith({
      strategy: "fallback",
      chain: [
        { provider: "azure", model: "gpt-4o" },
        { provider: "openai", model: "gpt-4o-mini" },
      ],
    });

  /** Azure's answer when its content filter refuses the prompt (its docs' example, abridged). */
  const filtered = () =>
    Response.json(
      {
        error: {
          message:
            "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.",
          type: null,
          param: "prompt",
          code: "content_filter",
          status: 400,
          innererror: {
            code: "ResponsibleAIPolicyViolation",
            content_filter_result: { violence: { filtered: true, severity: "medium" } },
          },
        },
      },
      { status: 400 },
    );

  it("ends the call with a 400 content_filter: the prompt is not sent on to the next provider", async () => {
    // A fallback after the filter would take the refused prompt round the deployment's content policy.
    const workspace = await azureThenOpenAi();
    const fake = fakeUpstreams({ [AZURE]: filtered, "openai.test": () => openAiCompletion("unfiltered") });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);

    const response = await chat(workspace.key, {}, { OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: OPENAI_URL });
    expect(response.status).toBe(400);
    const body = (await response.json()) as Record<string, any>;
    expect(body.reason).toBe("content_filter");
    // OpenAI's SDKs read `err.code`: Azure's own code for it.
    expect(body.error).toMatchObject({ type: "invalid_request_error", code: "content_filter" });
    expect(body.failures).toEqual([
      expect.objectContaining({ provider: "azure", model: "gpt-4o", attempts: 1, status: 400, code: "content_filter" }),
    ]);
    expect(body.detail).toContain("content management policy");
    expect(fake.count(AZURE)).toBe(1);
    expect(fake.count("openai.test")).toBe(0);

    const [error] = await eventsOf(workspace, "llm.provider.error", 1);
    expect(error.data).toMatchObject({ provider: "azure", error_code: "content_filter", fallback_triggered: false });
    expect(await eventsOf(workspace, "llm.provider.fallback")).toEqual([]);
  });

  it("still falls over when Azure refuses otherwise (a deployment it lacks), which another provider may not share", async () => {
    const workspace = await azureThenOpenAi();
    const fake = fakeUpstreams({
      [AZURE]: () =>
        Response.json({ error: { code: "DeploymentNotFound", message: "no such deployment" } }, { status: 404 }),
      "openai.test": () => openAiCompletion("served"),
    });
    vi.spyOn(globalThis, "fetch").mockImplementation(fake.impl);
    const response = await chat(workspace.key, {}, { OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: OPENAI_URL });
    expect(response.status).toBe(200);
    expect(((await response.json()) as Record<string, any>).choices[0].message.content).toBe("served");
  });
});
