/** Writes the OpenAPI document generated from the route schemas to a file (default ./openapi.json). */
import { mkdirSync, writeFileSync } from "node:fs";
import { register } from "node:module";
import { dirname } from "node:path";

// The app's module graph reaches `cloudflare:workers`; give Node inert stand-ins.
register("./lib/cloudflare-modules.mjs", import.meta.url);
const { openApiDocument } = await import("../src/app.ts");

const outPath = process.argv[2] ?? "openapi.json";
mkdirSync(dirname(outPath), { recursive: true });
writeFileSync(outPath, `${JSON.stringify(openApiDocument(), null, 2)}\n`);
console.log(`wrote ${outPath}`);
