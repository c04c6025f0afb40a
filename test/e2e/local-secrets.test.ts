import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { shadowLocalSecrets } from "../local-secrets.ts";

/** The workers tests' shield against a developer's own `.dev.vars` (vitest.config.ts). */

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
});

async function project(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "mgx-local-secrets-"));
  dirs.push(dir);
  const toml =
    'name = "shadow-test"\nmain = "index.ts"\ncompatibility_date = "2026-11-01"\n[vars]\nLLM_DEFAULT_CHAIN = "simulated"\nLOG_LEVEL = "info"\n';
  await writeFile(join(dir, "wrangler.toml"), toml);
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  return dir;
}

describe("shadowLocalSecrets", () => {
  it("unsets what .dev.vars adds and puts back wrangler.toml's value for what it overrides", async () => {
    const dir = await project({
      ".dev.vars":
        "OPENAI_API_KEY=sk-real\nLLM_DEFAULT_CHAIN=openai:gpt-4o\n# a comment\nLLM_ATTEMPT_TIMEOUT_MS=3000\n",
      ".env": "IGNORED_WHEN_DEV_VARS_EXISTS=1\n",
    });
    expect(shadowLocalSecrets(dir)).toEqual({
      OPENAI_API_KEY: "",
      LLM_DEFAULT_CHAIN: "simulated",
      LLM_ATTEMPT_TIMEOUT_MS: "",
    });
  });

  it("reads .env when there is no .dev.vars, as wrangler does, and nothing when neither exists", async () => {
    expect(shadowLocalSecrets(await project({ ".env": "ANTHROPIC_API_KEY=sk-ant\n" }))).toEqual({
      ANTHROPIC_API_KEY: "",
    });
    expect(shadowLocalSecrets(await project({}))).toEqual({});
  });
});
