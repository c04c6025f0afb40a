import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createApp } from "../../src/app.ts";
import { checkEnv, type WorkerEnv } from "../../src/env.ts";
import { parseChain } from "../../src/llm/routing.ts";

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

  it("refuses debug routes in production", async () => {
    const production = { ...env, ENVIRONMENT: "production", ENABLE_DEBUG_ROUTES: "true" };
    const response = await createApp().fetch(
      new Request("http://edge.test/health"),
      production,
      createExecutionContext(),
    );
    const body = (await response.json()) as { code: string; errors: { path: string }[] };
    expect(body.code).toBe("BAD_ENVIRONMENT");
    expect(body.errors.map((error) => error.path)).toEqual(["ENABLE_DEBUG_ROUTES"]);
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
