import { jsonRowsSql } from "../db/json-rows.ts";
import { toHex } from "../lib/crypto.ts";
import { newId } from "../lib/ids.ts";
import { SupersededError } from "./cancellation.ts";
import { ARTIFACT_LIMITS, type ArtifactLimits } from "./config.ts";
import type { ArtifactRow } from "./views.ts";

/**
 * A task's files: content in R2 (one object per artifact, replaced in place
 * on update), metadata in D1 (path, size, MIME type, SHA-256, version). Paths
 * are relative and sanitised; limits per artifact and per task answer the
 * agent with a 413-style tool error instead of failing the run.
 */

export class ArtifactError extends Error {
  /** HTTP-style status the agent sees: 400 bad path, 404 missing, 413 too large. */
  readonly status: 400 | 404 | 413;
  constructor(status: 400 | 404 | 413, message: string) {
    super(message);
    this.name = "ArtifactError";
    this.status = status;
  }
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what is refused.
const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f]/;
/** Unicode's format characters (category Cf): zero-width spaces and joiners, bidi marks and overrides, BOMs. */
const FORMAT_CHARS = /\p{Cf}/u;

/** `src/./a.ts` → `src/a.ts`; refuses absolute paths, `..`, backslashes, control characters, empty names. */
export function sanitizePath(raw: unknown, limits: Pick<ArtifactLimits, "maxPathChars"> = ARTIFACT_LIMITS): string {
  if (typeof raw !== "string" || raw.trim() === "") throw new ArtifactError(400, "path is required");
  if (raw.length > limits.maxPathChars)
    throw new ArtifactError(400, `path is longer than ${limits.maxPathChars} characters`);
  if (CONTROL_CHARS.test(raw)) throw new ArtifactError(400, "path contains control characters");
  if (raw.includes("\\")) throw new ArtifactError(400, "path must use / as separator");
  if (raw.startsWith("/") || raw.startsWith("~") || /^[a-zA-Z]:/.test(raw)) {
    throw new ArtifactError(400, "path must be relative to the task's files");
  }
  // Invisible and direction-changing characters (zero-width spaces, bidi overrides) make a name read as another.
  if (FORMAT_CHARS.test(raw)) throw new ArtifactError(400, "path contains invisible or direction-changing characters");
  // One spelling per name: "é" composed and decomposed were two files that list and download alike.
  const parts = raw
    .normalize("NFC")
    .split("/")
    .filter((part) => part !== "" && part !== ".");
  // Full-width dots (．．) read as .. once compatibility-normalised, as some tools do.
  if (parts.some((part) => part.normalize("NFKC") === "..")) throw new ArtifactError(400, "path must not contain ..");
  if (parts.length === 0 || raw.endsWith("/")) throw new ArtifactError(400, "path must name a file");
  // "a.txt " and "a.txt." are "a.txt" once on Windows, and look it in a listing.
  if (parts.some((part) => /[. ]$/.test(part))) {
    throw new ArtifactError(400, "a path's names must not end with a dot or a space");
  }
  return parts.join("/");
}

const MIME_BY_EXTENSION: Record<string, string> = {
  ts: "text/typescript",
  tsx: "text/typescript",
  js: "text/javascript",
  mjs: "text/javascript",
  jsx: "text/javascript",
  json: "application/json",
  md: "text/markdown",
  txt: "text/plain",
  py: "text/x-python",
  rs: "text/x-rust",
  go: "text/x-go",
  java: "text/x-java",
  html: "text/html",
  css: "text/css",
  yaml: "application/yaml",
  yml: "application/yaml",
  toml: "application/toml",
  xml: "application/xml",
  sql: "application/sql",
  sh: "text/x-shellscript",
  csv: "text/csv",
  svg: "image/svg+xml",
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  gif: "image/gif",
  pdf: "application/pdf",
  zip: "application/zip",
  bin: "application/octet-stream",
};

/** From the extension; text types carry `charset=utf-8`. Unknown extensions of written text are text/plain. */
export function mimeTypeFor(path: string): string {
  const dot = path.lastIndexOf(".");
  const type = (dot > path.lastIndexOf("/") && MIME_BY_EXTENSION[path.slice(dot + 1).toLowerCase()]) || "text/plain";
  const isText =
    type.startsWith("text/") ||
    type === "application/json" ||
    type.endsWith("+xml") ||
    type.includes("yaml") ||
    type.includes("toml") ||
    type === "application/xml" ||
    type === "application/sql";
  return isText ? `${type}; charset=utf-8` : type;
}

/**
 * Where an artifact's content is stored. A run writes each file to a key of its own (`…/{artifact}/{run}`), so the
 * row goes on naming the version it describes (its size, hash, ETag) until the run's end moves it to the new one,
 * and a run taken over by another delivery of its message cannot overwrite the files of the run that replaced it.
 * Written before runs had keys of their own, and by the debug upload: `…/{artifact}`.
 */
export function r2KeyOf(workspaceId: string, taskId: string, artifactId: string, runId?: string): string {
  return `tasks/${workspaceId}/${taskId}/${artifactId}${runId ? `/${runId}` : ""}`;
}

export interface WrittenArtifact {
  row: ArtifactRow;
  created: boolean;
}

/** What the agent's file tools work on: this task's files, loaded once per run, written through to R2. */
export class TaskFiles {
  readonly #bucket: R2Bucket;
  readonly #limits: ArtifactLimits;
  readonly #workspaceId: string;
  readonly #taskId: string;
  readonly #runId: string;
  readonly #signal: AbortSignal | undefined;
  readonly #byPath = new Map<string, ArtifactRow>();
  /** Rows written this run, for the run's final D1 batch. */
  readonly #dirty = new Map<string, ArtifactRow>();
  /** By path, the key of the version the row named before this run wrote the file: stale once the run's rows land. */
  readonly #replacedKeys = new Map<string, string>();

  constructor(input: {
    bucket: R2Bucket;
    workspaceId: string;
    taskId: string;
    runId: string;
    existing: ArtifactRow[];
    limits?: ArtifactLimits;
    /** The run's: once aborted because the run was taken over (SupersededError) it writes nothing more. */
    signal?: AbortSignal;
  }) {
    this.#bucket = input.bucket;
    this.#limits = input.limits ?? ARTIFACT_LIMITS;
    this.#workspaceId = input.workspaceId;
    this.#taskId = input.taskId;
    this.#runId = input.runId;
    this.#signal = input.signal;
    for (const row of input.existing) this.#byPath.set(row.path, row);
  }

  totalBytes(): number {
    let total = 0;
    for (const row of this.#byPath.values()) total += row.sizeBytes;
    return total;
  }

  list(): { path: string; size_bytes: number; mime_type: string }[] {
    return [...this.#byPath.values()]
      .sort((a, b) => a.path.localeCompare(b.path))
      .map((row) => ({ path: row.path, size_bytes: row.sizeBytes, mime_type: row.mimeType }));
  }

  async read(rawPath: unknown, maxChars: number): Promise<{ path: string; content: string; truncated: boolean }> {
    const path = sanitizePath(rawPath, this.#limits);
    const row = this.#byPath.get(path);
    if (!row) throw new ArtifactError(404, `no file ${path}`);
    // A character takes at most 4 bytes: enough for maxChars of them, whatever they are.
    const object = await this.#bucket.get(row.r2Key, { range: { offset: 0, length: maxChars * 4 } });
    if (!object) throw new ArtifactError(404, `no content for ${path}`);
    const bytes = await object.arrayBuffer();
    const text = new TextDecoder().decode(bytes);
    // Cut by characters, not in the middle of a surrogate pair (a lone half the provider may refuse).
    const highSurrogateLast = (text.charCodeAt(maxChars - 1) & 0xfc00) === 0xd800;
    const end = text.length > maxChars && highSurrogateLast ? maxChars - 1 : maxChars;
    // Bytes against bytes: the file's size is in bytes and its text's length in UTF-16 units, so comparing those
    // told the model that every whole file with a character outside ASCII was truncated.
    return { path, content: text.slice(0, end), truncated: bytes.byteLength < row.sizeBytes || text.length > end };
  }

  async write(rawPath: unknown, content: unknown, mimeType?: unknown): Promise<WrittenArtifact> {
    const path = sanitizePath(rawPath, this.#limits);
    if (typeof content !== "string") throw new ArtifactError(400, "content must be a string");
    const bytes = new TextEncoder().encode(content);
    const previous = this.#byPath.get(path);
    if (bytes.byteLength > this.#limits.maxArtifactBytes) {
      throw new ArtifactError(
        413,
        `${path} is ${bytes.byteLength} bytes; one file may hold ${this.#limits.maxArtifactBytes}`,
      );
    }
    const after = this.totalBytes() - (previous?.sizeBytes ?? 0) + bytes.byteLength;
    if (after > this.#limits.maxTaskBytes) {
      throw new ArtifactError(
        413,
        `the task's files would total ${after} bytes; the limit is ${this.#limits.maxTaskBytes}`,
      );
    }
    if (!previous && this.#byPath.size >= this.#limits.maxFilesPerTask) {
      throw new ArtifactError(413, `a task may hold ${this.#limits.maxFilesPerTask} files`);
    }
    const digest = await crypto.subtle.digest("SHA-256", bytes);
    const sha256 = toHex(digest);
    const id = previous?.id ?? newId("artifact");
    const writtenBefore = this.#dirty.has(path);
    const r2Key = writtenBefore ? previous!.r2Key : r2KeyOf(this.#workspaceId, this.#taskId, id, this.#runId);
    // Parameters in printable ASCII only: the type is the download's Content-Type, which a control character made
    // a 500 and text outside ASCII raw UTF-8 bytes.
    const type =
      typeof mimeType === "string" && /^[\w.+-]+\/[\w.+-]+(;[\x20-\x7e]*)?$/.test(mimeType)
        ? mimeType
        : mimeTypeFor(path);
    // A run taken over by another delivery writes nothing more: its files are not kept. One cancelled or timed out
    // still writes what it was writing: its end is recorded with its files, such as the REPORT.md of an answer that
    // came in as it was stopped (the task then reads completed).
    if (this.#signal?.aborted && this.#signal.reason instanceof SupersededError) throw this.#signal.reason;
    await this.#bucket.put(r2Key, bytes, {
      sha256: digest,
      httpMetadata: { contentType: type },
      customMetadata: { task_id: this.#taskId, path, sha256 },
    });
    const nowIso = new Date().toISOString();
    const row: ArtifactRow = {
      id,
      workspaceId: this.#workspaceId,
      taskId: this.#taskId,
      runId: this.#runId,
      path,
      r2Key,
      sizeBytes: bytes.byteLength,
      mimeType: type,
      sha256,
      version: (previous?.version ?? 0) + 1,
      createdAt: previous?.createdAt ?? nowIso,
      updatedAt: nowIso,
    };
    if (previous && !writtenBefore) this.#replacedKeys.set(path, previous.r2Key);
    this.#byPath.set(path, row);
    this.#dirty.set(path, row);
    return { row, created: !previous };
  }

  /** Rows written this run. */
  written(): ArtifactRow[] {
    return [...this.#dirty.values()];
  }

  /**
   * The objects to delete once the run's final batch has recorded `recordedKeys` (what its artifact upsert returned):
   * the versions its rows replaced, or, for a run whose rows were not recorded (taken over), what it wrote itself.
   */
  staleKeys(recordedKeys: ReadonlySet<string>): string[] {
    const stale: string[] = [];
    for (const [path, row] of this.#dirty) {
      if (!recordedKeys.has(row.r2Key)) stale.push(row.r2Key);
      else {
        const replaced = this.#replacedKeys.get(path);
        if (replaced !== undefined && replaced !== row.r2Key) stale.push(replaced);
      }
    }
    return stale;
  }

  ids(): string[] {
    return [...this.#byPath.values()].map((row) => row.id);
  }
}

const ARTIFACT_COLUMNS = [
  "id",
  "workspace_id",
  "task_id",
  "run_id",
  "path",
  "r2_key",
  "size_bytes",
  "mime_type",
  "sha256",
  "version",
  "created_at",
  "updated_at",
];

/**
 * A run taken over by another delivery of its message (the task's attempts moved past the run's) records no files:
 * it must not replace the rows of the run that replaced it. A run closed otherwise before its end is recorded (a
 * cancelled task's run, closed by a delivery of its message that came again meanwhile): its files are the task's.
 * (A debug upload has no run.) Returns the keys recorded.
 */
const UPSERT_ARTIFACTS_SQL = `INSERT INTO artifacts (${ARTIFACT_COLUMNS.join(", ")})
  SELECT ${ARTIFACT_COLUMNS.map((name) => `a.${name}`).join(", ")} FROM ${jsonRowsSql(ARTIFACT_COLUMNS)} AS a
  WHERE NOT EXISTS (SELECT 1 FROM task_runs JOIN tasks ON tasks.id = task_runs.task_id
                    WHERE task_runs.id = a.run_id AND tasks.attempts <> task_runs.attempt)
  ON CONFLICT (task_id, path) DO UPDATE SET run_id = excluded.run_id, r2_key = excluded.r2_key,
     size_bytes = excluded.size_bytes, mime_type = excluded.mime_type, sha256 = excluded.sha256,
     version = max(artifacts.version + 1, excluded.version), updated_at = excluded.updated_at
  RETURNING r2_key`;

/**
 * Upserts for the runs' final batch, one statement however many rows
 * (src/db/json-rows.ts): a path keeps its artifact id; version and content move on. The first statement of the
 * runs' final batch: the consumer reads the keys it recorded from its result.
 */
export function artifactUpserts(d1: D1Database, rows: readonly ArtifactRow[]): D1PreparedStatement[] {
  if (rows.length === 0) return [];
  const values = rows.map((row) => [
    row.id,
    row.workspaceId,
    row.taskId,
    row.runId,
    row.path,
    row.r2Key,
    row.sizeBytes,
    row.mimeType,
    row.sha256,
    row.version,
    row.createdAt,
    row.updatedAt,
  ]);
  return [d1.prepare(UPSERT_ARTIFACTS_SQL).bind(JSON.stringify(values))];
}

/** Multipart part size: R2's minimum for all but the last part, and what a large upload holds in memory at once. */
const PART_BYTES = 5 * 1024 * 1024;

type DigestStreamLike = WritableStream<ArrayBufferView> & { readonly digest: Promise<ArrayBuffer> };
const DigestStreamClass = (crypto as unknown as { DigestStream: new (algorithm: string) => DigestStreamLike })
  .DigestStream;

/**
 * Streams a body into R2 as one of the task's artifacts, hashing it on the
 * way: a multipart upload of PART_BYTES parts, so at most one part is held
 * whatever the file's size (a single streamed put may be buffered whole by
 * the storage layer).
 */
export async function putArtifactStream(input: {
  bucket: R2Bucket;
  workspaceId: string;
  taskId: string;
  path: string;
  body: ReadableStream<Uint8Array>;
  sizeBytes: number;
  mimeType?: string;
  limits?: ArtifactLimits;
}): Promise<ArtifactRow> {
  const limits = input.limits ?? ARTIFACT_LIMITS;
  const path = sanitizePath(input.path, limits);
  if (input.sizeBytes > limits.maxArtifactBytes) {
    throw new ArtifactError(413, `${path} is ${input.sizeBytes} bytes; one file may hold ${limits.maxArtifactBytes}`);
  }
  const id = newId("artifact");
  const r2Key = r2KeyOf(input.workspaceId, input.taskId, id);
  const type = input.mimeType ?? mimeTypeFor(path);
  const digest = new DigestStreamClass("SHA-256");
  const hashWriter = digest.getWriter();
  const upload = await input.bucket.createMultipartUpload(r2Key, { httpMetadata: { contentType: type } });
  const parts: R2UploadedPart[] = [];
  // One buffer for every part: each upload is awaited before the buffer is filled again.
  const part = new Uint8Array(PART_BYTES);
  let filled = 0;
  let total = 0;
  const flush = async () => {
    if (filled === 0) return;
    parts.push(await upload.uploadPart(parts.length + 1, part.subarray(0, filled)));
    filled = 0;
  };
  try {
    const reader = input.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > input.sizeBytes)
        throw new ArtifactError(400, `${path} is longer than the ${input.sizeBytes} bytes announced`);
      await hashWriter.write(value);
      let offset = 0;
      while (offset < value.byteLength) {
        const take = Math.min(PART_BYTES - filled, value.byteLength - offset);
        part.set(value.subarray(offset, offset + take), filled);
        filled += take;
        offset += take;
        if (filled === PART_BYTES) await flush();
      }
    }
    if (total !== input.sizeBytes)
      throw new ArtifactError(400, `${path} has ${total} bytes, not the ${input.sizeBytes} announced`);
    await flush();
    await hashWriter.close();
    await upload.complete(parts);
  } catch (error) {
    await upload.abort().catch(() => undefined);
    throw error;
  }
  const nowIso = new Date().toISOString();
  return {
    id,
    workspaceId: input.workspaceId,
    taskId: input.taskId,
    runId: null,
    path,
    r2Key,
    sizeBytes: total,
    mimeType: type,
    sha256: toHex(await digest.digest),
    version: 1,
    createdAt: nowIso,
    updatedAt: nowIso,
  };
}
