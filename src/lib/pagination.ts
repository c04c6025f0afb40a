import { z } from "@hono/zod-openapi";
import { toBase64Url } from "./crypto.ts";
import { ApiError } from "./problem.ts";

/**
 * Keyset pagination: lists are newest first by (created_at, id); the cursor is
 * the last row's keys, base64url-encoded so clients treat it as opaque.
 */

export const PageQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(20).openapi({ description: "Page size, 1..100." }),
  cursor: z.string().max(512).optional().openapi({ description: "`next_cursor` of the previous page." }),
});

export interface PageKey {
  createdAt: string;
  id: string;
}

export function encodeCursor(key: PageKey): string {
  return toBase64Url(new TextEncoder().encode(JSON.stringify([key.createdAt, key.id])));
}

export function decodeCursor(cursor: string | undefined): PageKey | undefined {
  if (cursor === undefined) return undefined;
  try {
    const json = atob(cursor.replaceAll("-", "+").replaceAll("_", "/"));
    const [createdAt, id] = JSON.parse(json) as unknown[];
    if (typeof createdAt === "string" && typeof id === "string") return { createdAt, id };
  } catch {
    // Fall through to the 422.
  }
  throw new ApiError("VALIDATION_FAILED", "The cursor is not one this API issued.", {
    errors: [{ path: "cursor", message: "invalid cursor" }],
  });
}

/** Rows fetched with limit + 1 → the page and the cursor of the next one. */
export function toPage<Row, Item>(
  rows: Row[],
  limit: number,
  keyOf: (row: Row) => PageKey,
  view: (row: Row) => Item,
): { data: Item[]; next_cursor: string | null } {
  const page = rows.slice(0, limit);
  const hasMore = rows.length > limit;
  return {
    data: page.map(view),
    next_cursor: hasMore && page.length > 0 ? encodeCursor(keyOf(page[page.length - 1])) : null,
  };
}

export function pageSchema<T extends z.ZodType>(item: T, name: string) {
  return z.object({ data: z.array(item), next_cursor: z.string().nullable() }).openapi(name);
}

/**
 * A short list made in memory (the providers), not read from a table: its cursor is where the next page
 * starts, as opaque as the keyset one.
 */
export function pageOfList<Item>(
  items: readonly Item[],
  query: { limit: number; cursor?: string },
): { page: Item[]; next_cursor: string | null } {
  const start = query.cursor === undefined ? 0 : decodeOffsetCursor(query.cursor);
  const end = start + query.limit;
  return {
    page: items.slice(start, end),
    next_cursor: end < items.length ? toBase64Url(new TextEncoder().encode(JSON.stringify({ o: end }))) : null,
  };
}

function decodeOffsetCursor(cursor: string): number {
  try {
    const { o: offset } = JSON.parse(atob(cursor.replaceAll("-", "+").replaceAll("_", "/"))) as { o?: unknown };
    if (typeof offset === "number" && Number.isSafeInteger(offset) && offset > 0) return offset;
  } catch {
    // Fall through to the 422.
  }
  throw new ApiError("VALIDATION_FAILED", "The cursor is not one this API issued.", {
    errors: [{ path: "cursor", message: "invalid cursor" }],
  });
}
