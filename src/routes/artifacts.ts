import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { findOwnedOr404 } from "../auth/tenant-access.ts";
import { createDb } from "../db/client.ts";
import { artifacts, tasks } from "../db/schema.ts";
import { TenantDb } from "../db/tenant.ts";
import { ifRangeHolds, noneMatchHits, parseByteRange } from "../lib/byte-range.ts";
import { API_PROBLEMS, type HeaderDoc, jsonResponse, problemResponses } from "../lib/openapi.ts";
import { ApiError } from "../lib/problem.ts";
import { requireScope } from "../middleware/auth.ts";
import { ArtifactError, artifactUpserts, putArtifactStream } from "../tasks/artifacts.ts";
import { ArtifactIdParam, ArtifactSchema } from "../tasks/schemas.ts";
import { type ArtifactRow, toArtifactView } from "../tasks/views.ts";
import type { HonoEnv } from "../types.ts";

/** Artifacts: metadata, and content streamed from R2 with its type and length (never buffered whole). */

const TAG = "Artifacts";

const getArtifactRoute = createRoute({
  method: "get",
  path: "/api/v1/artifacts/{id}",
  operationId: "getArtifact",
  tags: [TAG],
  summary: "Read an artifact's metadata",
  middleware: [requireScope("tasks:read")] as const,
  request: { params: ArtifactIdParam },
  responses: {
    200: jsonResponse("The artifact.", ArtifactSchema),
    ...API_PROBLEMS,
    // VALIDATION_FAILED: an id past the param's 64 characters.
    ...problemResponses("NOT_FOUND", "VALIDATION_FAILED"),
  },
});

/** Any media type: the content is sent as the artifact's own `mime_type`. */
const CONTENT = {
  "*/*": {
    schema: z.string().openapi({ format: "binary", description: "The bytes, as the artifact's `mime_type`." }),
  },
};

/**
 * No length caps: a Range past one was a 422 where RFC 9110 answers whole (many ranges are served whole), and an
 * If-None-Match listing a cache's several versions a 422 where it is evaluated. The platform bounds request headers,
 * and the parsers (src/lib/byte-range.ts) are linear.
 */
const ContentConditions = z.object({
  range: z.string().optional().openapi({ example: "bytes=1048576-" }),
  "if-range": z.string().optional(),
  "if-none-match": z.string().optional(),
});

/** The headers the content route sets itself (the shared ones are added by src/docs/shared-headers.ts). */
const string = { type: "string" } as const;
const ETAG: HeaderDoc = {
  description: "The artifact's version: its SHA-256 in hex, quoted. Send it back as `If-None-Match` or `If-Range`.",
  required: true,
  schema: string,
};
const CACHE_CONTROL: HeaderDoc = {
  description: "`private, max-age=0`: a client may keep the content but must revalidate it (`If-None-Match`).",
  required: true,
  schema: string,
};
const ACCEPT_RANGES: HeaderDoc = {
  description: "`bytes`: a part may be asked for with `Range`.",
  required: true,
  schema: string,
};
const CONTENT_DISPOSITION: HeaderDoc = {
  description:
    "`inline; filename=\"<the last segment of the artifact's path>\"`; a name that is not ASCII is also given whole as RFC 6266's `filename*=UTF-8''<percent-encoded>`, `filename` then being its ASCII fallback (`_` for each other character).",
  required: true,
  schema: string,
};
const CONTENT_PROBLEMS = problemResponses(
  "UNAUTHENTICATED",
  "FORBIDDEN",
  "NOT_FOUND",
  // An id past the param's 64 characters.
  "VALIDATION_FAILED",
  "RANGE_NOT_SATISFIABLE",
  "RATE_LIMITED",
  "DEPENDENCY_UNAVAILABLE",
);

const contentRoute = createRoute({
  method: "get",
  path: "/api/v1/artifacts/{id}/content",
  operationId: "getArtifactContent",
  tags: [TAG],
  summary: "Download an artifact's content",
  description:
    "Streamed from storage with the artifact's `Content-Type` and `Content-Length`; `ETag` is its SHA-256. " +
    "`If-None-Match` with that ETag answers 304 without a body; one `Range: bytes=…` answers 206 with that part " +
    "(`If-Range` with the ETag keeps it to this version), so an interrupted download resumes where it stopped.",
  middleware: [requireScope("tasks:read")] as const,
  request: {
    params: ArtifactIdParam,
    headers: ContentConditions,
  },
  responses: {
    200: {
      description: "The content, whole.",
      headers: {
        ETag: ETAG,
        "Cache-Control": CACHE_CONTROL,
        "Accept-Ranges": ACCEPT_RANGES,
        "Content-Disposition": CONTENT_DISPOSITION,
        "Content-Length": { description: "The artifact's size in bytes.", required: true, schema: { type: "integer" } },
      },
      content: CONTENT,
    },
    206: {
      description: "The requested part.",
      headers: {
        ETag: ETAG,
        "Cache-Control": CACHE_CONTROL,
        "Accept-Ranges": ACCEPT_RANGES,
        "Content-Disposition": CONTENT_DISPOSITION,
        "Content-Length": { description: "The part's size in bytes.", required: true, schema: { type: "integer" } },
        "Content-Range": {
          description: "Which part, of how many bytes: `bytes <first>-<last>/<size>`.",
          required: true,
          schema: string,
        },
      },
      content: CONTENT,
    },
    304: {
      description: "The client's copy (`If-None-Match`) is current; no body.",
      headers: { ETag: ETAG, "Cache-Control": CACHE_CONTROL, "Accept-Ranges": ACCEPT_RANGES },
    },
    ...CONTENT_PROBLEMS,
    416: {
      ...CONTENT_PROBLEMS[416],
      headers: {
        "Content-Range": { description: "The artifact's size: `bytes */<size>`.", required: true, schema: string },
      },
    },
  },
});

/**
 * `inline; filename="…"` in ASCII, and for a name that is not ASCII RFC 6266's `filename*` with the name in
 * UTF-8. A name such as `日本語.md` went out as raw UTF-8 bytes in the header, which clients read as Latin-1.
 */
function contentDisposition(name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]/gu, "_").replace(/["\\]/g, "");
  if (ascii === name) return `inline; filename="${ascii}"`;
  // encodeURIComponent leaves ' ( ) * as they are; RFC 8187's value-chars do not include them.
  const encoded = encodeURIComponent(name).replace(
    /['()*]/g,
    (char) => `%${char.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return `inline; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}

export function registerArtifactRoutes(app: OpenAPIHono<HonoEnv>): void {
  app.openapi(getArtifactRoute, async (c) => {
    const row = await findOwnedOr404(c, artifacts, c.req.valid("param").id, "artifact");
    return c.json(toArtifactView(row), 200);
  });

  app.openapi(contentRoute, async (c) => {
    const id = c.req.valid("param").id;
    const conditions = c.req.valid("header");
    const row = await findOwnedOr404(c, artifacts, id, "artifact");
    // A run's end may move the row to the new version between reading it and the object, and delete the old one
    // (src/tasks/artifacts.ts, r2KeyOf): read again, the row names the version that is there.
    const answered =
      (await contentResponse(c, row, conditions)) ??
      (await contentResponse(c, await findOwnedOr404(c, artifacts, id, "artifact"), conditions));
    if (!answered) throw new ApiError("DEPENDENCY_UNAVAILABLE", `The content of ${row.id} is not available right now.`);
    return answered;
  });

  registerDebugArtifactRoute(app);
}

/** The content as the row describes it; null when storage no longer holds that version. */
async function contentResponse(
  c: Context<HonoEnv>,
  row: ArtifactRow,
  conditions: z.infer<typeof ContentConditions>,
): Promise<Response | null> {
  const etag = `"${row.sha256}"`;
  const name = row.path.slice(row.path.lastIndexOf("/") + 1);
  const headers = {
    ETag: etag,
    "Cache-Control": "private, max-age=0",
    "Accept-Ranges": "bytes",
  };
  // The row knows the version: a client that has it is answered without reading storage.
  if (noneMatchHits(conditions["if-none-match"], etag)) return c.body(null, 304, headers);
  const range = ifRangeHolds(conditions["if-range"], etag)
    ? parseByteRange(conditions.range, row.sizeBytes)
    : ({ kind: "full" } as const);
  if (range.kind === "unsatisfiable") {
    throw new ApiError("RANGE_NOT_SATISFIABLE", `${row.id} has ${row.sizeBytes} bytes.`, {
      headers: { "Content-Range": `bytes */${row.sizeBytes}` },
    });
  }
  const object = await c
    .get("config")
    .ARTIFACTS.get(
      row.r2Key,
      range.kind === "partial" ? { range: { offset: range.offset, length: range.length } } : {},
    );
  if (!object) return null;
  const content = {
    ...headers,
    // A type written before the write tool checked it may hold what a header cannot: a 500 on every download.
    "Content-Type": /^[\x20-\x7e]+$/.test(row.mimeType) ? row.mimeType : "application/octet-stream",
    "Content-Disposition": contentDisposition(name),
  };
  if (range.kind === "partial") {
    const lastByte = range.offset + range.length - 1;
    return c.body(object.body, 206, {
      ...content,
      "Content-Length": String(range.length),
      "Content-Range": `bytes ${range.offset}-${lastByte}/${row.sizeBytes}`,
    });
  }
  return c.body(object.body, 200, { ...content, "Content-Length": String(object.size) });
}

/**
 * Tests only (ENABLE_DEBUG_ROUTES): writes a generated artifact of any size
 * straight from a stream, so a large file can round-trip through R2 and the
 * content route without a model writing it. With `discard_uploads` the parts
 * go nowhere (nothing is stored or recorded): the local R2 simulator keeps
 * uploaded parts in memory, so that is how a test measures the write path's
 * own memory (chunking and hashing). Not in the OpenAPI document.
 */
function registerDebugArtifactRoute(app: OpenAPIHono<HonoEnv>): void {
  app.post("/__debug/tasks/:id/artifacts", async (c) => {
    const config = c.get("config");
    if (!config.ENABLE_DEBUG_ROUTES) throw new ApiError("NOT_FOUND", `No route matches ${c.req.method} ${c.req.path}.`);
    const body = z
      .object({
        workspace_id: z.string(),
        path: z.string(),
        size_bytes: z
          .number()
          .int()
          .min(1)
          .max(1024 ** 3),
        discard_uploads: z.boolean().default(false),
      })
      .parse(await c.req.json());
    const tenant = new TenantDb(createDb(config.DB), body.workspace_id);
    const task = await tenant.findById(tasks, c.req.param("id"));
    if (!task) throw new ApiError("NOT_FOUND", "No such task.");
    try {
      const row = await putArtifactStream({
        bucket: body.discard_uploads ? discardingBucket() : config.ARTIFACTS,
        workspaceId: task.workspaceId,
        taskId: task.id,
        path: body.path,
        body: patternStream(body.size_bytes),
        sizeBytes: body.size_bytes,
        mimeType: "application/octet-stream",
      });
      if (body.discard_uploads) return c.json({ size_bytes: row.sizeBytes, sha256: row.sha256, stored: false }, 200);
      await config.DB.batch(artifactUpserts(config.DB, [row]));
      return c.json(toArtifactView(row), 201);
    } catch (error) {
      if (error instanceof ArtifactError)
        throw new ApiError(error.status === 413 ? "PAYLOAD_TOO_LARGE" : "BAD_REQUEST", error.message);
      throw error;
    }
  });
}

/** A bucket whose multipart uploads accept every part and keep none (the debug route's `discard_uploads`). */
function discardingBucket(): R2Bucket {
  const upload = {
    uploadPart: async (partNumber: number) => ({ partNumber, etag: `discarded-${partNumber}` }),
    complete: async () => ({}) as R2Object,
    abort: async () => {},
  };
  return { createMultipartUpload: async () => upload } as unknown as R2Bucket;
}

/** `size` bytes of a repeating pattern (byte i = i mod 251), 64 KiB at a time on demand. */
export function patternStream(size: number): ReadableStream<Uint8Array> {
  const CHUNK_BYTES = 64 * 1024;
  const PERIOD = 251;
  // Every chunk is a window on one pattern buffer, so generating the file allocates nothing per chunk.
  const pattern = new Uint8Array(CHUNK_BYTES + PERIOD);
  for (let index = 0; index < pattern.length; index++) pattern[index] = index % PERIOD;
  let offset = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (offset >= size) {
        controller.close();
        return;
      }
      const length = Math.min(CHUNK_BYTES, size - offset);
      const start = offset % PERIOD;
      controller.enqueue(pattern.subarray(start, start + length));
      offset += length;
    },
  });
}
