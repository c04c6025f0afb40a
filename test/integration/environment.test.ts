import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createApp } from "../../src/app.ts";
import { checkEnv, type WorkerEnv } from "../../src/env.ts";
import { parseChain } from "../../src/llm/routing.ts";

const azure = { AZURE_OPENAI_API_KEY: "az", AZURE_OPENAI_ENDPOINT: "https://r.openai.azure.com" };

describe("environment checked at the door", () => {
  it("answers 500 BAD_ENVIRONMENT naming the bad settings, not their values", async () => {
    const { DB: _missing, ...withoutDb } = env;
    const broken = { ...withoutDb, LOG_SAMPLE_RATE: "2", SENTRY_DSN: "not a url" };
    const response = await createApp().fetch(new Request("http://edge.test/health"), broken, createExecutionContext());
    expect(response.status).toBe(500);
    expect(response.headers.get("Content-Type")).toBe("application/problem+json");
    const body = (await response.json()) as { code: string; errors: { path: string }[]; request_id: string };
    expect(body.code).toBe("BAD_ENVIRONMENT");
    expect(body.errors.map((error) => error.path).sort()).toEqual(["DB", "LOG_SAMPLE_RATE", "SENTRY_DSN"]);
    expect(JSON.stringify(body)).not.toContain("not a url");
    expect(body.request_id).toBe(response.headers.get("X-Request-Id"));
  });

  it("takes run timeouts per task type from TASK_TIMEOUT_SECONDS, and refuses a bad one", async () => {
    expect(checkEnv({ ...env, TASK_TIMEOUT_SECONDS: "testing=840, documentation=60" })).toMatchObject({
      ok: true,
      config: { TASK_TIMEOUT_SECONDS: { testing: 840, documentation: 60 } },
    });
    for (const bad of ["testing=0", "testing=901", "testing=ten", "deploying=60"]) {
      const response = await createApp().fetch(
        new Request("http://edge.test/health"),
        { ...env, TASK_TIMEOUT_SECONDS: bad },
        createExecutionContext(),
      );
      const body = (await response.json()) as { code: string; errors: { path: string }[] };
      expect(response.status).toBe(500);
      expect(body.code).toBe("BAD_ENVIRONMENT");
      expect(body.errors.map((error) => error.path)).toEqual(["TASK_TIMEOUT_SECONDS"]);
    }
  });

  it("reads a name set to nothing as unset, so its default applies (NAME= left from .dev.vars.example)", async () => {
    const blanks = {
      ...env,
      LLM_ATTEMPT_TIMEOUT_MS: "",
      MAX_BODY_BYTES: "",
      LOG_LEVEL: "",
      OPENAI_API_KEY: "",
      OPENAI_BASE_URL: "",
      SENTRY_DSN: "",
    } as unknown as WorkerEnv; // as Workers hands it over: every var a string, "" included
    expect(checkEnv(blanks)).toMatchObject({
      ok: true,
      config: { LLM_ATTEMPT_TIMEOUT_MS: 60_000, MAX_BODY_BYTES: 1024 * 1024, LOG_LEVEL: "info" },
    });
    const check = checkEnv(blanks);
    expect(check.ok && [check.config.OPENAI_API_KEY, check.config.OPENAI_BASE_URL, check.config.SENTRY_DSN]).toEqual([
      undefined,
      undefined,
      undefined,
    ]);
    const response = await createApp().fetch(new Request("http://edge.test/health"), blanks, createExecutionContext());
    expect(response.status).toBe(200);
  });

  it("refuses an LLM_DEFAULT_CHAIN naming an unknown provider or no model, as a workspace's chain is refused", async () => {
    // Unchecked, each was skipped at every call and the caller told its request was bad (400, "no configured
    // provider in this workspace's routing chain"); `openai:` sent OpenAI a model named "".
    for (const [chain, messages] of [
      ["opneai:gpt-4o", ["entry 1: unknown provider"]],
      ["OpenAI:gpt-4o-mini", ["entry 1: unknown provider"]],
      [":gpt-4o", ["entry 1: unknown provider"]],
      ["openai:gpt-4o-mini,openai:", ['entry 2: no model after its ":"']],
      ["simulated,anthropic: ,claude", ['entry 2: no model after its ":"', "entry 3: unknown provider"]],
      [",,,", ["names no provider"]],
    ] as const) {
      const response = await createApp().fetch(
        new Request("http://edge.test/health"),
        { ...env, LLM_DEFAULT_CHAIN: chain },
        createExecutionContext(),
      );
      const body = (await response.json()) as { code: string; errors: { path: string; message: string }[] };
      expect(response.status, chain).toBe(500);
      expect(body.code).toBe("BAD_ENVIRONMENT");
      expect(body.errors.map((error) => error.path)).toEqual(messages.map(() => "LLM_DEFAULT_CHAIN"));
      for (const [index, message] of messages.entries()) expect(body.errors[index].message).toContain(message);
    }
    // Spaces around an entry, its colon or a stray comma are no mistake; nor is a bare provider (its default model).
    for (const chain of [" openai : gpt-4o-mini , anthropic ,", "simulated", "workers-ai,local:qwen2.5"]) {
      expect(checkEnv({ ...env, LLM_DEFAULT_CHAIN: chain }).ok, chain).toBe(true);
    }
    expect(parseChain(" openai : gpt-4o-mini , anthropic ,")).toEqual([
      { provider: "openai", model: "gpt-4o-mini" },
      { provider: "anthropic", model: "claude-3-5-haiku-latest" },
    ]);
  });

  it("refuses a provider's base URL given with the path its adapter appends, or a query, and a malformed Azure API version", async () => {
    // Unchecked, OpenAI was called at …/v1/chat/completions/chat/completions and Anthropic at …/v1/v1/messages,
    // 404s the router took for the provider refusing the request (a 400 to the caller), and a query came before
    // the path (…/v1?x=1/chat/completions).
    const refused: [Record<string, string>, string][] = [
      [{ OPENAI_BASE_URL: "https://api.openai.com/v1/chat/completions" }, "OPENAI_BASE_URL"],
      [{ OPENAI_BASE_URL: "https://openai.test/v1?org=1" }, "OPENAI_BASE_URL"],
      [{ OPENAI_BASE_URL: "https://api.openai.com" }, "OPENAI_BASE_URL"],
      [{ LOCAL_LLM_BASE_URL: "http://127.0.0.1:11434/v1/chat/completions/" }, "LOCAL_LLM_BASE_URL"],
      [{ ANTHROPIC_API_KEY: "ak", ANTHROPIC_BASE_URL: "https://api.anthropic.com/v1" }, "ANTHROPIC_BASE_URL"],
      [{ ANTHROPIC_API_KEY: "ak", ANTHROPIC_BASE_URL: "https://api.anthropic.com/v1/messages" }, "ANTHROPIC_BASE_URL"],
      [{ ...azure, AZURE_OPENAI_API_VERSION: "2024/10/21" }, "AZURE_OPENAI_API_VERSION"],
      [{ ...azure, AZURE_OPENAI_API_VERSION: "v1 latest" }, "AZURE_OPENAI_API_VERSION"],
    ];
    for (const [vars, path] of refused) {
      const check = checkEnv({ ...env, ...vars });
      expect(check.ok ? [] : check.problems.map((problem) => problem.path), JSON.stringify(vars)).toEqual([path]);
    }
    const response = await createApp().fetch(
      new Request("http://edge.test/health"),
      { ...env, OPENAI_BASE_URL: "https://api.openai.com/v1/chat/completions" },
      createExecutionContext(),
    );
    expect(response.status).toBe(500);
    expect(((await response.json()) as { errors: unknown[] }).errors).toEqual([
      {
        path: "OPENAI_BASE_URL",
        message: "give the URL without /chat/completions: /chat/completions is appended to it",
      },
    ]);
    // A gateway's path, a bare address, an Azure portal's Target URI (its query is read) and versions Azure has.
    const accepted: Record<string, string>[] = [
      { OPENAI_BASE_URL: "https://gateway.ai.cloudflare.com/v1/account/gateway/openai" },
      { OPENAI_BASE_URL: "https://api.openai.com/v1/" },
      { ANTHROPIC_API_KEY: "ak", ANTHROPIC_BASE_URL: "https://gateway.ai.cloudflare.com/v1/account/gateway/anthropic" },
      { LOCAL_LLM_BASE_URL: "http://127.0.0.1:11434" },
      {
        ...azure,
        AZURE_OPENAI_ENDPOINT:
          "https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21",
      },
      { ...azure, AZURE_OPENAI_API_VERSION: "2024-12-01-preview" },
      { ...azure, AZURE_OPENAI_API_VERSION: "preview" },
    ];
    for (const vars of accepted) expect(checkEnv({ ...env, ...vars }).ok, JSON.stringify(vars)).toBe(true);
  });

  it("refuses a provider key with a line break inside it, which no request header carries, not the whitespace around it", async () => {
    // Unchecked, every call failed before it left as "connection to the provider failed: Invalid header value",
    // retried, counted against the provider's breaker as an outage, and answered 503 `retryable`.
    for (const name of ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY", "LOCAL_LLM_API_KEY"]) {
      const response = await createApp().fetch(
        new Request("http://edge.test/health"),
        { ...env, ...azure, LOCAL_LLM_BASE_URL: "http://127.0.0.1:11434", [name]: "sk-first\nsk-second" },
        createExecutionContext(),
      );
      const body = (await response.json()) as { code: string; errors: { path: string; message: string }[] };
      expect(response.status, name).toBe(500);
      expect(body.errors).toEqual([
        {
          path: name,
          message: "contains a line break or another control character, which a request header cannot carry",
        },
      ]);
      expect(JSON.stringify(body)).not.toContain("sk-first");
    }
    expect(checkEnv({ ...env, OPENAI_API_KEY: " sk-pasted\r\n" }).ok).toBe(true);
  });

  it("refuses a provider configured in part, naming the setting it lacks", async () => {
    // Unchecked, the provider was absent without a word, and a chain naming it refused as the caller's fault.
    const partial: [Record<string, string>, string][] = [
      [{ AZURE_OPENAI_API_KEY: "az" }, "AZURE_OPENAI_ENDPOINT"],
      [{ AZURE_OPENAI_ENDPOINT: "https://r.openai.azure.com" }, "AZURE_OPENAI_API_KEY"],
      [{ ANTHROPIC_BASE_URL: "https://anthropic.test" }, "ANTHROPIC_API_KEY"],
      [{ LOCAL_LLM_API_KEY: "local-secret" }, "LOCAL_LLM_BASE_URL"],
    ];
    for (const [vars, needed] of partial) {
      const response = await createApp().fetch(
        new Request("http://edge.test/health"),
        { ...env, ...vars },
        createExecutionContext(),
      );
      const body = (await response.json()) as { code: string; errors: { path: string; message: string }[] };
      expect(response.status).toBe(500);
      expect(body.code).toBe("BAD_ENVIRONMENT");
      expect(body.errors.map((error) => error.path)).toEqual([needed]);
      expect(body.errors[0].message).toContain(`${needed} is required with ${Object.keys(vars)[0]}`);
      expect(JSON.stringify(body)).not.toContain(Object.values(vars)[0]);
    }
    // Either of OpenAI's is enough: a key alone is api.openai.com, a URL alone a keyless gateway or server.
    expect(checkEnv({ ...env, OPENAI_API_KEY: "sk" }).ok).toBe(true);
    expect(checkEnv({ ...env, OPENAI_BASE_URL: "http://127.0.0.1:8000/v1" }).ok).toBe(true);
  });

  it.each(["production", "staging"])("refuses debug routes in %s", async (environment) => {
    const deployed = { ...env, ENVIRONMENT: environment, ENABLE_DEBUG_ROUTES: "true" };
    const response = await createApp().fetch(
      new Request("http://edge.test/health"),
      deployed,
      createExecutionContext(),
    );
    const body = (await response.json()) as { code: string; errors: { path: string }[] };
    expect(body.code).toBe("BAD_ENVIRONMENT");
    expect(body.errors.map((error) => error.path)).toEqual(["ENABLE_DEBUG_ROUTES"]);
  });

  it("gives no one a ticket to another workspace's events on a deployed staging Worker", async () => {
    // The debug routes ask for no credentials and take any workspace's id: on a deployment they handed anyone
    // a WebSocket ticket to that workspace's event stream (and published into it, wrote into its tasks).
    const staging = { ...env, ENVIRONMENT: "staging", ENABLE_DEBUG_ROUTES: "true" };
    const response = await createApp().fetch(
      new Request("http://edge.test/__debug/events/tickets", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ workspace_id: "ws_someone_else" }),
      }),
      staging,
      createExecutionContext(),
    );
    expect(response.status).toBe(500);
    expect(await response.text()).not.toContain("ticket_");
  });

  it("hides debug routes when they are not enabled", async () => {
    const plain = { ...env, ENABLE_DEBUG_ROUTES: "false" };
    const response = await createApp().fetch(
      new Request("http://edge.test/__debug/error"),
      plain,
      createExecutionContext(),
    );
    expect(response.status).toBe(404);
  });
});
