/** Writes the OpenAPI document generated from the route schemas to a file (default ./openapi.json). */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { openApiDocument } from "../src/app.ts";

const outPath = process.argv[2] ?? "openapi.json";
mkdirSync(dirname(outPath), { recursive: true });
writeFileSync(outPath, `${JSON.stringify(openApiDocument(), null, 2)}\n`);
console.log(`wrote ${outPath}`);
