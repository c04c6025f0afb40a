import { and, asc, gt } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { auditLogs } from "../db/schema.ts";
import { STORED_COLUMNS, type StoredRow } from "./chain.ts";
import { type AuditFilters, filterConditions } from "./filters.ts";
import { toItem } from "./query.ts";

/**
 * Streams a workspace's entries as NDJSON or RFC 4180 CSV, oldest first (seq
 * order, so an unfiltered export can be re-verified link by link). Rows are
 * read page by page by keyset over the (workspace_id, …, seq) indexes and
 * encoded as the client pulls, so memory stays one page whatever the size.
 */

export type ExportFormat = "json" | "csv";
export const EXPORT_PAGE_ROWS = 500;

export const EXPORT_CONTENT_TYPES: Record<ExportFormat, string> = {
  json: "application/x-ndjson; charset=utf-8",
  csv: "text/csv; charset=utf-8; header=present",
};

export const CSV_COLUMNS = [
  "id",
  "seq",
  "created_at",
  "actor_type",
  "actor_id",
  "actor_display",
  "action",
  "resource_type",
  "resource_id",
  "request_id",
  "trace_id",
  "ip",
  "user_agent",
  "changes",
  "metadata",
  "prev_hash",
  "hash",
] as const;

// Spreadsheets run a cell that starts with one of these as a formula (OWASP CSV injection).
const FORMULA_START = /^[=+\-@\t\r]/;

/** One CSV field: neutralised against formula injection, then quoted as RFC 4180 requires. */
export function csvCell(value: string | number | null): string {
  if (value === null) return "";
  let text = String(value);
  if (FORMULA_START.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

export function csvRecord(values: (string | number | null)[]): string {
  return `${values.map(csvCell).join(",")}\r\n`;
}

function csvRow(row: StoredRow): string {
  return csvRecord(CSV_COLUMNS.map((column) => row[column]));
}

/**
 * One NDJSON line. JSON leaves U+2028 and U+2029 raw inside strings, but many line readers split on them
 * (Python's `str.splitlines`, editors, JavaScript's own line terminators): an entry whose metadata held one
 * read as two broken lines. Escaped, each entry is one line to every reader and parses to the same value.
 */
export function ndjsonLine(value: unknown): string {
  return `${JSON.stringify(value).replace(/[\u2028\u2029]/g, (separator) => (separator === "\u2028" ? "\\u2028" : "\\u2029"))}\n`;
}

function ndjsonRow(row: StoredRow): string {
  return ndjsonLine(toItem(row));
}

/** Up to `limit` entries with seq above `afterSeq`, in seq order. */
export type ExportPageReader = (afterSeq: number, limit: number) => Promise<StoredRow[]>;

/** The keyset page query of an export: the filters, then seq above the last page's. */
export function exportPageReader(db: Database, workspaceId: string, filters: AuditFilters): ExportPageReader {
  const where = filterConditions(workspaceId, filters);
  return (afterSeq, limit) =>
    db
      .select(STORED_COLUMNS)
      .from(auditLogs)
      .where(and(where, gt(auditLogs.seq, afterSeq)))
      .orderBy(asc(auditLogs.seq))
      .limit(limit);
}

export function exportStream(
  db: Database,
  workspaceId: string,
  filters: AuditFilters,
  format: ExportFormat,
  onError: (error: unknown) => void,
): ReadableStream<Uint8Array> {
  return encodeExport(exportPageReader(db, workspaceId, filters), format, onError);
}

/** The stream of an export over any page source (the export's D1 query; synthetic rows in the benchmark). */
export function encodeExport(
  readPage: ExportPageReader,
  format: ExportFormat,
  onError: (error: unknown) => void,
): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  const encodeRow = format === "csv" ? csvRow : ndjsonRow;
  let afterSeq = 0;
  let headerSent = format !== "csv";

  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          if (!headerSent) {
            headerSent = true;
            controller.enqueue(encoder.encode(csvRecord([...CSV_COLUMNS])));
            return;
          }
          const rows = await readPage(afterSeq, EXPORT_PAGE_ROWS);
          if (rows.length > 0) {
            afterSeq = rows[rows.length - 1].seq;
            let chunk = "";
            for (const row of rows) chunk += encodeRow(row);
            controller.enqueue(encoder.encode(chunk));
          }
          if (rows.length < EXPORT_PAGE_ROWS) controller.close();
        } catch (error) {
          onError(error);
          controller.error(error);
        }
      },
    },
    // One page in flight at a time: the client's pace decides the reading pace.
    { highWaterMark: 0 },
  );
}
