import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseEnv } from "node:util";
import { unstable_readConfig } from "wrangler";

/**
 * Keeps a developer's own `.dev.vars` out of the tests. Wrangler loads it (or
 * `.env` without it) into every Worker it builds from `wrangler.toml`, and
 * the vitest plugin gives no way to say otherwise, so a machine whose
 * `.dev.vars` names real providers would run the tests against them. This
 * returns a binding for each name those files set: the `wrangler.toml` value
 * where it has one, else "", which the Worker's config reads as unset
 * (src/env.ts). The test project's own bindings go on top.
 */
export function shadowLocalSecrets(projectRoot: string): Record<string, string> {
  const devVars = join(projectRoot, ".dev.vars");
  const dotEnv = join(projectRoot, ".env");
  const file = existsSync(devVars) ? devVars : existsSync(dotEnv) ? dotEnv : undefined;
  if (!file) return {};
  const vars = unstable_readConfig({ config: join(projectRoot, "wrangler.toml") }).vars as Record<string, unknown>;
  const shadow: Record<string, string> = {};
  for (const name of Object.keys(parseEnv(readFileSync(file, "utf8")))) {
    const declared = vars[name];
    shadow[name] = declared === undefined ? "" : typeof declared === "string" ? declared : JSON.stringify(declared);
  }
  return shadow;
}
