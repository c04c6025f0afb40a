import type { Logger } from "../lib/logger.ts";
import { ApiError, type FieldError } from "../lib/problem.ts";
import { ownInputItems, type responseObject, responsesToChatRequest } from "./responses-compat.ts";
import type {
  ResponseCreateRequest,
  ResponsesInputItem,
  ResponsesItemReference,
  ResponsesRequestItem,
} from "./responses-schemas.ts";
import type { ChatRequest } from "./types.ts";

/**
 * Stored responses of POST /api/v1/llm/responses, in D1 (tables llm_responses and llm_response_items, see
 * src/db/schema.ts), per workspace: what GET, DELETE and input_items of /api/v1/llm/responses/{id} read, and
 * what `previous_response_id` and `item_reference` items continue. A row keeps its response's own items only, so
 * a conversation is rebuilt by walking `previous_response_id` back, in one recursive query, bounded.
 */

export type StoredResponseObject = ReturnType<typeof responseObject>;

const DAY_MS = 24 * 60 * 60 * 1000;
/** How long a response is kept: OpenAI's default for stored responses. */
export const RESPONSE_RETENTION_DAYS = 30;
/** The most responses a conversation walks back through `previous_response_id`; one longer is refused. */
export const MAX_CONVERSATION_RESPONSES = 100;
/**
 * The most characters of stored items one conversation rebuilds: more than any model's context holds, so a
 * conversation past it could only fail at the provider, and reading it would take the isolate's memory first.
 */
export const MAX_CONVERSATION_CHARS = 10_000_000;
/** D1 refuses a row over 2 MB: a response larger than this is answered, not stored (`store: false`). */
const MAX_STORED_ROW_BYTES = 1_900_000;
/** Expired responses deleted per statement, and statements per purge run (every 5 minutes). */
const PURGE_BATCH_ROWS = 200;
const PURGE_MAX_BATCHES_PER_RUN = 20;

function previousResponseNotFound(id: string, detail = `Previous response with id '${id}' not found.`): ApiError {
  // As OpenAI answers it: a 400 whose code and param its SDKs show (`err.code`, `err.param`).
  return new ApiError("BAD_REQUEST", detail, {
    extensions: { reason: "previous_response_not_found", param: "previous_response_id" },
  });
}

/**
 * Deletes the item index rows of `responses` (a condition on `r`): each of their items' ids, looked up by the key
 * (CROSS JOIN keeps that order; a row-value IN scanned the table). Other responses' rows for the same ids stay.
 */
function deleteItemsOf(db: D1Database, responses: string): D1PreparedStatement {
  const rowsOf = (items: string) =>
    `SELECT i.rowid FROM llm_responses r CROSS JOIN ${items} j CROSS JOIN llm_response_items i
       ON i.workspace_id = r.workspace_id AND i.item_id = json_extract(j.value, '$.id') AND i.response_id = r.id
     WHERE ${responses}`;
  return db.prepare(
    `DELETE FROM llm_response_items WHERE rowid IN (${rowsOf("json_each(r.input_items)")} UNION ALL ${rowsOf("json_each(r.response, '$.output')")})`,
  );
}

interface ChainRow {
  id: string;
  previous_response_id: string | null;
  expires_at: string;
  input_items: string;
  output: string;
  depth: number;
  chars: number;
}

export class ResponsesStore {
  private readonly db: D1Database;
  private readonly workspaceId: string;
  private readonly nowMs: () => number;

  constructor(db: D1Database, workspaceId: string, nowMs: () => number = Date.now) {
    this.db = db;
    this.workspaceId = workspaceId;
    this.nowMs = nowMs;
  }

  private nowIso(): string {
    return new Date(this.nowMs()).toISOString();
  }

  /**
   * The conversation that `previousResponseId` ends: each response's input then output, oldest first. Refused
   * (400 `previous_response_not_found`) when it, or a response before it, is not stored for this workspace
   * (never stored, `store: false`, deleted, expired, another workspace's), or the conversation is too long.
   */
  async conversation(previousResponseId: string): Promise<ResponsesInputItem[]> {
    const { results } = await this.db
      .prepare(
        `WITH RECURSIVE chain(id, previous_response_id, expires_at, input_items, output, depth, chars) AS (
          SELECT id, previous_response_id, expires_at, input_items, json_extract(response, '$.output'), 1,
                 length(input_items) + length(json_extract(response, '$.output'))
          FROM llm_responses WHERE workspace_id = ?1 AND id = ?2
          UNION ALL
          SELECT r.id, r.previous_response_id, r.expires_at, r.input_items, json_extract(r.response, '$.output'),
                 chain.depth + 1, chain.chars + length(r.input_items) + length(json_extract(r.response, '$.output'))
          FROM chain JOIN llm_responses r ON r.workspace_id = ?1 AND r.id = chain.previous_response_id
          WHERE chain.depth <= ?3 AND chain.chars <= ?4
        )
        SELECT * FROM chain ORDER BY depth DESC`,
      )
      .bind(this.workspaceId, previousResponseId, MAX_CONVERSATION_RESPONSES, MAX_CONVERSATION_CHARS)
      .all<ChainRow>();
    const now = this.nowIso();
    const newest = results.at(-1);
    if (!newest || newest.expires_at <= now) throw previousResponseNotFound(previousResponseId);
    const oldest = results[0];
    if (oldest.depth > MAX_CONVERSATION_RESPONSES || oldest.chars > MAX_CONVERSATION_CHARS) {
      throw new ApiError(
        "BAD_REQUEST",
        `The conversation ending in response '${previousResponseId}' is too long to continue here (more than ${MAX_CONVERSATION_RESPONSES} responses or ${MAX_CONVERSATION_CHARS} characters): start a new one, with a summary of it as input.`,
        { extensions: { reason: "conversation_too_long", param: "previous_response_id" } },
      );
    }
    // An earlier response of the conversation is gone: continuing without it would send the model half of it.
    const gone = oldest.previous_response_id ?? results.find((row) => row.expires_at <= now)?.id;
    if (gone !== undefined) {
      throw previousResponseNotFound(
        previousResponseId,
        `Previous response with id '${previousResponseId}' cannot be continued: an earlier response of its conversation, '${gone}', is no longer stored (deleted, or past its ${RESPONSE_RETENTION_DAYS} days).`,
      );
    }
    return results.flatMap((row) => [
      ...(JSON.parse(row.input_items) as ResponsesInputItem[]),
      ...(JSON.parse(row.output) as ResponsesInputItem[]),
    ]);
  }

  /** The input with each `item_reference` replaced by the stored item; an id not stored here is a 400. */
  async resolveReferences(input: readonly ResponsesRequestItem[]): Promise<ResponsesInputItem[]> {
    const isReference = (item: ResponsesRequestItem): item is ResponsesItemReference => item.type === "item_reference";
    const ids = [...new Set(input.filter(isReference).map((item) => item.id))];
    if (ids.length === 0) return input as ResponsesInputItem[];
    const { results } = await this.db
      .prepare(
        `SELECT i.item_id,
                CASE i.source WHEN 'output' THEN json_extract(r.response, '$.output[' || i.position || ']')
                              ELSE json_extract(r.input_items, '$[' || i.position || ']') END AS item
         FROM llm_response_items i JOIN llm_responses r ON r.workspace_id = i.workspace_id AND r.id = i.response_id
         WHERE i.workspace_id = ?1 AND i.item_id IN (SELECT value FROM json_each(?2)) AND r.expires_at > ?3
         ORDER BY r.created_at, r.id`,
      )
      .bind(this.workspaceId, JSON.stringify(ids), this.nowIso())
      .all<{ item_id: string; item: string | null }>();
    // An id several stored responses carry (a client sent its items again) resolves to the newest one's: rows
    // come oldest first, and a later one replaces an earlier one's in the map.
    const found = new Map(
      results.flatMap((row) => (row.item ? [[row.item_id, JSON.parse(row.item) as ResponsesInputItem]] : [])),
    );
    return input.map((item) => {
      if (!isReference(item)) return item;
      const stored = found.get(item.id);
      if (!stored) {
        // OpenAI's words and param, so its SDKs report it as OpenAI's.
        throw new ApiError("BAD_REQUEST", `Item with id '${item.id}' not found.`, {
          extensions: { reason: "item_not_found", param: "input" },
        });
      }
      return stored;
    });
  }

  /**
   * Stores an answered response with its own input items, and registers each item's id; false when it is too
   * large for a row (D1's limit), which the caller tells as `store: false`.
   */
  async save(response: StoredResponseObject, inputItems: readonly ResponsesInputItem[]): Promise<boolean> {
    const responseJson = JSON.stringify(response);
    const inputJson = JSON.stringify(inputItems);
    const encoder = new TextEncoder();
    if (encoder.encode(responseJson).length + encoder.encode(inputJson).length > MAX_STORED_ROW_BYTES) return false;
    const nowMs = this.nowMs();
    const own = "r.workspace_id = ?1 AND r.id = ?2";
    await this.db.batch([
      this.db
        .prepare(
          `INSERT INTO llm_responses (workspace_id, id, previous_response_id, response, input_items, created_at, expires_at)
           VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)`,
        )
        .bind(
          this.workspaceId,
          response.id,
          response.previous_response_id,
          responseJson,
          inputJson,
          new Date(nowMs).toISOString(),
          new Date(nowMs + RESPONSE_RETENTION_DAYS * DAY_MS).toISOString(),
        ),
      // Read back from the row just written rather than sent again: each item's id and place.
      this.db
        .prepare(
          `INSERT OR IGNORE INTO llm_response_items (workspace_id, item_id, response_id, source, position)
           SELECT r.workspace_id, json_extract(j.value, '$.id'), r.id, 'input', j.key
             FROM llm_responses r, json_each(r.input_items) j WHERE ${own}
           UNION ALL
           SELECT r.workspace_id, json_extract(j.value, '$.id'), r.id, 'output', j.key
             FROM llm_responses r, json_each(r.response, '$.output') j WHERE ${own}`,
        )
        .bind(this.workspaceId, response.id),
    ]);
    return true;
  }

  /** The stored response object, as it was answered; null when not stored here (or expired). */
  async get(id: string): Promise<StoredResponseObject | null> {
    const row = await this.db
      .prepare("SELECT response FROM llm_responses WHERE workspace_id = ?1 AND id = ?2 AND expires_at > ?3")
      .bind(this.workspaceId, id, this.nowIso())
      .first<{ response: string }>();
    return row ? (JSON.parse(row.response) as StoredResponseObject) : null;
  }

  /** The response's own input items, in order; null when not stored here (or expired). */
  async inputItems(id: string): Promise<ResponsesInputItem[] | null> {
    const row = await this.db
      .prepare("SELECT input_items FROM llm_responses WHERE workspace_id = ?1 AND id = ?2 AND expires_at > ?3")
      .bind(this.workspaceId, id, this.nowIso())
      .first<{ input_items: string }>();
    return row ? (JSON.parse(row.input_items) as ResponsesInputItem[]) : null;
  }

  /** Deletes the response and its items' ids; false when there was none to delete. */
  async delete(id: string): Promise<boolean> {
    const own = "r.workspace_id = ?1 AND r.id = ?2 AND r.expires_at > ?3";
    const [, deleted] = await this.db.batch<{ id: string }>([
      deleteItemsOf(this.db, own).bind(this.workspaceId, id, this.nowIso()),
      this.db
        .prepare("DELETE FROM llm_responses WHERE workspace_id = ?1 AND id = ?2 AND expires_at > ?3 RETURNING id")
        .bind(this.workspaceId, id, this.nowIso()),
    ]);
    return deleted.results.length > 0;
  }
}

/**
 * A request's turn: its conversation (a previous response's, then its own input with references resolved) as the
 * chat request the router sends, and `keep`, which stores the answered response unless `store: false`.
 */
export interface ResponsesTurn {
  request: ChatRequest;
  /** The response as answered: stored first (unless `store: false`), its `store` saying whether it was. */
  keep(response: StoredResponseObject): Promise<StoredResponseObject>;
}

/**
 * Refuses (422, naming `input.N.call_id`) a function_call_output of the request's own input (`own`, in the order of
 * `input`) that no function_call before it in the conversation made: neither an earlier item of the input nor one of
 * the stored conversation (`earlier`). Sent on, every provider refuses it (OpenAI: 400 "No tool call found for function
 * call output"), and the router may try the chain's other providers too; refused here, nothing is called or charged.
 */
function refuseUnmatchedCallOutputs(earlier: readonly ResponsesInputItem[], own: readonly ResponsesInputItem[]): void {
  const calls = new Set<string>();
  for (const item of earlier) if (item.type === "function_call") calls.add(item.call_id);
  const errors: FieldError[] = [];
  own.forEach((item, index) => {
    if (item.type === "function_call") calls.add(item.call_id);
    else if (item.type === "function_call_output" && !calls.has(item.call_id)) {
      errors.push({
        path: `input.${index}.call_id`,
        message: `no function_call with call_id '${item.call_id}' comes before it in the conversation (the input, or the stored conversation of previous_response_id): a function_call_output answers a call the model made`,
      });
    }
  });
  if (errors.length > 0) throw new ApiError("VALIDATION_FAILED", "The request body is invalid.", { errors });
}

export async function responsesTurn(
  store: ResponsesStore,
  body: ResponseCreateRequest,
  callId: string,
  logger: Pick<Logger, "warn" | "error">,
): Promise<ResponsesTurn> {
  // The request's refinement let through only the items it knows (ResponsesRequestItem).
  const input = body.input as string | ResponsesRequestItem[];
  const sent = typeof input === "string" ? input : await store.resolveReferences(input);
  const own = ownInputItems(sent, callId);
  const earlier = body.previous_response_id ? await store.conversation(body.previous_response_id) : [];
  refuseUnmatchedCallOutputs(earlier, own);
  return {
    request: responsesToChatRequest(body, [...earlier, ...own]),
    async keep(response) {
      if (body.store === false) return { ...response, store: false };
      try {
        if (await store.save({ ...response, store: true }, own)) return { ...response, store: true };
        logger.warn("response not stored: larger than a stored row may be", { response_id: response.id });
      } catch (error) {
        // The call was answered and charged: the answer goes out, saying it was not stored.
        logger.error("response not stored", { response_id: response.id, error });
      }
      return { ...response, store: false };
    },
  };
}

/** The scheduled purge: deletes expired responses and their items' ids, in bounded batches. */
export async function purgeExpiredResponses(
  db: D1Database,
  logger: Pick<Logger, "info">,
  nowMs = Date.now(),
): Promise<number> {
  const expired = "r.rowid IN (SELECT rowid FROM llm_responses WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)";
  const nowIso = new Date(nowMs).toISOString();
  let purged = 0;
  for (let batch = 0; batch < PURGE_MAX_BATCHES_PER_RUN; batch++) {
    // One transaction: the same rows (the oldest expired, by the index) lose their items, then themselves.
    const [, deleted] = await db.batch([
      deleteItemsOf(db, expired).bind(nowIso, PURGE_BATCH_ROWS),
      db
        .prepare(
          "DELETE FROM llm_responses WHERE rowid IN (SELECT rowid FROM llm_responses WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
        )
        .bind(nowIso, PURGE_BATCH_ROWS),
    ]);
    purged += deleted.meta.changes;
    if (deleted.meta.changes < PURGE_BATCH_ROWS) break;
  }
  if (purged > 0) logger.info("expired responses purged", { purged });
  return purged;
}

/** One page of a response's input items, as OpenAI lists them: in `order`, after the item `after`. */
export function inputItemsPage(
  items: readonly ResponsesInputItem[],
  query: { limit: number; after?: string; order: "asc" | "desc" },
) {
  const ordered = query.order === "asc" ? [...items] : [...items].reverse();
  let start = 0;
  if (query.after !== undefined) {
    const index = ordered.findIndex((item) => item.id === query.after);
    if (index === -1) {
      throw new ApiError("BAD_REQUEST", `No input item with id '${query.after}' in this response.`, {
        extensions: { reason: "item_not_found", param: "after" },
      });
    }
    start = index + 1;
  }
  const data = ordered.slice(start, start + query.limit) as (ResponsesInputItem & { id: string; type: string })[];
  return {
    object: "list" as const,
    data,
    first_id: data[0]?.id ?? null,
    last_id: data.at(-1)?.id ?? null,
    has_more: start + data.length < ordered.length,
  };
}
