import { API_KEY_PREFIX, DISPLAY_PREFIX_CHARS } from "./api-key-format.ts";

/** Keeps secrets out of logs and error reports. */

const SECRET_KEY = /authorization|api[-_]?key|secret|token|password|passwd|cookie|dsn|signature|credential/i;
const SECRET_IN_TEXT = [
  /\bBearer\s+[A-Za-z0-9._~+/=-]+/gi,
  // Longer than a key's display prefix, which is meant to be shown (the key list, an audit entry's actor).
  new RegExp(`\\b${API_KEY_PREFIX}[A-Za-z0-9_-]{${DISPLAY_PREFIX_CHARS - API_KEY_PREFIX.length + 1},}`, "g"),
  // JWTs: three base64url segments, the first one a JSON header.
  /\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g,
  // Provider keys: OpenAI's (`sk-…`, `sk-proj-…`) and Anthropic's (`sk-ant-…`), as an answer refusing one may quote it.
  /\bsk-[A-Za-z0-9_-]{16,}/g,
];
export const REDACTED = "[REDACTED]";

/** Words that mark a query parameter as a secret (`ticket`, `api_key`, `access_token`, `X-Amz-Signature`…). */
const SECRET_PARAM_WORDS = "ticket|token|key|secret|password|signature|credential|auth";
export const SECRET_PARAM_NAME = new RegExp(SECRET_PARAM_WORDS, "i");
/** Names that are no secret's, for filters that take what they keep (Sentry's `allowedSearchParams`). */
export const NOT_SECRET_PARAM_NAME = new RegExp(`^(?!.*(?:${SECRET_PARAM_WORDS})).*$`, "i");

/** A URL, or a query string (`?a=1`), with the values of secret-named parameters redacted; anything else as it was. */
export function redactUrlQuery(value: string): string {
  const queryStart = value.indexOf("?");
  if (queryStart === -1) return value;
  const params = new URLSearchParams(value.slice(queryStart + 1));
  let changed = false;
  for (const name of new Set(params.keys())) {
    if (!SECRET_PARAM_NAME.test(name)) continue;
    params.set(name, REDACTED);
    changed = true;
  }
  return changed ? `${value.slice(0, queryStart)}?${params.toString()}` : value;
}
const MAX_DEPTH = 6;

/**
 * A count of LLM tokens (`daily_tokens`, `prompt_tokens`: a budget or usage figure), which the key test's `token`
 * would hide, and with it what a `budget.update` changed. Only a number or null: a string or a list under such a
 * key (`refresh_tokens`) is still redacted.
 */
function isTokenCount(key: string, value: unknown): boolean {
  return /tokens$/i.test(key) && (value === null || typeof value === "number");
}

export function redactText(text: string): string {
  let result = text;
  for (const pattern of SECRET_IN_TEXT) result = result.replace(pattern, REDACTED);
  return result;
}

export function redact(value: unknown, depth = 0): unknown {
  if (typeof value === "string") return redactText(value);
  if (value === null || typeof value !== "object") return value;
  if (depth >= MAX_DEPTH) return "[TRUNCATED]";
  if (value instanceof Error) return serializeError(value);
  if (Array.isArray(value)) return value.map((item) => redact(item, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [key, inner] of Object.entries(value)) {
    out[key] = SECRET_KEY.test(key) && !isTokenCount(key, inner) ? REDACTED : redact(inner, depth + 1);
  }
  return out;
}

export function serializeError(error: unknown): Record<string, unknown> {
  if (error instanceof Error) {
    return {
      name: error.name,
      message: redactText(error.message),
      ...(error.stack ? { stack: redactText(error.stack) } : {}),
    };
  }
  return { message: redactText(String(error)) };
}
