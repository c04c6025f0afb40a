import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { AUDIT_ACTION_NAMES } from "../audit/actions.ts";
import { anchorBookOf } from "../audit/anchor.ts";
import { auditContext, recordAudit, sealAfterResponse } from "../audit/audit-logger.ts";
import { DEFAULT_VERIFY_ENTRIES, MAX_VERIFY_ENTRIES, verifyChain } from "../audit/chain.ts";
import { EXPORT_CONTENT_TYPES, exportStream } from "../audit/export.ts";
import { AuditExportQuerySchema, AuditFilterSchema, AuditListQuerySchema } from "../audit/filters.ts";
import { auditStats, listAuditLogs } from "../audit/query.ts";
import { createDb } from "../db/client.ts";
import { ACTOR_TYPES } from "../db/schema.ts";
import { API_PROBLEMS, problemResponses } from "../lib/openapi.ts";
import { ApiError } from "../lib/problem.ts";
import { requireScope } from "../middleware/auth.ts";
import type { HonoEnv } from "../types.ts";

/** An entry (the client SDK's `AuditLog` type too). */
export const AuditLogSchema = z
  .object({
    id: z.string().openapi({ example: "aud_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3" }),
    seq: z.number().int().openapi({ description: "Position in the workspace's hash chain." }),
    workspace_id: z.string(),
    created_at: z.iso.datetime(),
    actor: z.object({ type: z.enum(ACTOR_TYPES), id: z.string(), display: z.string().nullable() }),
    action: z.enum(AUDIT_ACTION_NAMES),
    resource_type: z.string(),
    resource_id: z.string().nullable(),
    request_id: z.string().nullable(),
    trace_id: z.string().nullable(),
    ip: z.string().nullable(),
    user_agent: z.string().nullable(),
    changes: z
      .object({ before: z.unknown().optional(), after: z.unknown().optional() })
      .nullable()
      .openapi({ description: "Redacted before/after summary of an update." }),
    metadata: z.record(z.string(), z.unknown()).nullable(),
    prev_hash: z
      .string()
      .nullable()
      .openapi({ description: "Null until the entry is sealed (moments after it is written)." }),
    hash: z
      .string()
      .nullable()
      .openapi({ description: "SHA-256 of the canonical entry and prev_hash; null until sealed." }),
  })
  .openapi("AuditLog");

const READ_PROBLEMS = { ...API_PROBLEMS, ...problemResponses("VALIDATION_FAILED") };

const listRoute = createRoute({
  method: "get",
  path: "/api/v1/audit-logs",
  operationId: "listAuditLogs",
  tags: ["Audit"],
  summary: "List audit log entries",
  description: "The caller's workspace's entries, newest first, filtered and cursor-paginated. Needs `audit:read`.",
  middleware: [requireScope("audit:read")] as const,
  request: { query: AuditListQuerySchema },
  responses: {
    200: {
      description: "One page.",
      content: {
        "application/json": {
          schema: z.object({ data: z.array(AuditLogSchema), next_cursor: z.string().nullable() }),
        },
      },
    },
    ...READ_PROBLEMS,
  },
});

const exportRoute = createRoute({
  method: "get",
  path: "/api/v1/audit-logs/export",
  operationId: "exportAuditLogs",
  tags: ["Audit"],
  summary: "Export audit log entries",
  description:
    "Streams every matching entry, oldest first, as NDJSON (`format=json`, one AuditLog per line) or RFC 4180 CSV " +
    "with a header row (`format=csv`; cells starting with `=`, `+`, `-`, `@` are prefixed with `'`). " +
    "The export itself is recorded as `audit.export`. Needs `audit:read`.",
  middleware: [requireScope("audit:read")] as const,
  request: { query: AuditExportQuerySchema },
  responses: {
    200: {
      description: "The entries, streamed.",
      headers: {
        "Content-Disposition": {
          description: 'A download: `attachment; filename="audit-<workspace>-<day>.csv"` (`.ndjson` for JSON).',
          required: true,
          schema: { type: "string" },
        },
        "Cache-Control": { description: "`no-store`.", required: true, schema: { type: "string" } },
      },
      content: {
        "application/x-ndjson": { schema: z.string().openapi({ description: "One JSON AuditLog per line." }) },
        "text/csv": { schema: z.string().openapi({ description: "RFC 4180, CRLF line ends, header row." }) },
      },
    },
    ...READ_PROBLEMS,
  },
});

const CountSchema = z.number().int();
/** Counts by action, actor and day (the client SDK's `AuditLogStats` type too). */
export const AuditLogStatsSchema = z
  .object({
    from: z.iso.datetime(),
    to: z.iso.datetime(),
    total: CountSchema,
    by_action: z.array(z.object({ action: z.string(), count: CountSchema })),
    by_actor: z.array(
      z.object({
        actor_type: z.string(),
        actor_id: z.string(),
        actor_display: z.string().nullable(),
        count: CountSchema,
      }),
    ),
    by_day: z.array(z.object({ day: z.string().openapi({ example: "2026-11-25" }), count: CountSchema })),
  })
  .openapi("AuditLogStats");

const statsRoute = createRoute({
  method: "get",
  path: "/api/v1/audit-logs/stats",
  operationId: "getAuditLogStats",
  tags: ["Audit"],
  summary: "Audit log statistics",
  description:
    "Counts by action, by actor (the 100 busiest) and by UTC day over `[from, to)`, default the last 30 days, " +
    "with the same filters as the list. Needs `audit:read`.",
  middleware: [requireScope("audit:read")] as const,
  request: { query: AuditFilterSchema },
  responses: {
    200: {
      description: "The counts.",
      content: {
        "application/json": {
          schema: AuditLogStatsSchema,
        },
      },
    },
    ...READ_PROBLEMS,
  },
});

const BreakSchema = z.object({
  seq: z.number().int(),
  id: z.string().nullable(),
  reason: z.enum(["missing", "hash_mismatch", "link_mismatch", "unsealed", "anchor_mismatch"]),
  detail: z.string(),
});

const CheckpointSchema = z.object({
  after_seq: z.number().int(),
  after_hash: z.string(),
});

const VerifyQuerySchema = z
  .object({
    after_seq: z.coerce
      .number()
      .int()
      .min(0)
      .optional()
      .openapi({ description: "Go on from this entry: `next.after_seq` of the previous call." }),
    after_hash: z
      .string()
      .regex(/^[0-9a-f]{64}$/, "a SHA-256 hash in lowercase hex")
      .optional()
      .openapi({ description: "`next.after_hash` of the previous call: the hash verified at `after_seq`." }),
    limit: z.coerce
      .number()
      .int()
      .min(1)
      .max(MAX_VERIFY_ENTRIES)
      .default(DEFAULT_VERIFY_ENTRIES)
      .openapi({ description: "Entries to verify in this call at most." }),
  })
  .refine((query) => (query.after_seq === undefined) === (query.after_hash === undefined), {
    message: "after_seq and after_hash go together",
    path: ["after_hash"],
  });

/** A walk of the hash chain and its verdict (the client SDK's `AuditVerification` type too). */
export const AuditVerificationSchema = z
  .object({
    ok: z.boolean(),
    complete: z.boolean().openapi({ description: "The walk reached the head of the chain." }),
    next: CheckpointSchema.nullable().openapi({ description: "Where to go on from while not complete." }),
    checked_entries: CountSchema,
    first_seq: z.number().int().nullable(),
    last_seq: z.number().int().nullable(),
    pending_entries: CountSchema.openapi({ description: "Entries written since sealing began." }),
    anchor: z.object({ seq: z.number().int(), hash: z.string() }).nullable(),
    head: z.object({ seq: z.number().int(), hash: z.string().nullable() }),
    external_anchor: z.object({ seq: z.number().int(), hash: z.string() }).nullable().openapi({
      description:
        "The newest sealed entry as recorded outside D1 (in the workspace's Durable Object); the walk checks the chain still passes through it. Null when none is recorded yet or it could not be read.",
    }),
    first_broken: BreakSchema.nullable(),
  })
  .openapi("AuditVerification");

const verifyRoute = createRoute({
  method: "get",
  path: "/api/v1/audit-logs/verify",
  operationId: "verifyAuditLogs",
  tags: ["Audit"],
  summary: "Verify the audit hash chain",
  description:
    "Seals pending entries, then walks the workspace's hash chain from the retention anchor and names the first " +
    "broken entry: an edited entry (`hash_mismatch`), a deleted one (`missing`), or a rewritten link. A long chain " +
    "is walked in several calls: while `complete` is false, call again with `next`'s `after_seq` and `after_hash`. " +
    "Needs `audit:read`.",
  middleware: [requireScope("audit:read")] as const,
  request: { query: VerifyQuerySchema },
  responses: {
    200: {
      description: "The verdict (`ok: false` with `first_broken` when the chain is broken).",
      content: {
        "application/json": {
          schema: AuditVerificationSchema,
        },
      },
    },
    ...problemResponses("UNAUTHENTICATED", "FORBIDDEN", "VALIDATION_FAILED", "RATE_LIMITED", "DEPENDENCY_UNAVAILABLE"),
  },
});

function workspaceOf(c: { get(key: "workspaceId"): string | undefined }): string {
  const workspaceId = c.get("workspaceId");
  // requireScope admits workspace principals only; this guards a mis-mounted route.
  if (!workspaceId) throw new ApiError("FORBIDDEN", "This route needs a workspace credential.");
  return workspaceId;
}

export function registerAuditLogRoutes(app: OpenAPIHono<HonoEnv>): void {
  app.use("/api/v1/*", sealAfterResponse);

  app.openapi(listRoute, async (c) => {
    const page = await listAuditLogs(createDb(c.get("config").DB), workspaceOf(c), c.req.valid("query"));
    return c.json(page, 200);
  });

  app.openapi(exportRoute, async (c) => {
    const workspaceId = workspaceOf(c);
    const { format, ...filters } = c.req.valid("query");
    const stamp = new Date().toISOString().slice(0, 10);
    const download = {
      "Content-Type": EXPORT_CONTENT_TYPES[format],
      "Content-Disposition": `attachment; filename="audit-${workspaceId}-${stamp}.${format === "csv" ? "csv" : "ndjson"}"`,
      "Cache-Control": "no-store",
    };
    // HEAD exports nothing (it is answered without a body), so it records no audit.export: it wrote one, which
    // claimed an export that never happened.
    if (c.req.method === "HEAD") return c.body(null, 200, download) as never;
    const db = createDb(c.get("config").DB);
    await recordAudit(db, {
      ...auditContext(c),
      workspaceId,
      action: "audit.export",
      resourceType: "audit_log",
      metadata: { format, filters },
    });
    const logger = c.get("logger");
    const stream = exportStream(db, workspaceId, filters, format, (error) =>
      logger.error("audit export failed mid-stream", { error }),
    );
    return c.body(stream, 200, download) as never;
  });

  app.openapi(statsRoute, async (c) =>
    c.json(await auditStats(createDb(c.get("config").DB), workspaceOf(c), c.req.valid("query")), 200),
  );

  app.openapi(verifyRoute, async (c) => {
    const { after_seq: afterSeq, after_hash: afterHash, limit } = c.req.valid("query");
    const from =
      afterSeq !== undefined && afterHash !== undefined ? { after_seq: afterSeq, after_hash: afterHash } : undefined;
    const workspaceId = workspaceOf(c);
    const config = c.get("config");
    const externalAnchor = await anchorBookOf(config, workspaceId)
      .get()
      .catch((error: unknown) => {
        // Verify still walks D1; the report's `external_anchor: null` says the outside check was not made.
        c.get("logger").error("audit anchor unavailable for verify", { error });
        return null;
      });
    const report = await verifyChain(createDb(config.DB), workspaceId, { from, maxEntries: limit, externalAnchor });
    return c.json(report, 200);
  });
}
