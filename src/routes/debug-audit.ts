import type { OpenAPIHono } from "@hono/zod-openapi";
import type { StoredRow } from "../audit/chain.ts";
import {
  EXPORT_CONTENT_TYPES,
  EXPORT_PAGE_ROWS,
  type ExportFormat,
  encodeExport,
  exportPageReader,
} from "../audit/export.ts";
import { createDb } from "../db/client.ts";
import { ApiError } from "../lib/problem.ts";
import { authenticateApi, requireScope } from "../middleware/auth.ts";
import type { HonoEnv } from "../types.ts";

/**
 * The two halves of an audit export, apart, for bench/audit's memory baseline:
 * `read` runs the export's D1 page queries for the caller's workspace and
 * discards the rows (no encoding, no response stream); `synthetic-export`
 * streams generated rows through the export's encoder and response (no D1).
 * Only with ENABLE_DEBUG_ROUTES=true, which staging and production refuse; a workspace
 * credential with `audit:read`; not in the OpenAPI document.
 */
export function registerDebugAuditRoutes(app: OpenAPIHono<HonoEnv>): void {
  app.use("/__debug/audit/*", async (c, next) => {
    if (!c.get("config").ENABLE_DEBUG_ROUTES)
      throw new ApiError("NOT_FOUND", `No route matches ${c.req.method} ${c.req.path}.`);
    await next();
  });
  app.use("/__debug/audit/*", authenticateApi, requireScope("audit:read"));

  app.get("/__debug/audit/read", async (c) => {
    const readPage = exportPageReader(createDb(c.get("config").DB), workspaceOf(c), {});
    let rows = 0;
    let pages = 0;
    let afterSeq = 0;
    for (;;) {
      const page = await readPage(afterSeq, EXPORT_PAGE_ROWS);
      pages += 1;
      rows += page.length;
      if (page.length < EXPORT_PAGE_ROWS) break;
      afterSeq = page[page.length - 1].seq;
    }
    return c.json({ rows, pages });
  });

  app.get("/__debug/audit/synthetic-export", (c) => {
    const total = Number(c.req.query("rows") ?? "0");
    if (!Number.isSafeInteger(total) || total < 0 || total > 10_000_000)
      throw new ApiError("VALIDATION_FAILED", "rows must be an integer from 0 to 10,000,000.");
    const format: ExportFormat = c.req.query("format") === "csv" ? "csv" : "json";
    const workspaceId = workspaceOf(c);
    const readPage = async (afterSeq: number, limit: number): Promise<StoredRow[]> => {
      const rows: StoredRow[] = [];
      for (let seq = afterSeq + 1; seq <= Math.min(total, afterSeq + limit); seq++)
        rows.push(syntheticRow(workspaceId, seq));
      return rows;
    };
    const logger = c.get("logger");
    return c.body(
      encodeExport(readPage, format, (error) => logger.error("synthetic export failed", { error })),
      200,
      { "Content-Type": EXPORT_CONTENT_TYPES[format], "Cache-Control": "no-store" },
    );
  });
}

function workspaceOf(c: { get(key: "workspaceId"): string | undefined }): string {
  const workspaceId = c.get("workspaceId");
  if (!workspaceId) throw new ApiError("FORBIDDEN", "This route needs a workspace credential.");
  return workspaceId;
}

const SYNTHETIC_EPOCH_MS = Date.UTC(2026, 0, 1);

/** Shaped like bench/audit's seeded rows, so encoded sizes match the real export's. */
function syntheticRow(workspaceId: string, seq: number): StoredRow {
  const i = seq - 1;
  return {
    id: `aud_synth${String(i).padStart(14, "0")}`,
    workspace_id: workspaceId,
    seq,
    actor_type: i % 50 === 0 ? "operator" : "api_key",
    actor_id: i % 50 === 0 ? "operator" : `key_bench_${i % 7}`,
    actor_display: "bench key",
    action: i % 10 === 0 ? "task.cancel" : "task.create",
    resource_type: "task",
    resource_id: `task_bench_${Math.floor(i / 2)}`,
    request_id: `req_bench_${i}`,
    trace_id: null,
    ip: "127.0.0.1",
    user_agent: "bench/1.0",
    changes: i % 10 === 2 ? '{"after":{"plan":"team"},"before":{"plan":"free"}}' : null,
    metadata: `{"i":${i},"source":"bench"}`,
    created_at: new Date(SYNTHETIC_EPOCH_MS + i * 1000).toISOString(),
    prev_hash: String(i).padStart(64, "0"),
    hash: String(i + 1).padStart(64, "0"),
  };
}
